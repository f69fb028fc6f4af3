"""A user's own dataset, registered with ``--manifest FILE.csv`` under any new name.

The CSV has a header and one row per sample:

- ``id``     unique sample id;
- ``split``  ``train``, ``valid`` or ``test`` (without any ``valid`` row, valid is carved
             from train: 10 % of the rows, seeded by ``options.seed``);
- ``label``  a class name/number (classification) or a float (regression);
- one or more modality columns:
    ``audio``  a .wav (or a container with an audio track)   -> modality "audio", source "audio"
    ``video``  a video file                                  -> modality "video", source "video"
    ``image``  a still image, read as a one-frame video      -> modality "image", source "video"
    ``text``   inline text, or a path ending in ``.txt``     -> modality "text",  source "text"

A sample has one visual file (``Sample.video``), so ``video`` and ``image`` exclude
each other. Relative paths are resolved against the manifest's folder (which is also
``Dataset.root``); other columns are ignored.

Target: ``--target`` (``options.target``) when given. Otherwise classification, unless
every label is a number and some are not whole, which can only be regression.
Classification class names are the sorted unique labels (numerically when all are
integers, so "10" follows "9"); the label is the index of its name. Regression labels
must all be numbers.
"""

from __future__ import annotations

import csv
from pathlib import Path

from clcr_cli.datasets.base import SPLITS, DatasetInfo, DatasetOptions, Sample, Source, Target
from clcr_cli.datasets.layout import LoadedDataset, build_dataset, carve_valid, name_few
from clcr_cli.errors import ConfigError, DataError

MODALITY_COLUMNS: dict[str, Source] = {
    "audio": "audio",
    "video": "video",
    "image": "video",
    "text": "text",
}
REQUIRED_COLUMNS = ("id", "split", "label")


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header (lower-cased) and rows of the manifest, cells stripped."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [c.strip().lower() for c in next(reader, [])]
            rows = [
                dict(zip(header, (c.strip() for c in row), strict=False))
                for row in reader
                if any(row)
            ]
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(path, f"not a readable CSV manifest ({err})") from err
    return header, rows


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def infer_target(labels: list[str]) -> Target:
    if (
        labels
        and all(is_number(x) for x in labels)
        and any(not float(x).is_integer() for x in labels)
    ):
        return "regression"
    return "classification"


def class_names_of(labels: list[str]) -> tuple[str, ...]:
    unique = set(labels)
    if all(x.lstrip("-").isdigit() for x in unique):
        return tuple(sorted(unique, key=int))
    return tuple(sorted(unique))


def resolve(manifest: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else manifest.parent / path


def load(options: DatasetOptions, name: str) -> LoadedDataset:
    """Read ``options.manifest`` as dataset ``name`` (see the module docstring)."""
    if options.manifest is None:
        raise ConfigError(f"dataset '{name}' needs --manifest FILE.csv")
    manifest = Path(options.manifest)
    if not manifest.is_file():
        raise DataError(manifest, "manifest file does not exist")
    header, rows = read_rows(manifest)
    absent = [c for c in REQUIRED_COLUMNS if c not in header]
    if absent:
        raise DataError(
            manifest,
            f"missing column(s) {', '.join(absent)}; a manifest needs id, split, label and modality columns",
        )
    modalities = [c for c in MODALITY_COLUMNS if c in header]
    if not modalities:
        raise DataError(
            manifest, f"no modality column; add one or more of {', '.join(MODALITY_COLUMNS)}"
        )
    if "video" in modalities and "image" in modalities:
        raise DataError(manifest, "has both video and image columns; a sample has one visual file")
    if not rows:
        raise DataError(manifest, "lists no samples")
    for row_no, row in enumerate(rows, 2):  # row 1 is the header
        empty = [c for c in (*REQUIRED_COLUMNS, *modalities) if not row.get(c)]
        if empty:
            raise DataError(manifest, f"row {row_no}: empty {', '.join(empty)}")
        if row["split"] not in SPLITS:
            raise DataError(
                manifest, f"row {row_no}: split '{row['split']}' is not one of {', '.join(SPLITS)}"
            )

    labels = [row["label"] for row in rows]
    target = options.target or infer_target(labels)
    if target == "regression":
        bad = [f"row {n} '{x}'" for n, x in enumerate(labels, 2) if not is_number(x)]
        if bad:
            raise DataError(manifest, f"regression labels must be numbers: {name_few(bad)}")
        class_names: tuple[str, ...] = ()
        values = [float(x) for x in labels]
    else:
        class_names = class_names_of(labels)
        values = [float(class_names.index(x)) for x in labels]

    samples, missing = [], []
    for row, value in zip(rows, values, strict=True):
        fields: dict[str, object] = {}
        for column in modalities:
            cell = row[column]
            if column == "text" and not cell.lower().endswith(".txt"):
                fields["text"] = cell
                continue
            path = resolve(manifest, cell)
            if not path.is_file():
                missing.append(cell)
            elif column == "text":
                fields["text"] = path.read_text(encoding="utf-8").strip()
            else:
                fields["audio" if column == "audio" else "video"] = path
        samples.append(Sample(id=row["id"], split=row["split"], label=value, **fields))
    if missing:
        raise DataError(
            manifest, f"{len(missing)} listed file(s) do not exist: {name_few(missing)}"
        )

    if not any(s.split == "valid" for s in samples):
        samples = carve_valid(samples, lambda s: s.id, options.seed, manifest)
    info = DatasetInfo(
        name=name,
        target=target,
        modalities={column: MODALITY_COLUMNS[column] for column in modalities},
        class_names=class_names,
    )
    return build_dataset(info, samples, manifest.parent, manifest)
