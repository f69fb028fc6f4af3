"""Stage ``train``: fit CLCR (or a variant, or a baseline) on the cached features.

Inputs:   the extract stage's ``features.h5`` for the task (extracted first if missing).
Params:   :class:`~clcr_cli.config.TrainConfig` with the model's options (one output per
          seed), as :func:`train_params`; the options declared with ``key=False``
          (compile, stream_above_mb, loader_workers) say how to run, not what to
          compute, and are left out of the key.
Outputs:  ``<workdir>/train/<task>-<key>/``
            model.safetensors  the weights of the best validation epoch
            model.json         model and train config, feature statistics, best epoch/score
            history.csv        per epoch: train/valid loss, each loss term, the main metric,
                               the learning rate, seconds and samples/s
            timing.json        epochs run, mean epoch seconds and mean samples/s (what the
                               run times itself; ``bench/`` measures where a step's time goes)
            diagnostics.json   what the mechanisms of the selected model do on the valid
                               split (``model.diagnostics``): per level the budget weights
                               alpha (mean, share < 0.05 and > 0.95), the participation rate
                               and threshold; InterCAD's mean level and modality weights
            last.pt            the resumable checkpoint (model, optimiser, scheduler, epoch,
                               best score, history), a state dict read back with
                               ``torch.load(weights_only=True)``
Cache:    a complete output is reused; a killed run resumes from ``last.pt`` and ends with
          the same weights and metrics as an uninterrupted run (bit-identical on CPU).
The loop is :func:`clcr_cli.training.loop.fit`; a split larger than ``stream_above_mb`` is
streamed from the store in batches, otherwise held in memory (the batches are the same).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from clcr_cli.cache import StageDir, StageKey, produce
from clcr_cli.config import ExtractConfig, TrainConfig, option_values
from clcr_cli.distributed import barrier, setup
from clcr_cli.runtime import resolve_device
from clcr_cli.stages.extract import resolve_store
from clcr_cli.store import FeatureStore
from clcr_cli.training.data import model_config
from clcr_cli.training.loop import check_precision, fit

# 2: warmup-cosine is a schedule (version 1 trained it at a constant lr); history has lr
# 3: the batched model (model/tokens.py): new parameter layout, no dropout on attention
#    weights or the exchange update; every model option is part of the key
TRAIN_VERSION = 3


def train_params(cfg: TrainConfig, keyed_only: bool = True) -> dict[str, Any]:
    """What a run's result depends on, by option name (the model's options among the
    training's): the params of its key. With ``keyed_only`` False, every option: the
    ``base`` of ablate's and noise's keys, which have always held them all."""
    return option_values(cfg, keyed_only)


def train_key(cfg: TrainConfig, extract_digest: str) -> StageKey:
    """The cache key: :func:`train_params` and the extraction's key."""
    return StageKey("train", TRAIN_VERSION, cfg.task, train_params(cfg), {"extract": extract_digest})


def run_train(
    cfg: TrainConfig,
    extract_cfg: ExtractConfig | None,
    workdir: Path,
    *,
    force: bool = False,
    device: str = "auto",
    console: Console | None = None,
    lock_timeout: float | None = None,
    after_epoch: Callable[[int], None] | None = None,
    check: Callable[[FeatureStore], None] | None = None,
) -> Path:
    """Run (or reuse, or resume) one training run; return its output folder.

    ``extract_cfg`` None: train on the latest extraction of the task (see ``resolve_store``).
    Under torchrun every rank calls this; rank 0 alone extracts, locks and completes.
    What needs only the device or the store's metadata is checked before any training:
    the precision, the model against the data (``ModelConfig.validate``) and ``check``,
    the caller's own checks (an evaluation's options, say).
    """
    console = console or Console(stderr=True)
    device = resolve_device(device)
    check_precision(cfg.precision, device)
    dist = setup(device)
    if not dist.main:
        console = Console(stderr=True, quiet=True)
        barrier(dist)  # wait for rank 0 to extract
    store_path = resolve_store(cfg.task, workdir, extract_cfg, device, console)
    with FeatureStore(store_path) as store:
        model_config(cfg, store).validate()
        if check is not None:
            check(store)
        stage = StageDir(workdir, train_key(cfg, store.extract_key))
    if dist.main:
        barrier(dist)

    def work() -> dict[str, Any]:
        barrier(dist)  # the other ranks start once rank 0 holds the lock and has begun
        with FeatureStore(store_path) as store:
            return fit(cfg, store, stage.path, dist, console, after_epoch)

    summary = produce(stage, work, force=force, console=console, lock_timeout=lock_timeout, writer=dist.main)
    if summary is not None:
        console.print(f"[green]trained[/] {cfg.task}: {summary} -> {stage.path}")
    return stage.path
