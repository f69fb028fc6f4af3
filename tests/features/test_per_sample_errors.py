"""Decode failures through the extract stage: one line and exit 2, or skipped.csv with --on-error skip.

A float WAV holding NaN, a PNG declaring 30000 x 30000 pixels and a .txt that is not UTF-8
each fail their own sample only; a manifest's bad labels and target fail at extract time.
"""

from __future__ import annotations

import csv
import dataclasses
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile
from typer.testing import CliRunner

from clcr_cli.cli import app
from clcr_cli.config import extract_config
from clcr_cli.stages.extract import run_extract
from clcr_cli.store import FeatureStore

BAD = {  # sample id -> (its bad file, the problem the error names)
    "s1": ("nan.wav", "audio holds NaN or infinite samples"),
    "s2": (
        "bomb.png",
        "30000x30000 pixels is more than the 100,000,000 allowed; refused before decoding",
    ),
    "s3": ("latin1.txt", "not UTF-8 text (invalid continuation byte at byte 3)"),
}


def png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Nine samples (audio, image, text); s1-s3 each have one bad file (BAD)."""
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)
    rows = []
    for i in range(9):
        soundfile.write(tmp_path / f"a{i}.wav", tone, 16000, subtype="FLOAT")
        cv2.imwrite(str(tmp_path / f"i{i}.png"), np.full((8, 8, 3), 30 * i, np.uint8))
        (tmp_path / f"t{i}.txt").write_text(f"sample number {i}", encoding="utf-8")
        split = "train" if i < 6 else ("valid" if i == 6 else "test")
        rows.append([f"s{i}", split, i % 2, f"a{i}.wav", f"i{i}.png", f"t{i}.txt"])
    nan_tone = tone.copy()
    nan_tone[100] = np.nan
    soundfile.write(tmp_path / "nan.wav", nan_tone, 16000, subtype="FLOAT")
    (tmp_path / "bomb.png").write_bytes(png_header_only(30000, 30000))
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9 noir")
    rows[1][3], rows[2][4], rows[3][5] = "nan.wav", "bomb.png", "latin1.txt"
    with open(tmp_path / "data.csv", "w", newline="") as f:
        csv.writer(f).writerows([["id", "split", "label", "audio", "image", "text"], *rows])
    return tmp_path


def extract_args(folder: Path, *extra: str) -> list[str]:
    return [
        "extract",
        "--dataset",
        "mine",
        "--manifest",
        str(folder / "data.csv"),
        "--workdir",
        str(folder / "work"),
        *extra,
    ]


def test_each_bad_file_is_skipped_and_recorded(folder: Path) -> None:
    cfg = extract_config(
        {},
        {
            "dataset": "mine",
            "manifest": str(folder / "data.csv"),
            "part_size": 4,
            "max_seconds": 0.5,
            "frame_size": 8,
            "text_max_len": 16,
        },
    )
    store = run_extract(dataclasses.replace(cfg, on_error="skip"), folder / "work")
    with FeatureStore(store) as features:
        assert sorted(features.ids) == ["s0", "s4", "s5", "s6", "s7", "s8"]
    with open(store.parent / "skipped.csv", newline="") as f:
        skipped = {row["id"]: (row["file"], row["reason"]) for row in csv.DictReader(f)}
    assert skipped == {i: (str(folder / name), problem) for i, (name, problem) in BAD.items()}


def relabel(folder: Path, label: str, ids: set[str] | None) -> None:
    """Give samples ``ids`` (all when None) the label ``label`` in the manifest."""
    with open(folder / "data.csv", newline="") as f:
        rows = list(csv.reader(f))
    for row in rows[1:]:
        if ids is None or row[0] in ids:
            row[2] = label
    with open(folder / "data.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)


@pytest.mark.parametrize(
    ("relabelled", "extra", "message"),
    [
        (None, (), f"nan.wav: {BAD['s1'][1]}"),  # --on-error fail: the first bad sample
        (
            None,
            ("--target", "clasification"),
            "--target: must be one of classification, regression, not 'clasification'",
        ),
        (("nan", {"s4"}), (), "data.csv: row 6: label 'nan' is NaN or infinite (a missing value?)"),
        (
            ("1", None),
            (),
            "data.csv: all 9 samples have class '1'; classification needs at least two classes",
        ),
    ],
)
def test_cli_stops_with_one_line_and_exit_2(folder: Path, relabelled, extra, message) -> None:
    if relabelled is not None:
        relabel(folder, *relabelled)
    result = CliRunner().invoke(app, extract_args(folder, *extra))
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2, result.output
    assert len(errors) == 1 and message in errors[0]
    assert "Traceback" not in result.output
