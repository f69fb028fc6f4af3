"""Finding upstream outputs: what a stage reads of the stages before it.

No stage imports another (``stages/``): what one needs of another's output -- the file
names, the latest complete extraction of a task, the store and options an extraction was
made with, a trained run's manifest, store and model -- is found here, as DVC's graph
resolves the outputs its stages depend on. Running an upstream stage when it is missing
is the graph's job (``clcr_cli.pipeline``), not the downstream stage's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from torch import nn

from clcr_cli.cache import (
    MANIFEST,
    PARAMS,
    check_output,
    complete_outputs,
    is_folder_name,
    list_outputs,
)
from clcr_cli.config import ExtractConfig, non_default_options, options, resolve
from clcr_cli.errors import ClcrError, ConfigError, DataError
from clcr_cli.store import FeatureStore
from clcr_cli.training.data import (
    FeatureStats,
    Presence,
    SplitData,
    frame_views,
    load_split,
    standardise,
)
from clcr_cli.training.inference import (
    META_FILE,
    TEST_BEST_FILE,
    WEIGHTS_FILE,
    Predictions,
    compute_metrics,
    load_trained,
    predict,
)

# --- the files of every stage's output ----------------------------------------------------

STORE_FILE = "features.h5"  # extract, perturb, predict
SKIPPED_FILE = "skipped.csv"  # extract, predict: id, file, reason of every sample left out
SKIPPED_HEADER = ["id", "file", "reason"]
METRICS_FILE = "metrics.json"  # eval
PREDICTIONS_FILE = "predictions.csv"  # eval, predict
RUNS_CSV, ABLATION_CSV, ABLATION_MD = "runs.csv", "ablation.csv", "ablation.md"  # ablate
CURVES_CSV, SUMMARY_CSV, ROBUSTNESS_CSV = "curves.csv", "summary.csv", "robustness.csv"  # noise

# what each kind of noise sweep is called (stages/noise.py), by the options that choose it
SWEEP_TITLES = {
    "features": "Gaussian noise on features",
    "raw": "noise on the raw signal",
    "missing": "missing modalities",
}
DIGEST = re.compile(r"^[0-9a-f]{12}$")


def sweep_kind(noise: dict[str, Any]) -> str:
    """The kind of sweep (a key of :data:`SWEEP_TITLES`) that noise options ``noise`` run."""
    return "missing" if noise.get("missing_rates") else "raw" if noise.get("level") == "raw" else "features"


def sweep_title(folder: Path) -> str:
    """What the noise output ``folder`` swept, read from its recorded options."""
    return SWEEP_TITLES[sweep_kind(json.loads((folder / PARAMS).read_text())["params"]["noise"])]


# --- extractions --------------------------------------------------------------------------


def latest_store(workdir: Path, dataset: str, console: Console | None = None) -> Path:
    """The ``features.h5`` of the latest extraction of ``dataset`` under ``workdir``, for a
    stage not pinned to one; the choice is printed.

    The latest extraction is the one begun last. When it is not complete -- damaged, being
    written, or killed -- that is an error naming it and the command that completes it
    (it is never passed over for an older one, which holds other data); so is a workspace
    without any extraction of ``dataset``.
    """
    console = console or Console(stderr=True)
    begun = [r for r in list_outputs(workdir) if r.stage == "extract" and r.dataset == dataset]
    command = f"clcr extract --dataset {dataset}"
    if not begun:
        hint = "" if dataset in _builtin() else " --manifest FILE.csv"
        raise ConfigError(f"no extraction of {dataset!r} in {workdir}: run `{command}{hint} --workdir "
                          f"{workdir}` first (or pin one with an [extract] section in --config)")
    latest = max(begun, key=lambda r: (r.path / PARAMS).stat().st_mtime if (r.path / PARAMS).exists() else 0)
    if not latest.complete:
        given = non_default_options("extract", latest.params)
        flags = "".join(f" --{k.replace('_', '-')} {v}" for k, v in sorted(given.items())
                        if k != "dataset" and v is not None)
        what = (f"is damaged ({latest.problem})" if latest.state == "corrupt"
                else "is not complete (being written, or interrupted)")
        raise DataError(latest.path, f"the latest extraction of {dataset} {what}: run `{command}{flags}` "
                                     "(with its data options) to finish it, or pin another with an "
                                     "[extract] section in --config")
    console.print(f"using extract {latest.path.name} (the latest for {dataset})")
    return latest.path / STORE_FILE


def store_sha256(store_path: Path) -> str | None:
    """The sha256 of an extraction's ``features.h5`` as its manifest records it (None for a
    store that is no extract output)."""
    try:
        entry = json.loads((Path(store_path).parent / MANIFEST).read_text())["files"][Path(store_path).name]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return entry.get("sha256") if isinstance(entry, dict) else None


def _builtin() -> tuple[str, ...]:
    from clcr_cli.datasets import LOADERS

    return tuple(LOADERS)


def extract_config_from(settings: dict[str, Any], where: Path) -> ExtractConfig:
    """The extract options recorded in ``settings`` (a store's ``settings`` attribute, or a
    run's model.json ``extract``): every option of the extract key, and where the data were
    found when recorded (``loader``; a store without it used the default locations). Options
    added since, with their default left out of the key, may be absent (``UNLESS_DEFAULT``)."""
    from clcr_cli.config import UNLESS_DEFAULT
    from clcr_cli.features.featurize import LOADER_OPTIONS

    fields = options(ExtractConfig)
    keyed = [name for name, f in fields.items() if f.metadata.get("key", True)]
    absent = [name for name in keyed if name not in settings and fields[name].metadata.get("key") != UNLESS_DEFAULT]
    if absent:
        raise DataError(where, f"its settings lack {', '.join(absent)}: extract it again with this version of clcr")
    values = {name: settings[name] for name in keyed if name in settings}
    values.update({k: v for k, v in settings.get("loader", {}).items() if k in LOADER_OPTIONS and v is not None})
    return resolve(ExtractConfig, [(f"{where}: settings", values)])


def extract_config_of(store: FeatureStore) -> ExtractConfig:
    """The extract options ``store`` was made with (:func:`extract_config_from`)."""
    return extract_config_from(store.settings, store.path)


@dataclass(frozen=True)
class RunInputs:
    """What a trained run reads and predicts: its modalities as stored (kind, source, shape),
    its target and class names, and the extract options its inputs were made with."""

    modalities: dict[str, Any]  # store.ModalityInfo by name
    target: str
    class_names: list[str]
    extract: ExtractConfig
    where: Path  # what they were read from, for errors


def run_inputs(run: Path) -> RunInputs:
    """A run's :class:`RunInputs`, from its own model.json (runs of this version: a copied run
    folder is complete) or, for older runs, from the store of its workspace."""
    from clcr_cli.store import ModalityInfo

    meta_path = Path(run) / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        meta = {}
    data = meta.get("data") if isinstance(meta, dict) else None
    if isinstance(data, dict) and isinstance(meta.get("extract"), dict):
        try:
            modalities = {m: ModalityInfo(m, i["kind"], i["source"], tuple(i["shape"]), i["dtype"])
                          for m, i in data["modalities"].items()}
            return RunInputs(modalities, str(data["target"]), list(data["class_names"]),
                             extract_config_from(meta["extract"], meta_path), meta_path)
        except (KeyError, TypeError, AttributeError) as exc:
            raise DataError(meta_path, f"data: {type(exc).__name__}: {exc}") from None
    store_path = train_store(Path(run), train_manifest(Path(run)))
    with FeatureStore(store_path) as store:
        return RunInputs(dict(store.modalities), store.target, list(store.class_names),
                         extract_config_of(store), store_path)


@dataclass(frozen=True)
class Extraction:
    """A store and what it was made from: its path and key, its extract options and the
    dataset's samples (found again, with the same content)."""

    store: Path
    key: str
    cfg: ExtractConfig
    dataset: Any  # datasets.base.Dataset


