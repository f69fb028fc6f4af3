"""Where a model's errors on ``synth`` lie: accuracy per factor, split by each sample's corruption.

In ``CORRUPTION_RATE`` of ``synth``'s samples one modality states one factor wrongly while
the other two state it rightly (``recipe.py``), so a model that weighs the modalities can
still read the factor. :func:`corruption_breakdown` measures whether it does: for every
(corrupted modality, corrupted level) the share of those samples whose *corrupted* factor
the model predicts right. Near 1 for one modality and near 0 for another means the model
reads that factor from the second modality alone (it follows its corruption and ignores
the first), not that it weighs evidence. The class index is ``4 * global + 2 * mid +
local`` (``recipe.CLASS_NAMES``), so factor ``level`` of a class is bit ``LEVEL_BIT[level]``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from clcr_cli.datasets.synth.recipe import LEVELS
from clcr_cli.errors import DataError

LEVEL_BIT = {"local": 0, "mid": 1, "global": 2}  # the bit of each factor in the class index


@dataclass(frozen=True)
class CorruptionBreakdown:
    """One run's predictions on ``synth``, split by corruption (module docstring)."""

    accuracy: float  # all samples
    clean: float  # samples without a corruption
    corrupted: float  # samples with one (class accuracy)
    factor_accuracy: dict[str, float]  # per level: the factor right, over all samples
    by_corruption: dict[tuple[str, str], tuple[int, float]]  # (modality, level): (samples, corrupted factor right)


def _rows(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        absent = [c for c in columns if c not in (reader.fieldnames or [])]
        if absent:
            raise DataError(path, f"no column {absent[0]!r}")
        return list(reader)


def corruption_breakdown(predictions: Path, transcripts: Path) -> CorruptionBreakdown:
    """Break down ``predictions`` (an eval's ``predictions.csv``) by the corruption of each
    sample recorded in ``transcripts`` (the ``transcripts.csv`` of the same ``synth`` data)."""
    meta = {r["id"]: r for r in _rows(transcripts, ("id", "corrupted_modality", "corrupted_level"))}
    preds = _rows(predictions, ("id", "label", "prediction"))
    if not preds:
        raise DataError(predictions, "no predictions")
    unknown = [p["id"] for p in preds if p["id"] not in meta]
    if unknown:
        raise DataError(predictions, f"sample {unknown[0]} is not in {transcripts}")

    def right(p: dict[str, str], level: str) -> bool:
        bit = LEVEL_BIT[level]
        return (int(p["label"]) >> bit) & 1 == (int(p["prediction"]) >> bit) & 1

    def share(flags: list[bool]) -> float:
        return sum(flags) / len(flags) if flags else float("nan")

    correct = [p["label"] == p["prediction"] for p in preds]
    corrupted = [bool(meta[p["id"]]["corrupted_level"]) for p in preds]
    groups: dict[tuple[str, str], list[bool]] = {}
    for p in preds:
        m = meta[p["id"]]
        if m["corrupted_level"]:
            groups.setdefault((m["corrupted_modality"], m["corrupted_level"]), []).append(right(p, m["corrupted_level"]))
    return CorruptionBreakdown(
        accuracy=share(correct),
        clean=share([c for c, k in zip(correct, corrupted, strict=True) if not k]),
        corrupted=share([c for c, k in zip(correct, corrupted, strict=True) if k]),
        factor_accuracy={level: share([right(p, level) for p in preds]) for level in LEVELS},
        by_corruption={key: (len(v), share(v)) for key, v in sorted(groups.items())},
    )
