"""Training: CLCR steps against the late-fusion baseline, data waiting, overheads, GFLOP/s.

Data: the real extract stage's store of ``synth`` (N samples), its train split
standardised as ``clcr train`` does. Settings: the demo's (``pipelines/demo.toml``, i.e.
the short-budget recipe of ``clcr train --task synth``: d 64, 2 heads, batch 32). Each
model is trained for ``EPOCHS`` timed epochs after one untimed warm-up step, with the
steps of ``clcr_cli.training.loop`` (forward, zero_grad, backward, optimiser step); the
late-fusion baseline has the same width ``d`` and encoders.

Figures:

- samples/s of CLCR against late-fusion;
- data waiting: seconds per epoch inside ``clcr_cli.training.data.batches`` iteration
  (and ``Batch.to(device)``) against the epoch's seconds -- the ratio is the share;
- orthogonal / whitening (``bench.overhead.measure_overhead``), each timed
  forward + backward against one full forward + backward step on the same batch -- the
  ratio is the share: (a) materialising every Stiefel-parameterised basis (``U_sh``,
  ``U_pr,m``, batched Cayley maps) once; (b) a replay, on the same streams, of the
  whitened cross-correlation regularisers (``losses.stream_regularisers``: L_intra, L_pr,
  L_sp) of one forward. Timed in isolation, so the two shares need not add up to what
  they cost inside the step;
- aten operations dispatched by one forward + backward on a batch, CLCR against
  late-fusion (counted with a ``TorchDispatchMode``): the many small operations are
  where a step's time goes when its FLOPs are few;
- achieved GFLOP/s: 3 x the forward FLOPs of one full batch
  (``clcr_cli.model.estimate_flops``; backward costs about twice the forward, so
  forward + backward ~ 3 x forward; element-wise operations are not counted) divided by
  the fastest of ``STEP_REPEATS`` training steps on that batch, against the GFLOP/s of
  bare 1024 x 1024 float32 ``torch.matmul`` on this machine, measured in the same run.
"""

from __future__ import annotations

import dataclasses
import io
import time
from pathlib import Path

import torch
from rich.console import Console
from torch.utils._python_dispatch import TorchDispatchMode

from bench.common import Figure, Result, measure

BASE_SAMPLES = 96
EPOCHS = 2
STEP_REPEATS = 3
MATMUL_SIZE = 1024
MATMUL_REPEATS = 20
DEMO_TOML = Path(__file__).resolve().parents[1] / "pipelines" / "demo.toml"


