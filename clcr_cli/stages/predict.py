"""``clcr predict``: a trained run applied to new media.

The inputs are media files (``clip.mp4 clip.wav clip.txt ...``), grouped into samples by
their file name without the suffix (``audio/a1.wav`` and ``video/a1.mp4`` are sample
``a1``), or a manifest CSV in the format of ``--manifest`` datasets without ``split`` and
``label`` (``id`` and the modality columns ``audio``, ``video``, ``image``, ``text``;
other columns are ignored). By suffix, a file is a text (``.txt``), a still image
(``.png .jpg .jpeg .bmp``), an audio file (``.wav .flac .mp3 .ogg .m4a .aac .opus``) or a
video (``.mp4 .avi .flv .mkv .webm .mov``); as at extract time, a video also gives the
audio of a sample that has no audio file of its own.

Every input is extracted with exactly the extract options of the store the run was
trained on (recorded in the run's model.json, or for runs older than that read from the
store's ``settings`` attribute: sample rate, audio features, frames, frame size, text
model and layers, ...), through the same extractors, so what
differs in the media (another sample rate, size or length) is handled as ``clcr
extract`` handles it: resampled, resized, cut. What the run cannot use is refused, with
one line naming the file: a sample without a modality the run was trained on (give it,
or ``--missing MODALITY`` to predict without it, as ``eval --missing`` does), a run
trained on precomputed features (MMSA's pickles: no media to extract), a sequence longer
than the model's ``max_len``; a file that cannot be decoded is refused or, with
``--on-error skip``, listed in ``skipped.csv``.

Inputs:   a complete train output (``--run DIR``: its model.json holds the extract options,
          so a copied run folder predicts anywhere), the new media.
Params:   :class:`~clcr_cli.config.PredictConfig`; the inputs enter the key by content
          (``datasets.fingerprint``: the media by size and modification time, a manifest
          and ``.txt`` files by sha256), so the same inputs are predicted once.
Outputs:  ``<run>/predict/<task>-<key>/`` (or ``--out DIR``):
            predictions.csv  id, prediction (class index, or the score for regression),
                             and for classification class (its name) and prob_<class>
            features.h5      the inputs' features (the store layout, split "predict")
            skipped.csv      id, file, reason of inputs left out (``--on-error skip``)
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from clcr_cli.cache import MANIFEST, PARAMS, StageDir, StageKey, produce, remove, write_csv
from clcr_cli.config import PredictConfig, key_options
from clcr_cli.datasets.base import Dataset, DatasetInfo, Sample
from clcr_cli.datasets.fingerprint import fingerprint
from clcr_cli.datasets.manifest import modality_columns, read_rows, sample_fields
from clcr_cli.errors import ConfigError, DataError
from clcr_cli.features.featurize import Featurizer, build_store, store_attrs
from clcr_cli.features.video import IMAGE_SUFFIXES
from clcr_cli.runs import (
    PREDICTIONS_FILE,
    SKIPPED_FILE,
    SKIPPED_HEADER,
    STORE_FILE,
    check_missing,
    run_inputs,
    train_manifest,
)
from clcr_cli.runtime import resolve_device
from clcr_cli.store import KIND_TIME_AXIS, FeatureStore, ModalityInfo
from clcr_cli.training.data import SplitData, frame_views, load_rows, standardise
from clcr_cli.training.inference import META_FILE, load_trained, predict

PREDICT_VERSION = 1
SPLIT = "predict"  # the split of every sample of a prediction's store
# what a prediction writes into its folder (the cache's params and manifest included)
OUTPUT_NAMES = (PREDICTIONS_FILE, STORE_FILE, SKIPPED_FILE, PARAMS, MANIFEST, "parts")

TEXT_SUFFIXES = (".txt",)
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac", ".opus")
VIDEO_SUFFIXES = (".mp4", ".avi", ".flv", ".mkv", ".webm", ".mov")
# a file's suffix -> the Sample field it fills
FILE_FIELD = {
    **dict.fromkeys(TEXT_SUFFIXES, "text_file"),
    **dict.fromkeys(IMAGE_SUFFIXES, "video"),
    **dict.fromkeys(AUDIO_SUFFIXES, "audio"),
    **dict.fromkeys(VIDEO_SUFFIXES, "video"),
}
# what a modality of each source reads, in words (for errors)
NEEDS = {"text": "a .txt file, or a text cell in a manifest", "audio": "an audio or video file",
         "video": "a video or an image", "flow": "a video"}


@dataclass(frozen=True)
class Prediction:
    """What ``predict_run`` made: the output folder, the table's columns and rows (as
    written to predictions.csv), and who made it."""

    out: Path
    run: Path
    task: str
    target: str
    class_names: list[str]
    header: list[str]
    rows: list[list[Any]]
    skipped: list[tuple[str, str, str]]

    def records(self) -> list[dict[str, Any]]:
        """One dict per sample: id, prediction, and class and probabilities (classification)."""
        out = []
        for row in self.rows:
            cells = dict(zip(self.header, row, strict=True))
            record: dict[str, Any] = {"id": cells["id"], "prediction": cells["prediction"]}
            if self.target == "classification":
                record["class"] = cells["class"]
                record["probabilities"] = {c: float(cells[f"prob_{c}"]) for c in self.class_names}
            out.append(record)
        return out

    def as_json(self) -> dict[str, Any]:
        return {"run": str(self.run), "task": self.task, "target": self.target, "out": str(self.out),
                "predictions": self.records(),
                "skipped": [dict(zip(("id", "file", "reason"), s, strict=True)) for s in self.skipped]}


# --- the inputs as samples -----------------------------------------------------------------


def samples_from_files(files: Sequence[Path]) -> Dataset:
    """Media files grouped into samples by name (module docstring), in order of first appearance."""
    grouped: dict[str, dict[str, Path]] = {}
    for given in files:
        path = Path(given).expanduser()
        field = FILE_FIELD.get(path.suffix.lower())
        if field is None:
            known = " ".join(sorted(FILE_FIELD))
            raise DataError(path, f"unknown kind of media (suffix {path.suffix or 'none'!r}); known: {known}")
        if not path.is_file():
            raise DataError(path, "no such file")
        fields = grouped.setdefault(path.stem, {})
        if field in fields and fields[field].resolve() != path.resolve():
            raise DataError(path, f"sample {path.stem} already has {fields[field]} for the same "
                                  "modality; give one file per modality and sample")
        fields[field] = path.resolve()
    paths = [p for fields in grouped.values() for p in fields.values()]
    root = Path(os.path.commonpath([str(p.parent) for p in paths])) if paths else Path.cwd()
    samples = [Sample(id=i, split=SPLIT, label=math.nan, **fields) for i, fields in grouped.items()]
    return Dataset(_info(samples), samples, root)


def samples_from_manifest(manifest: Path) -> Dataset:
    """The rows of a manifest without split and label (module docstring)."""
    manifest = Path(manifest).expanduser().resolve()
    if not manifest.is_file():
        raise DataError(manifest, "manifest file does not exist")
    header, rows = read_rows(manifest)
    if "id" not in header:
        raise DataError(manifest, "missing column id; a manifest for predict needs id and modality columns")
    columns = modality_columns(manifest, header, rows)
    samples, seen = [], set()
    for number, row in rows:
        sample_id = row.get("id", "")
        if not sample_id:
            raise DataError(manifest, f"row {number}: empty id")
        if sample_id in seen:
            raise DataError(manifest, f"row {number}: id {sample_id} is used twice")
        seen.add(sample_id)
        fields, absent = sample_fields(manifest, row, columns)  # an empty cell: refused later unless --missing
        if absent:
            column, cell = absent[0]
            raise DataError(manifest, f"row {number}: {column} file {cell} does not exist")
        samples.append(Sample(id=sample_id, split=SPLIT, label=math.nan, **fields))
    return Dataset(_info(samples), samples, manifest.parent, (manifest,))


def _info(samples: list[Sample]) -> DatasetInfo:
    """What the inputs hold, for their fingerprint."""
    has = {f: any(getattr(s, f) is not None for s in samples) for f in ("text_file", "audio", "video")}
    has["text_file"] = has["text_file"] or any(s.text is not None for s in samples)
    modalities = {"text": "text", "audio": "audio", "video": "video"}
    return DatasetInfo("predict", "classification", {m: s for m, s in modalities.items()
                                                     if has["text_file" if m == "text" else m]})


def _has(sample: Sample, source: str) -> bool:
    if source == "text":
        return sample.text_file is not None or bool((sample.text or "").strip())
    if source == "audio":
        return sample.audio is not None or sample.video is not None
    return sample.video is not None


def _first_file(sample: Sample, root: Path) -> Path:
    return next((p for p in (sample.video, sample.audio, sample.text_file) if p is not None), root)


def check_inputs(dataset: Dataset, modalities: dict[str, ModalityInfo], missing: tuple[str, ...], where: Path) -> None:
    """Every sample has every modality the run needs, but those predicted without."""
    if not dataset.samples:
        raise ConfigError("predict: no inputs; give media files or --manifest FILE.csv")
    arrays = [m for m, info in modalities.items() if info.source == "array" and m not in missing]
    if arrays:
        raise DataError(where, f"the run was trained on precomputed features ({arrays[0]}: no media to "
                               "extract them from); predict needs a run trained on media")
    for sample in dataset.samples:
        for m, info in modalities.items():
            if m not in missing and not _has(sample, info.source):
                raise DataError(_first_file(sample, dataset.root),
                                f"sample {sample.id} has no {m} ({NEEDS[info.source]}), which the run was "
                                f"trained on ({', '.join(modalities)}); give it, or --missing {m} to "
                                "predict without it")


# --- predicting ----------------------------------------------------------------------------


def predict_run(
    run: Path,
    cfg: PredictConfig,
    *,
    files: Sequence[Path] = (),
    manifest: Path | None = None,
    out: Path | None = None,
    force: bool = False,
    device: str = "auto",
    console: Console | None = None,
) -> Prediction:
    """Predict the media ``files`` (or the samples of ``manifest``) with the trained run in
    ``run``; the output goes to ``<run>/predict/<task>-<key>/`` or ``out`` (module docstring)."""
    console = console or Console(stderr=True)
    run = Path(run)
    if bool(files) == (manifest is not None):
        raise ConfigError("predict: give media files or --manifest FILE.csv (one of the two)")
    train = train_manifest(run)
    known = run_inputs(run)  # from the run's model.json: no workspace needed
    modalities, target, class_names, extract_cfg = known.modalities, known.target, known.class_names, known.extract
    check_missing(cfg.missing, list(modalities))
    dataset = samples_from_manifest(manifest) if manifest is not None else samples_from_files(files)
    check_inputs(dataset, modalities, cfg.missing, known.where)
    params = key_options(cfg)
    inputs = {"train": train["key"], "data": fingerprint(dataset)}
    stage = StageDir(run, StageKey("predict", PREDICT_VERSION, train["dataset"], params, inputs))
    if out is not None:
        stage.path = _own_folder(Path(out).expanduser(), stage.key.digest)
    device = resolve_device(device)
    try:
        produce(stage, lambda: _predict(run, train["inputs"]["extract"], (target, class_names), dataset, modalities,
                                        extract_cfg, cfg, device, stage.path, console), force=force, console=console)
    except DataError:
        # a refused input: the folder is keyed by these inputs, so it would only linger as
        # a partial output in `clcr status`; a run that completed is never touched
        if not stage.is_complete():
            _discard(stage.path, whole=out is None)
        raise
    return read_prediction(stage.path, run, train["dataset"], target, class_names)


def _own_folder(out: Path, digest: str) -> Path:
    """``out`` when it is empty, absent or a prediction's output (of these inputs or, then
    cleared, of others); anything else there is refused, never removed."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: not a folder")
    if out.is_dir() and any(p for p in out.iterdir() if not p.name.startswith(".lock")):
        try:
            params = json.loads((out / PARAMS).read_text())
        except (OSError, ValueError):
            params = None
        if not isinstance(params, dict) or params.get("stage") != "predict":
            raise ConfigError(f"--out {out}: the folder holds other files; give an empty or new folder")
        if params.get("key") != digest:  # another prediction: this one replaces it
            for p in out.iterdir():
                if p.name in OUTPUT_NAMES:
                    remove(p)
    return out