def extraction_of(store_path: Path, workdir: Path) -> Extraction:
    """Find again the samples the store at ``store_path`` was extracted from, with its
    options (:func:`extract_config_of`), and check that they are the same: options and
    data must give the store's own key, or the media have changed (or moved) since."""
    from clcr_cli.datasets import load_dataset
    from clcr_cli.features.featurize import dataset_options, extract_key

    with FeatureStore(store_path) as store:
        cfg, key = extract_config_of(store), store.extract_key
        recorded = "loader" in store.settings
    try:
        dataset = load_dataset(cfg.dataset, dataset_options(cfg, workdir))
    except ClcrError as exc:
        if recorded:
            raise
        raise DataError(store_path, f"cannot find its data again ({exc}): it was extracted before clcr "
                                    "recorded where the data lie; extract it again") from None
    if extract_key(cfg, dataset).digest != key:
        raise DataError(store_path, "its dataset is not what it was extracted from (the media, lists or "
                                    "manifest changed or moved since): extract it again")
    return Extraction(Path(store_path), key, cfg, dataset)


# --- trained runs -------------------------------------------------------------------------


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


def binding_problem(train_dir: Path, key: str) -> str | None:
    """What in a train output was written by another run than ``key``: its model.json or
    its last.pt recording another run key (outputs of versions that recorded none pass)."""
    from clcr_cli.training.checkpoint import CHECKPOINT, read_run_key

    try:
        recorded = json.loads((train_dir / META_FILE).read_text()).get("run_key")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded is not None and recorded != key:
        return f"{META_FILE}: written by run {recorded}, not {key}"
    checkpoint = train_dir / CHECKPOINT
    if recorded is not None and checkpoint.is_file() and read_run_key(checkpoint) != key:
        return f"{CHECKPOINT}: not written by run {key} (it records {read_run_key(checkpoint) or 'no run key'})"
    return None


