"""corruption_breakdown: accuracy of a run on synth split by each sample's corruption."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from clcr_cli.datasets.synth.analysis import LEVEL_BIT, corruption_breakdown
from clcr_cli.datasets.synth.recipe import CLASS_NAMES, FACTOR_NAMES
from clcr_cli.errors import DataError


def _write(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_level_bits_match_the_class_names():
    for c, name in enumerate(CLASS_NAMES):
        words = dict(zip(("global", "mid", "local"), name.split("-"), strict=True))
        for level, bit in LEVEL_BIT.items():
            assert FACTOR_NAMES[level][(c >> bit) & 1] == words[level]


def test_breakdown_counts_the_corrupted_factor_only(tmp_path: Path):
    transcripts = _write(tmp_path / "t.csv", ["id", "corrupted_modality", "corrupted_level"], [
        ["a", "", ""], ["b", "", ""], ["c", "text", "local"], ["d", "text", "local"], ["e", "audio", "global"],
    ])
    # a right; b wrong in its global bit; c wrong in local (follows the text); d wrong only in
    # mid (its corrupted local factor is right); e right
    predictions = _write(tmp_path / "p.csv", ["id", "split", "label", "prediction"], [
        ["a", "test", 5, 5], ["b", "test", 7, 3], ["c", "test", 1, 0], ["d", "test", 0, 2], ["e", "test", 4, 4],
    ])
    b = corruption_breakdown(predictions, transcripts)
    assert b.accuracy == pytest.approx(2 / 5)
    assert b.clean == pytest.approx(1 / 2)
    assert b.corrupted == pytest.approx(1 / 3)
    assert b.factor_accuracy == pytest.approx({"local": 4 / 5, "mid": 4 / 5, "global": 4 / 5})
    assert b.by_corruption == {("audio", "global"): (1, 1.0), ("text", "local"): (2, 0.5)}


def test_breakdown_without_corrupted_samples_is_nan(tmp_path: Path):
    transcripts = _write(tmp_path / "t.csv", ["id", "corrupted_modality", "corrupted_level"], [["a", "", ""]])
    predictions = _write(tmp_path / "p.csv", ["id", "label", "prediction"], [["a", 3, 3]])
    b = corruption_breakdown(predictions, transcripts)
    assert b.clean == 1.0 and math.isnan(b.corrupted) and b.by_corruption == {}


def test_breakdown_names_the_file_of_a_bad_input(tmp_path: Path):
    transcripts = _write(tmp_path / "t.csv", ["id", "corrupted_modality", "corrupted_level"], [["a", "", ""]])
    other = _write(tmp_path / "p.csv", ["id", "label", "prediction"], [["zz", 0, 0]])
    with pytest.raises(DataError, match=r"p\.csv.*sample zz"):
        corruption_breakdown(other, transcripts)
    no_column = _write(tmp_path / "q.csv", ["id", "label"], [["a", 0]])
    with pytest.raises(DataError, match=r"q\.csv.*'prediction'"):
        corruption_breakdown(no_column, transcripts)