def _discard(folder: Path, whole: bool) -> None:
    """Remove an unfinished prediction: the whole folder (under the run) or, in a folder
    the user gave (``--out``), only what a prediction writes there."""
    if whole:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for p in folder.iterdir():
        if p.name in OUTPUT_NAMES:
            remove(p)


def _predict(
    run: Path,
    extract_key: str,
    task: tuple[str, list[str]],
    dataset: Dataset,
    modalities: dict[str, ModalityInfo],
    extract_cfg: Any,
    cfg: PredictConfig,
    device: str,
    out: Path,
    console: Console,
) -> dict[str, Any]:
    """Extract the inputs into ``out/features.h5``, predict them, write predictions.csv.
    ``task``: the run's target and class names; ``extract_key``: the extraction it was trained on."""
    model, meta, stats = load_trained(run, device)
    sources = {m: info.source for m, info in modalities.items() if m not in cfg.missing}
    ecfg = dataclasses.replace(extract_cfg, on_error=cfg.on_error)
    featurizer = Featurizer(sources, ecfg, device, dataset.root)
    # no labels: the run's target and class names are in its own store
    attrs = store_attrs(featurizer, "predict", {"predict": {"run": str(run), "trained_on": extract_key}})
    n, skipped = build_store(out / STORE_FILE, dataset.samples, featurizer, ecfg, attrs, console)
    write_csv(out / SKIPPED_FILE, SKIPPED_HEADER, skipped)
    for sid, file, reason in skipped:
        console.print(f"[yellow]skipped[/] {sid}: {file}: {reason}", highlight=False, soft_wrap=True)
    if n == 0:
        raise DataError(out / SKIPPED_FILE, "no input could be extracted")
    with FeatureStore(out / STORE_FILE) as store:
        data = load_rows(store, np.arange(len(store)), list(sources))
        _check_lengths(store, data, meta, dataset)
    inputs, lengths = dict(data.inputs), dict(data.lengths)
    present = {}
    for m in cfg.missing:  # a placeholder of one zero step, marked absent
        info = modalities[m]
        shape = list(info.shape)
        shape[KIND_TIME_AXIS[info.kind]] = 1
        inputs[m] = torch.zeros((n, *shape), dtype=torch.uint8 if info.dtype == "uint8" else torch.float32)
        lengths[m], present[m] = torch.ones(n, dtype=torch.long), False
    order = list(modalities)  # the store's order of modalities, as in training
    kinds = {m: info.kind for m, info in modalities.items()}
    split = standardise(SplitData(data.ids, {m: inputs[m] for m in order}, {m: lengths[m] for m in order}, None),
                        stats, kinds)
    pred = predict(model, split, cfg.batch_size, device, present=present or None,
                   views=frame_views(meta.get("train_config", {})))
    target, class_names = task
    header, rows = pred.columns(target, class_names)
    if target == "classification":
        write_csv(out / PREDICTIONS_FILE, ["id", "prediction", "class", *header[1:]],
                  ([i, row[0], class_names[row[0]], *row[1:]] for i, row in zip(pred.ids, rows, strict=True)))
    else:
        write_csv(out / PREDICTIONS_FILE, ["id", *header], ([i, *row] for i, row in zip(pred.ids, rows, strict=True)))
    return {"samples": n, "skipped": len(skipped)}