def latest_run(workdir: Path, task: str) -> Path:
    """The train output of ``task`` completed last under ``workdir``."""
    found = complete_outputs(workdir, "train", task)
    if not found:
        raise ConfigError(f"no complete train run of {task!r} in {workdir}: run `clcr train --task {task}` first")
    return found[-1]


def check_missing(missing: tuple[str, ...], modalities: list[str]) -> None:
    """``--missing`` must name modalities of the task, and leave at least one present."""
    unknown = sorted(set(missing) - set(modalities))
    if unknown:
        raise ConfigError(f"--missing {', '.join(unknown)}: the task's modalities are {', '.join(modalities)}")
    if set(missing) >= set(modalities):
        raise ConfigError(f"--missing {', '.join(missing)}: leaves no modality to evaluate with")


def check_split(split: str, store: FeatureStore) -> None:
    """``--split`` must name a split the store holds samples of."""
    if len(store.split_indices(split)) == 0:
        raise ConfigError(f"--split {split}: the split of {store.path} is empty")


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
        self, batch_size: int, device: str, present: Presence | None = None, transform=None,
        split: SplitData | None = None, per_sample: bool = False,
    ) -> tuple[Predictions, dict[str, Any]]:
        """Predictions and metrics on the split (or on ``split``, other data of the same
        store); ``present`` marks modalities missing (for every sample or per sample),
        ``transform`` perturbs each batch, ``per_sample`` keeps the per-sample mechanism
        columns and pooled encodings (``inference.predict``); frames are seen as the run saw
        them at validation (``data.frame_views``)."""
        pred = predict(self.model, self.split if split is None else split, batch_size, device, present=present,
                       transform=transform, views=frame_views(self.meta.get("train_config", {})),
                       per_sample=per_sample)
        return pred, compute_metrics(pred, self.target, len(self.class_names))


def load_for_eval(train_dir: Path, split: str, device: str, select: str = "valid") -> Loaded:
    """Load a trained model -- its weights chosen on valid, or with ``select="test-best"``
    those of its best test epoch (``train --keep-test-best``) -- and the ``split`` of the
    store it was trained on."""
    store_path = train_store(train_dir, train_manifest(train_dir))
    if select == "test-best" and not (train_dir / TEST_BEST_FILE).is_file():
        raise ConfigError(f"--select test-best: {train_dir} was not trained with --keep-test-best "
                          f"(it has no {TEST_BEST_FILE})")
    model, meta, stats = load_trained(train_dir, device, TEST_BEST_FILE if select == "test-best" else WEIGHTS_FILE)
    with FeatureStore(store_path) as store:
        kinds = {m: info.kind for m, info in store.modalities.items()}
        data = standardise(load_split(store, split), stats, kinds)
        if len(data) == 0:
            raise DataError(store.path, f"the {split} split is empty")
        return Loaded(model, meta, stats, kinds, store.target, store.class_names, store_path, split, data)
