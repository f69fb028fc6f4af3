"""Stage ``eval``: the task's standard metrics for one trained model.

Inputs:   a complete train output (weights, config, feature statistics) and its store.
Params:   :class:`~clcr_cli.config.EvalConfig` (split, modalities evaluated as missing).
Outputs:  ``<train output>/eval/<task>-<key>/`` -- next to the checkpoint it evaluated
          (``--run DIR``: inside DIR; the task named in DIR's manifest must be a plain
          name, and the store is DIR's workspace's ``extract/<task>-<key>/features.h5``):
            metrics.json     metrics (classification: acc, macro/weighted F1, confusion;
                             regression: MAE, Corr, Acc-7, Acc-5, Has0/Non0 Acc-2 and F1),
                             mean InterCAD level and modality weights
            predictions.csv  id, split, label, prediction (+ prob_<class> for classification)
Cache:    reused when complete; keyed by the train output's key and the options.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from clcr_cli.cache import StageDir, StageKey, atomic_write_text, produce, write_csv
from clcr_cli.config import EvalConfig, key_options
from clcr_cli.runs import (
    METRICS_FILE,
    PREDICTIONS_FILE,
    check_missing,
    check_split,
    load_for_eval,
    train_manifest,
)
from clcr_cli.runtime import resolve_device
from clcr_cli.store import FeatureStore
from clcr_cli.training.inference import Predictions

EVAL_VERSION = 1


def eval_key(train: dict[str, Any], cfg: EvalConfig) -> StageKey:
    """The cache key: the options and the key of the train output (``train``: its manifest)."""
    return StageKey("eval", EVAL_VERSION, train["dataset"], key_options(cfg), {"train": train["key"]})


def check_options(cfg: EvalConfig, store: FeatureStore) -> None:
    """What an evaluation needs of the store, checked before anything is trained."""
    check_missing(cfg.missing, list(store.modalities))
    check_split(cfg.split, store)


def write_predictions(path: Path, pred: Predictions, split: str, target: str, class_names: list[str]) -> None:
    """predictions.csv: id, split, label, then ``Predictions.columns``."""
    header, rows = pred.columns(target, class_names)
    cast = int if target == "classification" else float
    write_csv(path, ["id", "split", "label", *header],
              ([sample_id, split, cast(label), *row] for sample_id, label, row in zip(pred.ids, pred.target, rows, strict=True)))


def run_eval(
    train_dir: Path,
    cfg: EvalConfig,
    *,
    force: bool = False,
    device: str = "auto",
    console: Console | None = None,
) -> dict[str, Any]:
    """Evaluate (or reuse) and return the content of ``metrics.json``."""
    console = console or Console(stderr=True)
    train = train_manifest(train_dir)
    stage = StageDir(train_dir, eval_key(train, cfg))
    produce(stage, lambda: evaluate(train_dir, train, cfg, resolve_device(device), stage.path),
            force=force, console=console)
    return json.loads((stage.path / METRICS_FILE).read_text())


def evaluate(train_dir: Path, train: dict[str, Any], cfg: EvalConfig, device: str, out: Path) -> dict[str, Any]:
    """Evaluate the run in ``train_dir`` (``train``: its manifest) into ``out``: the
    predictions, the metrics and the mechanism weights. Returns the metrics' summary."""
    loaded = load_for_eval(train_dir, cfg.split, device, cfg.select)
    check_missing(cfg.missing, list(loaded.kinds))
    present = {m: m not in cfg.missing for m in loaded.kinds} if cfg.missing else None
    pred, metrics = loaded.predict(cfg.batch_size, device, present=present)
    write_predictions(out / PREDICTIONS_FILE, pred, cfg.split, loaded.target, loaded.class_names)
    result = {
        "task": train["dataset"],
        "target": loaded.target,
        "split": cfg.split,
        "missing": list(cfg.missing),
        "train": str(train_dir),
        "train_key": train["key"],
        "model": train["params"].get("model"),
        "variant": train["params"].get("variant"),
        "seed": train["params"].get("seed"),
        "num_samples": len(pred.ids),
        # test-best: the weights of the best TEST epoch -- an optimistic figure (OGM-GE, ARL, D&R report it)
        "selection": cfg.select,
        "optimistic": cfg.select == "test-best",
        "epoch": loaded.meta["test_best_epoch" if cfg.select == "test-best" else "best_epoch"],
        "metrics": metrics,
        "loss": pred.loss,
        "modalities": list(loaded.kinds),
        "level_weights": None if pred.level_weights is None else pred.level_weights.tolist(),
        "modality_weights": None if pred.modality_weights is None else pred.modality_weights.tolist(),
    }
    atomic_write_text(out / METRICS_FILE, json.dumps(result, indent=2))
    return {"metrics": {k: v for k, v in metrics.items() if k != "confusion"}}
