"""Training with torchrun + DDP on 2 CPU processes (gloo) equals one process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
