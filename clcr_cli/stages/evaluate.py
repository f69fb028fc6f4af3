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
            diagnostics.csv  per sample, in the rows of predictions.csv (id, split): InterCAD's
                             beta_<m> and eta_<m>, the budget's mean alpha_<m>, the model's own
                             per-modality predictions aux_<m> and uncertainties u_<m> where it
                             makes them, the single-modality probes' predictions probe_<m>, and
                             the manifest's ``corruption`` where it has one
                             (``model.diagnostics.per_sample_columns``, ``clcr_cli.breakdown``)
          metrics.json also holds ``probes`` (each single-modality probe's score) and, where the
          manifest of the run's store has a ``corruption`` column, ``breakdown``: accuracy and
          mean mechanism weights per corruption group, the AUC with which beta singles out the
          ruined modality, and each probe's score per group (``clcr_cli.breakdown.breakdown``).
Probes:   a linear readout per modality of the model's pooled encoder levels of that modality
          (``ModelOutput.encoded``), fitted on (at most ``--probe-samples`` evenly spaced
          samples of) the store's train split and applied to the evaluated samples.
Cache:    reused when complete; keyed by the train output's key and the options. (Outputs
          evaluated before diagnostics.csv existed are reused as they are; ``--force`` redoes one.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from clcr_cli.breakdown import breakdown, probe_columns, read_groups
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
from clcr_cli.training.data import load_rows, standardise
from clcr_cli.training.inference import Predictions

EVAL_VERSION = 1
SAMPLE_DIAGNOSTICS_FILE = "diagnostics.csv"


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


def write_sample_diagnostics(
    path: Path, ids: list[str], split: str, columns: dict[str, np.ndarray], groups: dict[str, str] | None
) -> None:
    """diagnostics.csv: id, split, the per-sample columns (6 decimals; ``aux_``/``probe_`` of
    classification as class indices), then ``corruption`` where the manifest has it."""
    names = list(columns)
    header = ["id", "split", *names, *(["corruption"] if groups is not None else [])]

    def cell(name: str, value: float) -> Any:
        if name.startswith(("aux_", "probe_")) and float(value).is_integer():
            return int(value)
        return f"{value:.6f}"

    rows = ([sample_id, split, *(cell(n, columns[n][i]) for n in names),
             *([groups.get(sample_id, "")] if groups is not None else [])]
            for i, sample_id in enumerate(ids))
    write_csv(path, header, rows)


def probe_train_features(
    loaded: Any, most: int, batch_size: int, device: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """(pooled encoder levels (N, M, F), targets) of the store's train split (at most
    ``most`` evenly spaced samples); None where the model reports none."""
    with FeatureStore(loaded.store) as store:
        index = store.split_indices("train")
        if len(index) == 0:
            return None
        if len(index) > most:
            index = index[np.linspace(0, len(index) - 1, most).round().astype(int)]
        data = standardise(load_rows(store, index, list(loaded.kinds)), loaded.stats, loaded.kinds)
    pred, _ = loaded.predict(batch_size, device, split=data, per_sample=True)
    return None if pred.encoded is None else (pred.encoded, pred.target)


def manifest_groups(store_path: Path) -> dict[str, str] | None:
    """id -> ``corruption`` of the manifest the store was extracted from, where it is still
    there and has that column; None otherwise."""
    with FeatureStore(store_path) as store:
        manifest = (store.settings.get("loader") or {}).get("manifest")
    if not manifest or not Path(manifest).is_file():
        return None
    return read_groups(Path(manifest))


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
    # an evaluation has nothing to resume: a failed one leaves no folder behind
    produce(stage, lambda: evaluate(train_dir, train, cfg, resolve_device(device), stage.path),
            force=force, console=console, resumable=False)
    return json.loads((stage.path / METRICS_FILE).read_text())


def evaluate(train_dir: Path, train: dict[str, Any], cfg: EvalConfig, device: str, out: Path) -> dict[str, Any]:
    """Evaluate the run in ``train_dir`` (``train``: its manifest) into ``out``: the
    predictions, the metrics and the mechanism weights. Returns the metrics' summary."""
    loaded = load_for_eval(train_dir, cfg.split, device, cfg.select)
    check_missing(cfg.missing, list(loaded.kinds))
    present = {m: m not in cfg.missing for m in loaded.kinds} if cfg.missing else None
    pred, metrics = loaded.predict(cfg.batch_size, device, present=present, per_sample=True)
    write_predictions(out / PREDICTIONS_FILE, pred, cfg.split, loaded.target, loaded.class_names)
    classification = loaded.target == "classification"
    names = list(loaded.model.config.modality_names)
    columns = dict(pred.per_sample or {})
    fitted = None
    if pred.encoded is not None and cfg.probe_samples > 0:
        fitted = probe_train_features(loaded, cfg.probe_samples, cfg.batch_size, device)
    if fitted is not None and pred.target is not None:
        probed = [m for m in names if m not in cfg.missing]
        index = [names.index(m) for m in probed]
        columns.update(probe_columns(fitted[0][:, index], fitted[1], pred.encoded[:, index], probed,
                                     classification, len(loaded.class_names)))
    groups = manifest_groups(loaded.store)
    write_sample_diagnostics(out / SAMPLE_DIAGNOSTICS_FILE, pred.ids, cfg.split, columns, groups)
    probes, detail = {}, None
    if pred.target is not None:
        everyone = {i: "" for i in pred.ids}
        detail = breakdown(pred.ids, pred.target, pred.predicted(loaded.target), groups or everyone,
                           columns, names, classification)
        probes = {name.removeprefix("probe_"): scores["all"]
                  for name, scores in detail.get("single_modality", {}).items() if name.startswith("probe_")}
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
        "diagnostics_file": SAMPLE_DIAGNOSTICS_FILE,
        "probes": probes,  # acc (regression: MAE) of each single-modality probe on the split
    }
    if groups is not None and detail is not None:
        result["breakdown"] = detail
    atomic_write_text(out / METRICS_FILE, json.dumps(result, indent=2))
    return {"metrics": {k: v for k, v in metrics.items() if k != "confusion"}}
