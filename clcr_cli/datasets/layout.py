"""Building blocks shared by the real-dataset loaders: layout checks, split files, skips.

Every loader returns a :class:`LoadedDataset`: a :class:`~clcr_cli.datasets.base.Dataset`
whose ``samples`` are all usable, plus ``skipped``, the clips it left out and why (a known
bad clip, a file without its partner, a video missing from a YouTube-scraped copy).
``clcr_cli.datasets.skipped_samples(dataset)`` reads them for any Dataset.

Validation splits: the stage needs train/valid/test. Where a dataset ships none,
:func:`carve_valid` moves whole groups (a speaker, a UCF101 source video, or a single
clip) from train to valid: ``round(fraction * n_groups)`` groups (at least one), chosen
by a permutation seeded with ``options.seed``, so the same seed gives the same split.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from clcr_cli.datasets.base import SPLITS, Dataset, DatasetInfo, DatasetOptions, Sample
from clcr_cli.errors import ConfigError, DataError

VALID_FRACTION = 0.1  # share of train groups carved into valid where a dataset has no valid split
SHOWN = 5  # how many offending names an error message lists


class Skipped(NamedTuple):
    """A clip the loader left out, and why (one line for skipped.csv)."""

    id: str
    reason: str


@dataclass(frozen=True)
class LoadedDataset(Dataset):
    """A Dataset plus the clips that were found but left out, with reasons."""

    skipped: tuple[Skipped, ...] = ()


def require_root(options: DatasetOptions, dataset: str) -> Path:
    """The dataset folder from ``options.root``; a ConfigError/DataError when unusable."""
    if options.root is None:
        raise ConfigError(f"dataset '{dataset}' needs --root, the folder that holds it")
    root = Path(options.root)
    if not root.is_dir():
        raise DataError(root, f"{dataset} root folder does not exist")
    return root


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(path, f"missing folder: expected {what}")
    return path


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(path, f"missing file: expected {what}")
    return path


def name_few(names: Iterable[str]) -> str:
    """'a, b, c, ...' listing at most SHOWN names (for one-line errors)."""
    names = list(names)
    shown = ", ".join(names[:SHOWN])
    return shown + (", ..." if len(names) > SHOWN else "")


def read_lines(path: Path) -> list[str]:
    """Non-blank lines of a text list, CRLF/LF and a UTF-8 BOM tolerated, ends stripped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(path, f"not UTF-8 text ({err.reason} at byte {err.start})") from err
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_csv_rows(path: Path) -> list[list[str]]:
    """Rows of a header-less or headed CSV (the caller decides), CRLF tolerated."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            return [[cell.strip() for cell in row] for row in csv.reader(f) if any(row)]
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(path, f"not a readable CSV file ({err})") from err


def files_by_stem(
    folder: Path, suffixes: tuple[str, ...], recursive: bool = False
) -> dict[str, Path]:
    """Map file stem -> path for files in ``folder`` whose suffix (any case) is in ``suffixes``.

    With ``recursive`` sub-folders are searched too; a stem found twice is a DataError
    (the loader could not tell which file is the clip).
    """
    found: dict[str, Path] = {}
    pattern = "**/*" if recursive else "*"
    for path in sorted(folder.glob(pattern)):
        if path.suffix.lower() in suffixes and path.is_file():
            if path.stem in found:
                raise DataError(path, f"clip '{path.stem}' found twice (also {found[path.stem]})")
            found[path.stem] = path
    return found


def carve_valid(
    samples: list[Sample], group_of: Callable[[Sample], str], seed: int, source: Path
) -> list[Sample]:
    """Move ~VALID_FRACTION of the train groups (all their samples) to the valid split.

    ``group_of`` keeps related samples together (CREMA-D: the actor, so valid is
    speaker-independent of train). Groups are ordered by name, then permuted with
    ``numpy.random.default_rng(seed)``: deterministic for a seed.
    """
    groups = sorted({group_of(s) for s in samples if s.split == "train"})
    if len(groups) < 2:
        raise DataError(
            source, f"cannot carve a valid split from {len(groups)} train group(s); need at least 2"
        )
    n_valid = max(1, round(VALID_FRACTION * len(groups)))
    order = np.random.default_rng(seed).permutation(len(groups))
    valid_groups = {groups[i] for i in order[:n_valid]}
    return [
        dataclasses.replace(s, split="valid")
        if s.split == "train" and group_of(s) in valid_groups
        else s
        for s in samples
    ]


def build_dataset(
    info: DatasetInfo,
    samples: list[Sample],
    root: Path,
    source: Path,
    skipped: Iterable[Skipped] = (),
    sources: Iterable[Path] = (),
) -> LoadedDataset:
    """Check the invariants every loader promises, then wrap the result.

    Ids are unique, every split is one of SPLITS and non-empty, labels are finite, class
    labels index ``info.class_names``, and there are at least two distinct labels (one
    class, or one regression value, leaves nothing to learn). ``source`` is the file or
    folder named in errors; ``sources`` the files the loader read (``Dataset.sources``).
    """
    duplicates = [i for i, n in Counter(s.id for s in samples).items() if n > 1]
    if duplicates:
        raise DataError(source, f"{len(duplicates)} duplicate sample id(s): {name_few(duplicates)}")
    counts = Counter(s.split for s in samples)
    unknown = sorted(set(counts) - set(SPLITS))
    if unknown:
        raise DataError(
            source, f"unknown split value(s) {name_few(unknown)}; allowed: {', '.join(SPLITS)}"
        )
    empty = [split for split in SPLITS if counts[split] == 0]
    if empty:
        raise DataError(source, f"no samples in split(s) {', '.join(empty)} ({dict(counts)} found)")
    not_finite = [s.id for s in samples if not math.isfinite(s.label)]
    if not_finite:
        raise DataError(
            source,
            f"{len(not_finite)} label(s) are NaN or infinite (missing values?): {name_few(not_finite)}",
        )
    if info.target == "classification":
        bad = [s.id for s in samples if s.label not in range(info.num_classes)]
        if bad:
            raise DataError(
                source, f"{len(bad)} label(s) outside 0..{info.num_classes - 1}: {name_few(bad)}"
            )
    labels = {s.label for s in samples}
    if len(labels) < 2:
        (label,) = labels
        if info.target == "classification":
            only, needed = f"class '{info.class_names[int(label)]}'", "two classes"
        else:
            only, needed = f"the label {label:g}", "two distinct values"
        raise DataError(
            source, f"all {len(samples)} samples have {only}; {info.target} needs at least {needed}"
        )
    return LoadedDataset(
        info=info, samples=samples, root=root, sources=tuple(sources), skipped=tuple(skipped)
    )