def _check_lengths(store: FeatureStore, data: SplitData, meta: dict[str, Any], dataset: Dataset) -> None:
    """No sequence is longer than the model's positional table (``max_len``)."""
    max_len = int(meta.get("model_config", {}).get("max_len", 0)) or None
    if max_len is None:
        return
    by_id = {s.id: s for s in dataset.samples}
    for m, lengths in data.lengths.items():
        if not len(lengths):
            continue
        i = int(lengths.argmax())
        if int(lengths[i]) > max_len:
            sample = by_id[data.ids[i]]
            raise DataError(_first_file(sample, dataset.root),
                            f"sample {sample.id}: its {m} has {int(lengths[i])} steps, more than the "
                            f"model's max_len {max_len} (from {META_FILE})")


def read_prediction(out: Path, run: Path, task: str, target: str, class_names: list[str]) -> Prediction:
    """The prediction written in ``out``."""
    with open(out / PREDICTIONS_FILE, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows: list[list[Any]] = [list(r) for r in reader]
    skipped: list[tuple[str, str, str]] = []
    if (out / SKIPPED_FILE).is_file():
        with open(out / SKIPPED_FILE, newline="") as fh:
            skipped = [(a, b, c) for a, b, c in list(csv.reader(fh))[1:]]
    cast = int if target == "classification" else float
    for row in rows:
        row[1] = cast(row[1])
    return Prediction(out, run, task, target, class_names, header, rows, skipped)
