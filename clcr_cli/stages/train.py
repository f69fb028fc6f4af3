"""Stage ``train``: fit CLCR (or a variant, or a baseline) on the cached features.

Inputs:   an extract output's ``features.h5`` (which one: ``clcr_cli.pipeline.store_for``).
Params:   :class:`~clcr_cli.config.TrainConfig` with the model's options (one output per
          seed), as ``config.key_options``; the options declared with ``key=False``
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

from clcr_cli.cache import StageDir, StageKey, canonical_json, produce
from clcr_cli.config import TrainConfig, key_options
from clcr_cli.distributed import Dist, agree, checked_barrier
from clcr_cli.runs import store_sha256
from clcr_cli.store import FeatureStore
from clcr_cli.training.data import model_config
from clcr_cli.training.loop import fit
from clcr_cli.training.pretrained import weights_digest

# 2: warmup-cosine is a schedule (version 1 trained it at a constant lr); history has lr
# 3: the batched model (model/tokens.py): new parameter layout, no dropout on attention
#    weights or the exchange update; every model option is part of the key
TRAIN_VERSION = 3


def train_key(cfg: TrainConfig, extract_digest: str) -> StageKey:
    """The cache key: the keyed options (the model's among the training's, by name) and the
    extraction's key."""
    inputs = {"extract": extract_digest}
    if cfg.encoder_weights:  # the weights' content, as a dataset's enters the extract key
        inputs["encoder_weights"] = canonical_json(weights_digest(cfg.encoder_weights))
    return StageKey("train", TRAIN_VERSION, cfg.task, key_options(cfg), inputs)


def provenance(store: FeatureStore) -> dict[str, Any]:
    """What model.json records of the data a run was trained on, so that the run folder
    alone can predict: the extraction's key and sha256, the task (target, class names, the
    modalities as stored) and the extract options (the text encoder's name and layers
    among them) -- no path of this machine (``--text-model`` is kept as given): a copied
    run folder is complete wherever it lies."""
    settings = {k: v for k, v in store.settings.items() if k not in ("root", "sources", "loader")}
    if isinstance(settings.get("text"), dict):  # where this machine's copy of the encoder lies
        settings["text"] = {k: v for k, v in settings["text"].items() if k != "path"}
    modalities = {m: {"kind": i.kind, "source": i.source, "dim": i.dim, "dtype": i.dtype, "shape": list(i.shape)}
                  for m, i in store.modalities.items()}
    return {
        "extract_key": store.extract_key,
        "store_sha256": store_sha256(store.path),
        "data": {"dataset": store.dataset, "target": store.target, "class_names": list(store.class_names),
                 "modalities": modalities},
        "extract": settings,
    }


def run_train(
    cfg: TrainConfig,
    store_path: Path,
    workdir: Path,
    dist: Dist,
    *,
    force: bool = False,
    console: Console | None = None,
    lock_timeout: float | None = None,
    after_epoch: Callable[[int], None] | None = None,
    check: Callable[[FeatureStore], None] | None = None,
    announce: bool = False,
) -> Path:
    """Run (or reuse, or resume) one training run on the store at ``store_path``; return
    its output folder. ``announce``: say so when no complete run of these options exists
    (an evaluation that was meant for a trained run trains one).

    ``dist`` says which process this is (``distributed.setup``): under torchrun every rank
    calls this, and rank 0 alone locks and completes. What needs only the store's metadata
    is checked before any training: the model against the data (``ModelConfig.validate``)
    and ``check``, the caller's own checks (an evaluation's options, say).
    """
    console = console or Console(stderr=True)

    def prepare() -> StageDir:
        with FeatureStore(store_path) as store:
            model_config(cfg, store).validate()
            if check is not None:
                check(store)
            return StageDir(workdir, train_key(cfg, store.extract_key))

    stage = agree(dist, prepare)  # every rank checks; one rank's failure ends them all
    if announce and not stage.is_complete():
        console.print(f"[yellow]note:[/] no complete run of these train options in {workdir} ({stage.path.name}): "
                      "training one now; `--run DIR` or `--latest` evaluates an existing run", soft_wrap=True)
    started = False

    def work() -> dict[str, Any]:
        nonlocal started
        started = True
        checked_barrier(dist)  # the other ranks start once rank 0 holds the lock and has begun
        with FeatureStore(store_path) as store:
            return fit(cfg, store, stage.path, dist, console, after_epoch, stage.key.digest, provenance(store))

    try:
        summary = produce(stage, work, force=force, console=console, lock_timeout=lock_timeout, writer=dist.main)
    except Exception as exc:  # rank 0 failed before the others' barrier (a lock, a read-only folder)
        if dist.main and not started:
            checked_barrier(dist, exc)
        raise
    if summary is not None:
        metric = next(k for k in summary if k.startswith("valid_"))
        console.print(f"[green]trained[/] {cfg.task}: best epoch {summary['best_epoch']} of "
                      f"{summary['epochs_run']}, {metric.replace('_', ' ')} {summary[metric]:.4f} -> {stage.path}")
    return stage.path
