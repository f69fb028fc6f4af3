"""CMU-MOSI and CMU-MOSEI in the formats of thuiar/MMSA: sentiment regression in [-3, 3].

Two layouts are read; the loader takes the first that exists under ``--root``:

1. MMSA's feature pickle ``Processed/unaligned_50.pkl`` or ``unaligned_50.pkl``
   (``--aligned``: ``aligned_50.pkl``): a dict ``{train, valid, test}``, each with
   ``raw_text``, ``audio`` (N, T_a, F_a), ``vision`` (N, T_v, F_v), ``id``,
   ``regression_labels`` and, unaligned, ``audio_lengths`` / ``vision_lengths``.
   Modalities ``{"text": "text", "audio": "array", "video": "array"}``: the extract
   stage encodes ``raw_text`` with the text encoder and stores the COVAREP/Facet
   sequences as they are (``vision`` is stored under the modality name "video").
2. MMSA-FET's raw layout: ``label.csv`` (video_id, clip_id, text, label, label_T,
   label_A, label_V, annotation, mode) and ``Raw/<video_id>/<clip_id>.mp4``.
   Modalities ``{"text": "text", "audio": "audio", "video": "video"}``: the extract
   stage decodes audio and frames from the .mp4 with the shared extractors.

The pickle wins when both exist: its features are the ones the published numbers
(and the paper's) are computed on. It is read with :mod:`clcr_cli.safe_pickle`, which
runs none of its code and refuses, before allocating them, arrays that declare more bytes
than the file holds (a DataError naming the file and the declared shape).

Sequence lengths come from the arrays (``audio_lengths``/``vision_lengths`` where
present, else the full padded length), never from MMSA's config, which swaps MOSI's
audio and vision lengths. Each sequence is trimmed to its length; a recorded length of
0 keeps one (padding) frame so every sample has a sequence. Non-finite feature values
(MMSA's ``-inf`` in audio) become 0, as MMSA does. The label is ``regression_labels``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from clcr_cli import safe_pickle
from clcr_cli.datasets.base import SPLITS, DatasetInfo, DatasetOptions, Sample
from clcr_cli.datasets.layout import (
    LoadedDataset,
    build_dataset,
    name_few,
    read_csv_rows,
    require_root,
)
from clcr_cli.errors import DataError

RAW_COLUMNS = ("video_id", "clip_id", "text", "label", "mode")  # the ones read from label.csv


def pickle_name(aligned: bool) -> str:
    return "aligned_50.pkl" if aligned else "unaligned_50.pkl"


def load_mosi(options: DatasetOptions) -> LoadedDataset:
    return load(options, "mosi")


def load_mosei(options: DatasetOptions) -> LoadedDataset:
    return load(options, "mosei")


def load(options: DatasetOptions, name: str) -> LoadedDataset:
    """Find MOSI/MOSEI samples under ``options.root`` in either layout (module docstring)."""
    root = require_root(options, name)
    for candidate in (
        root / "Processed" / pickle_name(options.aligned),
        root / pickle_name(options.aligned),
    ):
        if candidate.is_file():
            return from_pickle(candidate, root, name)
    if (root / "label.csv").is_file() and not options.aligned:
        return from_raw(root / "label.csv", root, name)
    raw_hint = (
        "" if options.aligned else ", or MMSA-FET's label.csv with Raw/<video_id>/<clip_id>.mp4"
    )
    raise DataError(
        root,
        f"no {name.upper()} data: expected Processed/{pickle_name(options.aligned)} or {pickle_name(options.aligned)}{raw_hint}",
    )


# --- the MMSA pickle --------------------------------------------------------------------------


def field(part: dict, key: str, split: str, path: Path) -> Any:
    if key not in part:
        raise DataError(path, f"split '{split}' has no key '{key}'")
    return part[key]


def feature_array(part: dict, key: str, split: str, path: Path) -> np.ndarray:
    value = field(part, key, split, path)
    if not isinstance(value, np.ndarray) or value.ndim != 3 or value.dtype.kind not in "fiu":
        kind = (
            f"{value.dtype} array of shape {value.shape}"
            if isinstance(value, np.ndarray)
            else type(value).__name__
        )
        raise DataError(path, f"'{split}/{key}' is a {kind}, expected a numeric (N, T, F) array")
    return value


def strings(part: dict, key: str, split: str, path: Path, n: int) -> list[str]:
    value = field(part, key, split, path)
    items = list(value) if isinstance(value, list | tuple | np.ndarray) else None
    if items is None or len(items) != n or not all(isinstance(x, str) for x in items):
        raise DataError(path, f"'{split}/{key}' must be {n} strings, found {type(value).__name__}")
    return [str(x) for x in items]


def numbers(part: dict, key: str, split: str, path: Path, n: int) -> np.ndarray:
    value = field(part, key, split, path)
    array = np.asarray(value) if isinstance(value, list | tuple | np.ndarray) else None
    if array is None or array.dtype.kind not in "fiu" or array.size != n:
        raise DataError(
            path, f"'{split}/{key}' must hold {n} numbers, found {type(value).__name__}"
        )
    return array.reshape(n)


def lengths(part: dict, key: str, split: str, path: Path, n: int, padded: int) -> np.ndarray:
    """Per-sample sequence lengths in [1, padded]; the full length when the key is absent."""
    if key not in part:
        return np.full(n, padded, dtype=np.int64)
    values = numbers(part, key, split, path, n).astype(np.int64)
    if (values < 0).any() or (values > padded).any():
        raise DataError(
            path, f"'{split}/{key}' has values outside 0..{padded}, the padded length of its array"
        )
    return np.maximum(values, 1)


def trimmed(sequence: np.ndarray, length: int) -> np.ndarray:
    """The first ``length`` steps as float32, non-finite values (MMSA's -inf) set to 0."""
    x = np.asarray(sequence[:length], dtype=np.float32)
    finite = np.isfinite(x)
    return x if finite.all() else np.where(finite, x, np.float32(0))


def split_samples(data: dict, split: str, path: Path) -> list[Sample]:
    part = data.get(split)
    if not isinstance(part, dict):
        found = "missing" if part is None else f"a {type(part).__name__}"
        raise DataError(path, f"top-level key '{split}' is {found}, expected a dict of arrays")
    audio = feature_array(part, "audio", split, path)
    vision = feature_array(part, "vision", split, path)
    n = audio.shape[0]
    if vision.shape[0] != n:
        raise DataError(
            path, f"'{split}/vision' has {vision.shape[0]} samples but '{split}/audio' has {n}"
        )
    texts = strings(part, "raw_text", split, path, n)
    ids = strings(part, "id", split, path, n)
    labels = numbers(part, "regression_labels", split, path, n).astype(np.float64)
    audio_len = lengths(part, "audio_lengths", split, path, n, audio.shape[1])
    vision_len = lengths(part, "vision_lengths", split, path, n, vision.shape[1])
    text_bert = token_ids(part, split, path, n)
    return [
        Sample(
            id=ids[i],
            split=split,
            label=float(labels[i]),
            text=texts[i],
            arrays={
                "audio": trimmed(audio[i], audio_len[i]),
                "video": trimmed(vision[i], vision_len[i]),
                **({} if text_bert is None else {"text_bert": text_bert[i]}),
            },
        )
        for i in range(n)
    ]


def token_ids(part: dict, split: str, path: Path, n: int) -> np.ndarray | None:
    """``text_bert`` (N, 3, T): MMSA's BERT input ids, attention mask and segment ids, as int32
    (None where the pickle has none)."""
    if "text_bert" not in part:
        return None
    ids = np.asarray(part["text_bert"])
    if ids.ndim != 3 or ids.shape[0] != n or ids.shape[1] != 3 or not np.isfinite(ids.astype(np.float64)).all():
        raise DataError(path, f"'{split}/text_bert' has shape {ids.shape}, expected ({n}, 3, T) token ids")
    return ids.astype(np.int32)


def from_pickle(path: Path, root: Path, name: str) -> LoadedDataset:
    data = safe_pickle.load(path)
    if not isinstance(data, dict):
        raise DataError(
            path,
            f"top level is a {type(data).__name__}, expected a dict with keys {', '.join(SPLITS)}",
        )
    samples = [sample for split in SPLITS for sample in split_samples(data, split, path)]
    info = DatasetInfo(
        name=name,
        target="regression",
        modalities={"text": "text", "audio": "array", "video": "array"},
    )
    return build_dataset(info, samples, root, path, sources=[path])


# --- MMSA-FET's raw layout --------------------------------------------------------------------


def raw_rows(label_csv: Path) -> list[dict[str, str]]:
    """The rows of MMSA-FET's label.csv by column name ("" for a cell a short row lacks)."""
    header, *records = read_csv_rows(label_csv) or [[]]
    absent = [c for c in RAW_COLUMNS if c not in header]
    if absent:
        raise DataError(
            label_csv,
            f"missing column(s) {', '.join(absent)} (MMSA-FET: {', '.join(RAW_COLUMNS)}, ...)",
        )
    return [
        {column: record[i] if i < len(record) else "" for i, column in enumerate(header)}
        for record in records
    ]


def finite_label(text: str, label_csv: Path, row_no: int) -> float:
    try:
        label = float(text)
    except ValueError:
        label = math.nan
    if not math.isfinite(label):
        raise DataError(label_csv, f"row {row_no}: label '{text}' is not a finite number")
    return label


def from_raw(label_csv: Path, root: Path, name: str) -> LoadedDataset:
    rows = raw_rows(label_csv)
    samples, missing = [], []
    for row_no, row in enumerate(rows, 2):  # row 1 is the header
        if row["mode"] not in SPLITS:
            raise DataError(
                label_csv, f"row {row_no}: mode '{row['mode']}' is not one of {', '.join(SPLITS)}"
            )
        label = finite_label(row["label"], label_csv, row_no)
        video = root / "Raw" / row["video_id"] / f"{row['clip_id']}.mp4"
        if not video.is_file():
            missing.append(f"Raw/{row['video_id']}/{row['clip_id']}.mp4")
            continue
        sample_id = f"{row['video_id']}$_${row['clip_id']}"  # MMSA's id convention
        samples.append(
            Sample(
                id=sample_id,
                split=row["mode"],
                label=label,
                text=row["text"],
                audio=video,
                video=video,
            )
        )
    if missing:
        raise DataError(
            root / "Raw",
            f"{len(missing)} of {len(rows)} clips in label.csv are missing: {name_few(missing)}",
        )
    info = DatasetInfo(
        name=name,
        target="regression",
        modalities={"text": "text", "audio": "audio", "video": "video"},
    )
    return build_dataset(info, samples, root, label_csv, sources=[label_csv])
