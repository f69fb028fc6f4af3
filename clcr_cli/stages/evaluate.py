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

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from torch import nn

from clcr_cli.cache import MANIFEST, StageDir, StageKey, check_output, is_folder_name, produce
from clcr_cli.config import EvalConfig, key_options
from clcr_cli.errors import ConfigError, DataError
from clcr_cli.runtime import resolve_device
from clcr_cli.stages.extract import STORE_FILE
from clcr_cli.store import FeatureStore
from clcr_cli.training.data import FeatureStats, Presence, SplitData, load_split, standardise
from clcr_cli.training.inference import Predictions, compute_metrics, load_trained, predict

EVAL_VERSION = 1
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"


DIGEST = re.compile(r"^[0-9a-f]{12}$")


def train_manifest(train_dir: Path) -> dict[str, Any]:
    """The manifest of the complete, intact train output ``train_dir``, its fields that
    name folders checked: the task (a plain name) and the extraction's key."""
    if not Path(train_dir).is_dir():
        raise DataError(train_dir, "no such folder (give a train output: <workdir>/train/<task>-<key>)")
    check = check_output(train_dir)
    if check.state == "partial":
        raise DataError(train_dir, "not a complete train output (run `clcr train` first)")
    if check.state == "corrupt":
        raise DataError(train_dir, f"the train output is damaged ({check.describe()}); "
                                   "run `clcr train` with its options again to redo it")
    train, where = check.manifest, train_dir / MANIFEST
    if train.get("stage") != "train" or not isinstance(train.get("params"), dict):
        raise DataError(where, "not the manifest of a train output")
    if not is_folder_name(train.get("dataset")):
        raise DataError(where, f"dataset {train.get('dataset')!r} is not a plain name "
                               "(letters, digits, '_', '.', '-')")
    if not isinstance(train.get("key"), str) or DIGEST.match(str(train.get("inputs", {}).get("extract"))) is None:
        raise DataError(where, "its key or its extraction's key is not a stage key")
    return train


def train_store(train_dir: Path, train: dict[str, Any]) -> Path:
    """The store a train output was trained on, in the same workspace (``train_dir`` is
    ``<workdir>/train/<task>-<key>``), from its manifest ``train``."""
    folder = train_dir.resolve().parent.parent / "extract" / f"{train['dataset']}-{train['inputs']['extract']}"
    if not (folder / MANIFEST).is_file():
        raise DataError(folder, f"the extraction {train_dir.name} was trained on is not in its workspace")
    return folder / STORE_FILE


def check_missing(missing: tuple[str, ...], modalities: list[str]) -> None:
    """``--missing`` must name modalities of the task, and leave at least one present."""
    unknown = sorted(set(missing) - set(modalities))
    if unknown:
        raise ConfigError(f"--missing {', '.join(unknown)}: the task's modalities are {', '.join(modalities)}")
    if set(missing) >= set(modalities):
        raise ConfigError(f"--missing {', '.join(missing)}: leaves no modality to evaluate with")


def check_options(cfg: EvalConfig, store: FeatureStore) -> None:
    """What an evaluation needs of the store, checked before anything is trained."""
    check_missing(cfg.missing, list(store.modalities))
    if len(store.split_indices(cfg.split)) == 0:
        raise ConfigError(f"--split {cfg.split}: the split of {store.path} is empty")


def prediction_columns(pred: Predictions, target: str, class_names: list[str]) -> tuple[list[str], list[list[Any]]]:
    """The columns ``prediction`` (class index or score) and, for classification,
    ``prob_<class>`` (6 decimals): (header, one row per sample)."""
    predicted = pred.predicted(target)
    if target != "classification":
        return ["prediction"], [[float(v)] for v in predicted]
    probs = pred.probabilities()
    rows = [[int(v), *(f"{p:.6f}" for p in row)] for v, row in zip(predicted, probs, strict=True)]
    return ["prediction", *(f"prob_{c}" for c in class_names)], rows


def write_predictions(path: Path, pred: Predictions, split: str, target: str, class_names: list[str]) -> None:
    """predictions.csv: id, split, label, then :func:`prediction_columns`."""
    header, rows = prediction_columns(pred, target, class_names)
    cast = int if target == "classification" else float
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "split", "label", *header])
        for sample_id, label, row in zip(pred.ids, pred.target, rows, strict=True):
            writer.writerow([sample_id, split, cast(label), *row])


@dataclass
class Loaded:
    """A trained model with one split of its store, standardised, ready to predict."""

    model: nn.Module
    meta: dict[str, Any]
    stats: FeatureStats
    kinds: dict[str, str]
    target: str
    class_names: list[str]
    store: Path  # the feature store the split was read from
    split_name: str
    split: SplitData

    def predict(
        self, batch_size: int, device: str, present: Presence | None = None, transform=None
    ) -> tuple[Predictions, dict[str, Any]]:
        """Predictions and metrics on the split; ``present`` marks modalities missing (for
        every sample or per sample), ``transform`` perturbs each batch."""
        pred = predict(self.model, self.split, batch_size, device, present=present, transform=transform)
        return pred, compute_metrics(pred, self.target, len(self.class_names))


def load_for_eval(train_dir: Path, split: str, device: str) -> Loaded:
    """Load a trained model and the ``split`` of the store it was trained on."""
    store_path = train_store(train_dir, train_manifest(train_dir))
    model, meta, stats = load_trained(train_dir, device)
    with FeatureStore(store_path) as store:
        kinds = {m: info.kind for m, info in store.modalities.items()}
        data = standardise(load_split(store, split), stats, kinds)
        if len(data) == 0:
            raise DataError(store.path, f"the {split} split is empty")
        return Loaded(model, meta, stats, kinds, store.target, store.class_names, store_path, split, data)


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
    key = StageKey("eval", EVAL_VERSION, train["dataset"], key_options(cfg), {"train": train["key"]})
    stage = StageDir(train_dir, key)
    produce(stage, lambda: evaluate(train_dir, train, cfg, resolve_device(device), stage.path),
            force=force, console=console)
    return json.loads((stage.path / METRICS_FILE).read_text())


def evaluate(train_dir: Path, train: dict[str, Any], cfg: EvalConfig, device: str, out: Path) -> dict[str, Any]:
    """Evaluate the run in ``train_dir`` (``train``: its manifest) into ``out``: the
    predictions, the metrics and the mechanism weights. Returns the metrics' summary."""
    loaded = load_for_eval(train_dir, cfg.split, device)
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
        "metrics": metrics,
        "loss": pred.loss,
        "modalities": list(loaded.kinds),
        "level_weights": None if pred.level_weights is None else pred.level_weights.tolist(),
        "modality_weights": None if pred.modality_weights is None else pred.modality_weights.tolist(),
    }
    (out / METRICS_FILE).write_text(json.dumps(result, indent=2))
    return {"metrics": {k: v for k, v in metrics.items() if k != "confusion"}}
