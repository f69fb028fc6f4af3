"""A user's own dataset, registered with ``--manifest FILE.csv`` under any new name.

The CSV has a header and one row per sample:

- ``id``     unique sample id;
- ``split``  ``train``, ``valid`` or ``test`` (without any ``valid`` row, valid is carved
             from train: 10 % of the rows -- of the groups, with a ``group`` column --,
             seeded by ``options.seed``);
- ``label``  a class name/number (classification) or a float (regression);
- one or more modality columns:
    ``audio``  a .wav (or a container with an audio track)   -> modality "audio", source "audio"
    ``video``  a video file                                  -> modality "video", source "video"
    ``image``  a still image, read as a one-frame video      -> modality "image", source "video"
    ``text``   inline text, or a path ending in ``.txt``     -> modality "text",  source "text"

A sample has one visual file (``Sample.video``), so ``video`` and ``image`` exclude
each other. Relative paths are resolved against the manifest's folder (which is also
``Dataset.root``); other columns are ignored.

An optional ``group`` column names what must not be split between train and valid (a
speaker, a session, a source video; ``Sample.group``). With it, every row needs a group;
without ``valid`` rows, valid is carved from train by group
(:func:`~clcr_cli.datasets.layout.carve_valid`: whole groups, ~10 % of them, seeded by
``options.seed``), and with ``valid`` rows a group found in both train and valid is
refused, naming the row. The test split is taken as given (a protocol may test on the
training speakers). Without a ``group`` column, rows are carved one by one, as before.

Paths may lead outside the manifest's folder (``..``, absolute paths, symlinks): they are
followed, and ``clcr extract`` says how many and which (``features.featurize.outside_root``;
the store's settings list them).

A ``text`` cell ending in ``.txt`` names a file that is read at extract time
(``Sample.text_file``): a file that is not UTF-8 or is blank fails that sample alone,
which ``--on-error skip`` records.

Target: ``--target`` (``options.target``) when given. Otherwise classification, unless
every label is a number and some are not whole, which can only be regression.
Classification class names are the sorted unique labels (numerically when all are
integers, so "10" follows "9"); the label is the index of its name. Regression labels
must all be numbers. Refused, with the row: a label that reads as NaN or infinity (a
missing value, whatever the target), and, without ``--target``, labels that mix numbers
and names (``0, 1, NA``: a missing value, or a class named like one).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from clcr_cli.cache import atomic_path
from clcr_cli.datasets.base import SPLITS, DatasetInfo, DatasetOptions, Sample, Source, Target
from clcr_cli.datasets.layout import LoadedDataset, build_dataset, carve_valid, name_few
from clcr_cli.errors import ConfigError, DataError

MODALITY_COLUMNS: dict[str, Source] = {
    "audio": "audio",
    "video": "video",
    "image": "video",
    "text": "text",
}
# the Sample field that receives a modality column's file
SAMPLE_FIELD = {"audio": "audio", "video": "video", "image": "video", "text": "text_file"}
REQUIRED_COLUMNS = ("id", "split", "label")
GROUP_COLUMN = "group"  # optional: samples that must stay in one of train and valid
Row = tuple[int, dict[str, str]]  # (row number in the file, the header's first row being 1; cells)


def read_rows(path: Path) -> tuple[list[str], list[Row]]:
    """Header (lower-cased) and numbered non-blank rows of the manifest, cells stripped."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [c.strip().lower() for c in next(reader, [])]
            rows = [
                (number, dict(zip(header, (c.strip() for c in row), strict=False)))
                for number, row in enumerate(reader, 2)
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


def check_label_numbers(manifest: Path, rows: list[Row]) -> None:
    """Refuse NaN/infinite labels (missing values), naming the first such row."""
    for number, row in rows:
        label = row["label"]
        if is_number(label) and not math.isfinite(float(label)):
            raise DataError(
                manifest,
                f"row {number}: label '{label}' is NaN or infinite (a missing value?); "
                "fill it in or drop the row",
            )


def infer_target(manifest: Path, rows: list[Row]) -> Target:
    """Regression when every label is a number and some are not whole, else classification."""
    names = [(number, row["label"]) for number, row in rows if not is_number(row["label"])]
    if names and len(names) < len(rows):
        number, label = names[0]
        raise DataError(
            manifest,
            f"row {number}: label '{label}' is not a number but other labels are; "
            "pass --target classification if it names a class",
        )
    if not names and any(not float(row["label"]).is_integer() for _, row in rows):
        return "regression"
    return "classification"


def class_names_of(labels: list[str]) -> tuple[str, ...]:
    unique = set(labels)
    if all(x.lstrip("-").isdigit() for x in unique):
        return tuple(sorted(unique, key=int))
    return tuple(sorted(unique))


def label_values(
    manifest: Path, rows: list[Row], target: Target | None
) -> tuple[Target, tuple[str, ...], list[float]]:
    """The target, the class names (empty for regression) and each row's label value."""
    check_label_numbers(manifest, rows)
    target = target or infer_target(manifest, rows)
    labels = [row["label"] for _, row in rows]
    if target == "regression":
        bad = [f"row {n} '{row['label']}'" for n, row in rows if not is_number(row["label"])]
        if bad:
            raise DataError(manifest, f"regression labels must be numbers: {name_few(bad)}")
        return target, (), [float(x) for x in labels]
    class_names = class_names_of(labels)
    return target, class_names, [float(class_names.index(x)) for x in labels]


def resolve(manifest: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else manifest.parent / path


def modality_columns(manifest: Path, header: list[str], rows: list[Row]) -> list[str]:
    """The manifest's modality columns, checked: one or more, not both video and image,
    and at least one row."""
    columns = [c for c in MODALITY_COLUMNS if c in header]
    if not columns:
        raise DataError(
            manifest, f"no modality column; add one or more of {', '.join(MODALITY_COLUMNS)}"
        )
    if "video" in columns and "image" in columns:
        raise DataError(manifest, "has both video and image columns; a sample has one visual file")
    if not rows:
        raise DataError(manifest, "lists no samples")
    return columns


def sample_fields(
    manifest: Path, row: dict[str, str], columns: list[str]
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The :class:`Sample` fields of one row's modality cells -- inline text, or a path
    resolved against the manifest's folder -- and the (column, cell) of paths that do not
    exist. Empty cells are left out."""
    fields: dict[str, Any] = {}
    absent = []
    for column in columns:
        cell = row.get(column, "")
        if not cell:
            continue
        if column == "text" and not cell.lower().endswith(".txt"):
            fields["text"] = cell
            continue
        path = resolve(manifest, cell)
        if path.is_file():
            fields[SAMPLE_FIELD[column]] = path
        else:
            absent.append((column, cell))
    return fields, absent


def check_rows(
    manifest: Path, rows: list[Row], modalities: list[str], others: tuple[str, ...] = ()
) -> None:
    """Every row fills the required, modality and ``others`` columns (the group) and names
    a known split."""
    for number, row in rows:
        empty = [c for c in (*REQUIRED_COLUMNS, *modalities, *others) if not row.get(c)]
        if empty:
            raise DataError(manifest, f"row {number}: empty {', '.join(empty)}")
        if row["split"] not in SPLITS:
            raise DataError(
                manifest, f"row {number}: split '{row['split']}' is not one of {', '.join(SPLITS)}"
            )


def check_groups(manifest: Path, rows: list[Row]) -> None:
    """No group in both train and valid: the first row that puts a group in the other of
    the two splits is refused, naming the group and the row where it was first seen."""
    first: dict[tuple[str, str], int] = {}  # (split, group) -> its first row
    other = {"train": "valid", "valid": "train"}
    for number, row in rows:
        split, group = row["split"], row[GROUP_COLUMN]
        if split not in other:
            continue
        seen = first.get((other[split], group))
        if seen is not None:
            raise DataError(
                manifest,
                f"row {number}: group '{group}' is in {split} but also in {other[split]} "
                f"(row {seen}); a group must stay in one of train and valid",
            )
        first.setdefault((split, group), number)


def group_fold(manifest: Path, valid_group: str) -> Path:
    """Write the manifest's leave-one-group-out fold for ``valid_group`` beside it, as
    ``<stem>.valid-<group>.csv``, and return its path: the rows of ``valid_group`` become
    ``valid``, every other train or valid row ``train``, test rows and every cell but
    ``split`` stay as they are (relative paths still resolve: same folder). Selecting a
    model on the mean valid score over the folds of every non-test group never reads test
    (docs/fsdd-robust.md, "Choosing the default"). Refused in one line: a manifest without
    a ``group`` column, or a group that is not in train or valid."""
    manifest = Path(manifest)
    header, rows = read_rows(manifest)
    if GROUP_COLUMN not in header:
        raise DataError(manifest, f"no '{GROUP_COLUMN}' column: a fold needs groups")
    groups = {row[GROUP_COLUMN] for _, row in rows if row["split"] in ("train", "valid")}
    if valid_group not in groups:
        raise DataError(
            manifest, f"group '{valid_group}' is not in train or valid (found: {name_few(sorted(groups))})"
        )
    fold = manifest.with_name(f"{manifest.stem}.valid-{valid_group}.csv")
    with atomic_path(fold) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        for _, row in rows:
            if row["split"] != "test":
                row = {**row, "split": "valid" if row[GROUP_COLUMN] == valid_group else "train"}
            writer.writerow(row)
    return fold


def load(options: DatasetOptions, name: str) -> LoadedDataset:
    """Read ``options.manifest`` as dataset ``name`` (see the module docstring)."""
    if options.manifest is None:
        raise ConfigError(f"dataset '{name}' needs --manifest FILE.csv")
    manifest = Path(options.manifest)
    if manifest.is_dir():
        raise DataError(manifest, "is a folder, not a CSV manifest (give the manifest file itself)")
    if not manifest.is_file():
        raise DataError(manifest, "manifest file does not exist")
    header, rows = read_rows(manifest)
    absent = [c for c in REQUIRED_COLUMNS if c not in header]
    if absent:
        raise DataError(
            manifest,
            f"missing column(s) {', '.join(absent)}; a manifest needs id, split, label and modality columns",
        )
    modalities = modality_columns(manifest, header, rows)
    grouped = GROUP_COLUMN in header
    check_rows(manifest, rows, modalities, (GROUP_COLUMN,) if grouped else ())
    if grouped:
        check_groups(manifest, rows)
    target, class_names, values = label_values(manifest, rows, options.target)

    samples, missing = [], []
    for (_, row), value in zip(rows, values, strict=True):
        fields, absent = sample_fields(manifest, row, modalities)
        missing += [cell for _, cell in absent]
        if grouped:
            fields["group"] = row[GROUP_COLUMN]
        samples.append(Sample(id=row["id"], split=row["split"], label=value, **fields))
    if missing:
        raise DataError(
            manifest, f"{len(missing)} listed file(s) do not exist: {name_few(missing)}"
        )

    if not any(s.split == "valid" for s in samples):
        group_of = (lambda s: s.group) if grouped else (lambda s: s.id)
        samples = carve_valid(samples, group_of, options.seed, manifest)
    info = DatasetInfo(
        name=name,
        target=target,
        modalities={column: MODALITY_COLUMNS[column] for column in modalities},
        class_names=class_names,
    )
    return build_dataset(info, samples, manifest.parent, manifest, sources=[manifest])
