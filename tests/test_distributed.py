"""Training with torchrun + DDP on 2 CPU processes (gloo) equals one process; a rank's
failure ends every rank with its one line; the collectives run on nccl's device."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clcr_cli.config import EvalConfig
from clcr_cli.stages.evaluate import run_eval

CONFIG = """
[extract]
dataset = "synth"
n_samples = 48
part_size = 48

[train]
task = "synth"
epochs = 2
batch_size = 16
optimizer = "sgd"  # Adam would turn float noise on zero-gradient biases into full steps
lr = 0.05
d = 16
num_heads = 2
# per-sample losses only: the whitening regularisers are batch statistics, computed per
# rank under DDP, and dropout draws differ per rank; both would make the runs differ
variant = "no-reg"
dropout = 0.0
"""


def clcr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clcr_cli", *args], capture_output=True, text=True, timeout=600)


def test_two_process_ddp_matches_one_process(tmp_path: Path):
    config = tmp_path / "ddp.toml"
    config.write_text(CONFIG)
    common = ["--workdir", str(tmp_path / "wd"), "--config", str(config), "--device", "cpu"]
    ddp = clcr("train", "--nproc", "2", *common)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    (run,) = (tmp_path / "wd" / "train").iterdir()
    assert "2 processes" in ddp.stderr
    ddp_weights = load_file(str(run / "model.safetensors"))
    ddp_history = (run / "history.csv").read_text()
    # the checkpoint of the 2-process run loads and evaluates in this single process
    metrics = run_eval(run, EvalConfig())
    assert 0 <= metrics["metrics"]["acc"] <= 1

    single = clcr("train", "--force", *common)
    assert single.returncode == 0, single.stderr[-3000:]
    one_weights = load_file(str(run / "model.safetensors"))
    assert ddp_weights.keys() == one_weights.keys()
    for k in ddp_weights:
        torch.testing.assert_close(ddp_weights[k], one_weights[k], rtol=1e-4, atol=1e-5, msg=k)
    rows = [line.split(",") for line in ddp_history.splitlines()[1:]]
    rows_one = [line.split(",") for line in (run / "history.csv").read_text().splitlines()[1:]]
    train_loss = [(float(a[1]), float(b[1])) for a, b in zip(rows, rows_one, strict=True)]
    assert all(abs(a - b) < 1e-4 for a, b in train_loss), train_loss


# --- a rank's failure reaches every rank ----------------------------------------------------

RANK = """
import os
import sys
from pathlib import Path

from clcr_cli.distributed import agree, all_sum, main_first, setup
from clcr_cli.errors import ClcrError, DataError

device, how, failing = sys.argv[1], sys.argv[2], int(sys.argv[3])
d = setup(device)


def step() -> int:
    if d.rank == failing and how == "vanish":
        os._exit(3)  # killed, or crashed: no word to the others
    if d.rank == failing:
        raise DataError(Path("/data/part-7.h5"), "damaged part")
    return d.rank


try:
    total = all_sum({"rank": float(d.rank), "one": 1.0}, d)  # float64 on the backend's device
    print(f"sum {total['rank']} {total['one']}", flush=True)
    result = (main_first if how == "main_first" else agree)(d, step)
except ClcrError as exc:  # as the CLI's user_errors prints it
    print(f"error: {exc}", file=sys.stderr, flush=True)
    sys.exit(2)
print(f"done {result}", flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(
    device: str, how: str, failing: int, world: int = 2, gpus: int = 0, timeout: float = 120
) -> list[tuple[int, str, str]]:
    """``world`` processes joined as torchrun would join them (on ``gpus`` GPUs, shared
    where fewer than the ranks); (returncode, stdout, stderr) of each, every one killed if
    any runs past ``timeout``."""
    port = free_port()
    procs = []
    for rank in range(world):
        local = rank % gpus if gpus else rank
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
               "LOCAL_RANK": str(local), "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world)}
        if device == "cuda":
            env.setdefault("NCCL_DEBUG", "WARN")  # says why NCCL refuses, if it does
        procs.append(subprocess.Popen([sys.executable, "-c", RANK, device, how, str(failing)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outputs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            p.kill()
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs, strict=True)]


@pytest.mark.parametrize(("how", "failing"), [("main_first", 1), ("main_first", 0), ("agree", 1)])
def test_a_failing_rank_fails_every_rank_with_its_line(how: str, failing: int):
    """Rank 0 first (it extracts), then the others; or all at once: the failing rank's
    DataError ends every rank at once, each with that one line, none left waiting."""
    start = time.monotonic()
    results = run_ranks("cpu", how, failing)
    assert time.monotonic() - start < 60, "a rank waited for one that had failed"
    for code, out, err in results:
        assert out.startswith("sum 1.0 2.0"), (out, err)  # the collectives before it worked
        assert err == f"error: rank {failing}: /data/part-7.h5: damaged part\n", err
        assert code == 2


def test_a_rank_that_ends_without_a_word_is_one_line_on_the_others():
    (code0, _, err0), (code1, _, _) = run_ranks("cpu", "vanish", failing=1)
    assert code1 == 3
    assert err0 == "error: another rank ended before this check without saying why (see its output)\n"
    assert code0 == 2


def test_ranks_that_all_succeed_pass_the_checked_barriers():
    results = run_ranks("cpu", "main_first", failing=-1)
    assert [(code, out.split()[-1]) for code, out, _ in results] == [(0, "0"), (0, "1")], results


def test_one_process_raises_its_own_error():
    from clcr_cli.distributed import Dist, agree, checked_barrier, main_first
    from clcr_cli.errors import DataError

    single = Dist()
    assert agree(single, lambda: 7) == 7 and main_first(single, lambda: 8) == 8
    checked_barrier(single)
    error = DataError(Path("x.h5"), "bad")

    def fail() -> None:
        raise error

    with pytest.raises(DataError) as raised:
        main_first(single, fail)
    assert raised.value is error


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (nccl)")
def test_nccl_collectives_take_cuda_tensors_and_failures_reach_every_rank():
    """nccl refuses CPU tensors: all_sum and the checked barrier run on the rank's GPU.
    Two ranks share the GPU where there is one (NCCL may refuse that: then skipped)."""
    results = run_ranks("cuda", "main_first", failing=1, gpus=torch.cuda.device_count())
    if torch.cuda.device_count() < 2 and any("Duplicate GPU" in err for _, _, err in results):
        pytest.skip("NCCL refuses two ranks on one GPU (Duplicate GPU detected)")
    for code, out, err in results:
        assert out.startswith("sum 1.0 2.0"), (out, err)
        assert err.endswith("error: rank 1: /data/part-7.h5: damaged part\n"), err
        assert code == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (nccl)")
def test_nccl_collectives_in_one_rank_group():
    """One GPU, one rank: the same collectives under nccl (a CPU tensor would be refused)."""
    code = """
import sys, torch, torch.distributed as dist
from pathlib import Path
from clcr_cli.distributed import Dist, all_sum, checked_barrier
from clcr_cli.errors import ClcrError, DataError
torch.cuda.set_device(0)
dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{sys.argv[1]}", rank=0, world_size=1)
d = Dist(0, 2, "cuda:0")  # active: the collectives run (in a group of one)
assert all_sum({"a": 1.5, "b": 2.0}, d) == {"a": 1.5, "b": 2.0}
checked_barrier(d)
try:
    checked_barrier(d, DataError(Path("x.h5"), "bad"))
except ClcrError as exc:
    print(exc)
dist.destroy_process_group()
"""
    result = subprocess.run([sys.executable, "-c", code, str(free_port())], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == "rank 0: x.h5: bad\n"