def matmul_gflops(n: int = MATMUL_SIZE, repeats: int = MATMUL_REPEATS) -> float:
    """GFLOP/s of ``repeats`` float32 n x n matmuls (2 n^3 FLOPs each), after a warm-up."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    t0 = time.perf_counter()
    for _ in range(repeats):
        torch.matmul(a, b)
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


def train_epochs(model, split, cfg, epochs: int, device: str) -> dict[str, float]:
    """Seconds, seconds waiting for batches, and samples seen over ``epochs`` epochs, with
    the optimiser ``clcr train`` builds for ``cfg``."""
    from clcr_cli.training.data import batches
    from clcr_cli.training.loop import make_optimizer

    optimizer = make_optimizer(cfg, model)
    shuffle = torch.Generator().manual_seed(0)
    model.train()
    total = waiting = 0.0
    seen = 0
    for _ in range(epochs):
        t0 = time.perf_counter()
        stream = batches(split, cfg.batch_size, generator=shuffle)
        while True:
            t = time.perf_counter()
            batch = next(stream, None)
            if batch is not None:
                batch = batch.to(device)
            waiting += time.perf_counter() - t
            if batch is None:
                break
            out = model(batch)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            seen += len(batch.target)
        total += time.perf_counter() - t0
    return {"seconds": total, "waiting": waiting, "samples": seen}


class _OpCounter(TorchDispatchMode):
    """Counts every aten operation dispatched while active (forward and autograd backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def ops_per_step(model, batch) -> int:
    """aten operations of one forward + backward pass on ``batch``."""
    model.train()
    with _OpCounter() as counter:
        model(batch).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.count


def step_seconds(model, batch, repeats: int = STEP_REPEATS) -> float:
    """The fastest of ``repeats`` forward + backward passes on ``batch`` (after a warm-up)."""
    model.train()
    model(batch).loss.backward()
    times = []
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        model(batch).loss.backward()
        times.append(time.perf_counter() - t0)
    model.zero_grad(set_to_none=True)
    return min(times)


def run(n_samples: int, workdir: Path, size: str = "small", epochs: int = EPOCHS) -> Result:
    from bench.overhead import measure_overhead
    from clcr_cli.config import extract_config, load_toml, train_config
    from clcr_cli.model import build_model, estimate_flops
    from clcr_cli.runtime import resolve_device
    from clcr_cli.stages.extract import run_extract
    from clcr_cli.store import FeatureStore
    from clcr_cli.training.data import FeatureStats, batches, load_split, model_config, standardise

    device = resolve_device("auto")
    cfg = train_config(load_toml(DEMO_TOML), {})
    quiet = Console(file=io.StringIO())
    store_path = run_extract(
        extract_config({}, {"dataset": "synth", "n_samples": n_samples}), workdir, console=quiet
    )
    with FeatureStore(store_path) as store:
        kinds = {m: info.kind for m, info in store.modalities.items()}
        train = load_split(store, "train")
        train = standardise(train, FeatureStats.of(train, kinds), kinds)
        mcfg = model_config(cfg, store)
    batch = next(batches(train, cfg.batch_size)).to(device)
    torch.manual_seed(0)
    models = {
        "clcr": build_model(mcfg).to(device),
        "late-fusion": build_model(dataclasses.replace(mcfg, model="late-fusion")).to(device),
    }
    for model in models.values():  # warm-up: first-call allocations, lazy initialisation
        model.train()
        model(batch).loss.backward()
        model.zero_grad(set_to_none=True)
    epochs_run, flops, steps, ops = {}, {}, {}, {}
    for name, model in models.items():
        epochs_run[name], epochs_run[name + " cost"] = measure(
            lambda model=model: train_epochs(model, train, cfg, epochs, device)
        )
        flops[name] = 3 * estimate_flops(model, batch)
        steps[name] = step_seconds(model, batch)
        ops[name] = ops_per_step(model, batch)
    overhead = measure_overhead(models["clcr"], batch)
    matmul = matmul_gflops()

    clcr, late = epochs_run["clcr"], epochs_run["late-fusion"]
    clcr_cost, late_cost = epochs_run["clcr cost"], epochs_run["late-fusion cost"]
    step = overhead["step_seconds"]
    figures = [
        Figure("clcr samples/s", clcr["samples"] / clcr["seconds"],
               "late-fusion samples/s", late["samples"] / late["seconds"], "samples/s"),
        Figure("clcr data wait per epoch", clcr["waiting"] / epochs,
               "clcr epoch", clcr["seconds"] / epochs, "s"),
        Figure("orthogonal per step", overhead["orthogonal_share"] * step, "clcr step", step, "s"),
        Figure("whitening per step", overhead["whitening_share"] * step, "clcr step", step, "s"),
        Figure("clcr aten ops per step", ops["clcr"], "late-fusion aten ops per step", ops["late-fusion"], "ops"),
        Figure("clcr GFLOP/s", flops["clcr"] / steps["clcr"] / 1e9,
               f"matmul {MATMUL_SIZE}^2 fp32 GFLOP/s", matmul, "GFLOP/s"),
        Figure("late-fusion GFLOP/s", flops["late-fusion"] / steps["late-fusion"] / 1e9,
               f"matmul {MATMUL_SIZE}^2 fp32 GFLOP/s", matmul, "GFLOP/s"),
        Figure("clcr epochs seconds", clcr_cost.seconds, "late-fusion epochs seconds",
               late_cost.seconds, "s", grows=True),
        Figure("clcr epochs peak RSS", clcr_cost.peak_mib, "late-fusion epochs peak RSS",
               late_cost.peak_mib, "MiB", grows=True),
    ]
    return Result(
        "training",
        size,
        {"samples": n_samples, "train samples": len(train), "epochs": epochs, "batch": cfg.batch_size},
        figures,
        {
            "device": device,
            "d": mcfg.d,
            "heads": mcfg.num_heads,
            "optimizer": cfg.optimizer,
            "torch threads": torch.get_num_threads(),
            "forward+backward GFLOP per batch": {k: v / 1e9 for k, v in flops.items()},
            "flops": "3 x forward FLOPs of estimate_flops (matmul/conv/attention only)",
        },
    )
