"""FSDD-robust: speaker-independent FSDD + handwritten digits, one modality ruined in many samples.

Most tests run on a small FSDD-like folder generated here (4 speakers, 10 recordings of
each digit each); one runs on the real FSDD where the shared data folder has it, and
skips elsewhere, saying so.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile

from clcr_cli.datasets import load_dataset
from clcr_cli.datasets.base import DatasetOptions
from clcr_cli.datasets.fsdd_robust import (
    corruptions,
    occlude,
    occluder_side,
    pixel_sigma,
    ruin_image,
    snr_db,
    upscale,
    write_fsdd_robust_manifest,
)
from clcr_cli.errors import ConfigError, DataError
from clcr_cli.features.perturb import noisy_frame, sample_rng

REPO = Path(__file__).resolve().parents[2]
CANDIDATES = [Path(p) for p in (os.environ.get("CLCR_FSDD"),) if p] + [
    REPO.parent / "shared" / "data" / "fsdd",
    REPO / "shared" / "data" / "fsdd",
]
FSDD = next((p for p in CANDIDATES if (p / "recordings").is_dir()), None)
SPEAKERS = ("dan", "amy", "cat", "bob")  # by name: amy (test), bob (valid), cat and dan (train)
PER = 10  # recordings of each digit by each fake speaker


@pytest.fixture(scope="module")
def fake_fsdd(tmp_path_factory) -> Path:
    """An FSDD-like folder: ``recordings/{digit}_{speaker}_{index}.wav``, 8 kHz PCM_16,
    0.3-0.6 s of a voiced tone whose pitch follows the digit, and a non-matching file."""
    root = tmp_path_factory.mktemp("fsdd")
    folder = root / "recordings"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for s, speaker in enumerate(SPEAKERS):
        for digit in range(10):
            for index in range(PER):
                t = np.arange(int(8000 * rng.uniform(0.3, 0.6))) / 8000
                f0 = 120 + 20 * digit + 10 * s
                y = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 5))
                y = 0.3 * y * np.hanning(t.size) + 0.005 * rng.standard_normal(t.size)
                soundfile.write(str(folder / f"{digit}_{speaker}_{index}.wav"), y, 8000, subtype="PCM_16")
    (folder / "README.wav").write_bytes(b"not a recording")
    return root


@pytest.fixture(scope="module")
def written(fake_fsdd, tmp_path_factory) -> Path:
    return write_fsdd_robust_manifest(fake_fsdd, tmp_path_factory.mktemp("out") / "robust", seed=0)


def rows_of(manifest: Path) -> list[dict[str, str]]:
    with manifest.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_splits_are_speaker_disjoint_and_the_group_is_the_speaker(written):
    rows = rows_of(written)
    assert list(rows[0]) == [
        "id", "split", "label", "audio", "image", "group", "corruption", "severity", "source_image",
    ]
    splits_of_speaker: dict[str, set[str]] = {}
    for row in rows:
        digit, speaker, _index = row["id"].split("_")
        assert row["group"] == speaker and row["label"] == digit
        splits_of_speaker.setdefault(speaker, set()).add(row["split"])
    assert splits_of_speaker == {
        "amy": {"test"}, "bob": {"valid"}, "cat": {"train"}, "dan": {"train"},
    }
    # every recording of the fake speakers is under the caps: all 4 x 10 x 10 are used
    assert Counter(r["split"] for r in rows) == {"train": 200, "valid": 100, "test": 100}
    # one image per sample, none in two samples (so none in two splits)
    assert len({r["source_image"] for r in rows}) == len(rows)


def test_test_speaker_rotates_and_valid_is_the_next_by_name(fake_fsdd, tmp_path):
    rows = rows_of(write_fsdd_robust_manifest(fake_fsdd, tmp_path, seed=0, test_speaker="dan"))
    assert {(r["group"], r["split"]) for r in rows} == {
        ("dan", "test"), ("amy", "valid"), ("bob", "train"), ("cat", "train"),
    }
    with pytest.raises(ConfigError, match="test_speaker 'eve' is not one of amy, bob, cat, dan"):
        write_fsdd_robust_manifest(fake_fsdd, tmp_path, test_speaker="eve")


def test_corruption_shares_are_exact_in_every_split_and_digit(written):
    rows = rows_of(written)
    for split in ("train", "valid", "test"):
        counts = Counter(r["corruption"] for r in rows if r["split"] == split)
        n = sum(counts.values())
        assert counts == {"none": 0.4 * n, "audio": 0.3 * n, "image": 0.3 * n}
        for digit in range(10):
            per_digit = Counter(
                r["corruption"] for r in rows if r["split"] == split and r["label"] == str(digit)
            )
            m = sum(per_digit.values())
            assert per_digit == {"none": 0.4 * m, "audio": 0.3 * m, "image": 0.3 * m}
    for row in rows:
        severity = float(row["severity"])
        assert (severity == 0) == (row["corruption"] == "none") and 0 <= severity < 1
    assert corruptions(written)[rows[0]["id"]] == (rows[0]["corruption"], float(rows[0]["severity"]))


def test_a_ruined_recording_has_the_documented_snr_against_its_source(written, fake_fsdd):
    folder = written.parent
    ruined = [r for r in rows_of(written) if r["corruption"] == "audio"]
    assert len(ruined) == 120
    for row in ruined:
        clean, rate = soundfile.read(str(fake_fsdd / "recordings" / f"{row['id']}.wav"), dtype="float64")
        info = soundfile.info(str(folder / row["audio"]))
        assert row["audio"] == f"audio/{row['id']}.wav"
        assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "FLOAT") and rate == 8000
        noisy, _ = soundfile.read(str(folder / row["audio"]), dtype="float64")
        assert noisy.shape == clean.shape
        noise = noisy - clean
        measured = 10 * np.log10(np.mean(clean**2) / np.mean(noise**2))
        expected = snr_db(float(row["severity"]))
        assert -20 <= expected <= -10
        # white noise of the nominal power: the realised power is within a few % of it
        assert abs(measured - expected) < 0.5
        # white: no spectral tilt (the first and second half of the band hold ~equal power)
        spectrum = np.abs(np.fft.rfft(noise)) ** 2
        half = spectrum.size // 2
        assert 0.8 < spectrum[1:half].mean() / spectrum[half:].mean() < 1.25
    for row in rows_of(written):
        if row["corruption"] != "audio":  # clean audio: the original recording itself
            assert Path(row["audio"]) == (fake_fsdd / "recordings" / f"{row['id']}.wav").resolve()


def test_a_ruined_image_is_occluded_and_noisy_as_documented(written):
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = written.parent
    differences = []
    for row in rows_of(written):
        image = cv2.imread(str(folder / row["image"]), cv2.IMREAD_UNCHANGED)
        assert image.shape == (32, 32) and image.dtype == np.uint8
        source = int(row["source_image"])
        assert digits.target[source] == int(row["label"])
        clean = upscale(digits.images[source])
        # nearest-neighbour upscaling: every 8x8 pixel is a 4x4 block, 0..16 -> 0..255
        assert np.array_equal(clean, np.kron(np.round(digits.images[source] * 255 / 16), np.ones((4, 4))))
        if row["corruption"] != "image":
            assert np.array_equal(image, clean)
            continue
        severity = float(row["severity"])
        # the documented recipe, step by step: the square from the sample's "image" stream,
        # then Gaussian pixel noise from the same stream
        rng = sample_rng(0, row["id"], "image")
        side = occluder_side(severity)
        top, left = int(rng.integers(0, 32 - side + 1)), int(rng.integers(0, 32 - side + 1))
        occluded = clean.copy()
        occluded[top : top + side, left : left + side] = 0
        assert np.array_equal(image, noisy_frame(occluded, pixel_sigma(severity), 0.0, rng))
        differences.append(np.abs(image.astype(float) - clean).mean())
    assert len(differences) == 120 and min(differences) > 40  # far from the clean digit


def test_occlusion_covers_most_of_the_image_and_the_noise_is_heavy():
    rng = np.random.default_rng(1)
    white = np.full((32, 32), 255, np.uint8)
    for severity in (0.0, 0.3, 0.7, 1.0):
        side = occluder_side(severity)
        assert 28 <= side <= 32 and side**2 / 32**2 >= 0.76
        occluded = occlude(white, side, rng)
        black = np.argwhere(occluded == 0)
        assert len(black) == side**2  # one square, inside the image
        (top, left), (bottom, right) = black.min(axis=0), black.max(axis=0)
        assert (bottom - top + 1, right - left + 1) == (side, side)
        assert (occluded[12:20, 12:20] == 0).all()  # the centre is always hidden
    # the documented ends of the ranges (severity 0 and 1)
    assert (occluder_side(0.0), occluder_side(1.0)) == (28, 32)
    assert (pixel_sigma(0.0), pixel_sigma(1.0)) == (96.0, 160.0)
    assert (snr_db(0.0), snr_db(1.0)) == (-10.0, -20.0)
    # the whole ruin on a white image: most of it dark, the rest noisy
    ruined = ruin_image(white, 0.5, np.random.default_rng(2)).astype(float)
    assert (ruined < 128).mean() > 0.6 and ruined.std() > 60


def test_the_same_arguments_write_byte_identical_files(fake_fsdd, tmp_path, written):
    again = write_fsdd_robust_manifest(fake_fsdd, tmp_path / "again", seed=0)
    assert again.read_bytes() == written.read_bytes()
    media = sorted(p.relative_to(written.parent) for p in written.parent.rglob("*.*"))
    assert media == sorted(p.relative_to(again.parent) for p in again.parent.rglob("*.*"))
    for relative in media:
        assert (again.parent / relative).read_bytes() == (written.parent / relative).read_bytes()
    other = write_fsdd_robust_manifest(fake_fsdd, tmp_path / "other", seed=1)
    assert other.read_bytes() != written.read_bytes()


def test_writing_it_again_leaves_every_file_as_it_was(fake_fsdd, tmp_path):
    """Media are fingerprinted by size and time: a rewrite would void the extraction."""
    manifest = write_fsdd_robust_manifest(fake_fsdd, tmp_path, seed=0)
    files = sorted(tmp_path.rglob("*.*"))
    before = {p: p.stat().st_mtime_ns for p in files}
    image = next(p for p in files if p.suffix == ".png")
    image.write_bytes(b"not a png")  # a damaged file is written again
    assert write_fsdd_robust_manifest(fake_fsdd, tmp_path, seed=0) == manifest
    assert {p: p.stat().st_mtime_ns for p in files if p != image} == {p: t for p, t in before.items() if p != image}
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_manifest_loads_as_a_grouped_dataset(written):
    dataset = load_dataset("fsdd-robust", DatasetOptions(manifest=written, root=written.parent))
    assert dataset.info.class_names == tuple(str(d) for d in range(10))
    assert dataset.info.modalities == {"audio": "audio", "image": "video"}
    assert len(dataset.samples) == 400
    by_split = {s.split: set() for s in dataset.samples}
    for s in dataset.samples:
        by_split[s.split].add(s.group)
        assert s.group == s.id.split("_")[1] and s.audio.is_file() and s.video.is_file()
    assert by_split == {"train": {"cat", "dan"}, "valid": {"bob"}, "test": {"amy"}}


def test_argument_and_data_checks(fake_fsdd, tmp_path):
    with pytest.raises(DataError, match="recordings: missing folder: expected FSDD recordings"):
        write_fsdd_robust_manifest(tmp_path / "nowhere", tmp_path / "out")
    few = tmp_path / "few" / "recordings"
    few.mkdir(parents=True)
    for name in ("0_amy_0.wav", "1_bob_0.wav"):
        (few / name).write_bytes((fake_fsdd / "recordings" / "0_amy_0.wav").read_bytes())
    with pytest.raises(ConfigError, match="needs at least 3 speakers .* found 2: amy, bob"):
        write_fsdd_robust_manifest(few.parent, tmp_path / "out")


needs_fsdd = pytest.mark.skipif(
    FSDD is None,
    reason=f"FSDD not found (looked in {', '.join(map(str, CANDIDATES))}; set CLCR_FSDD)",
)


@needs_fsdd
def test_real_fsdd_robust_manifest(tmp_path):
    manifest = write_fsdd_robust_manifest(FSDD, tmp_path / "fsdd-robust", seed=0)
    rows = rows_of(manifest)
    assert Counter(r["split"] for r in rows) == {"train": 1000, "valid": 200, "test": 500}
    assert {(r["split"], r["group"]) for r in rows} == {
        ("test", "george"), ("valid", "jackson"), ("train", "lucas"),
        ("train", "nicolas"), ("train", "theo"), ("train", "yweweler"),
    }
    for split, n in (("train", 1000), ("valid", 200), ("test", 500)):
        counts = Counter(r["corruption"] for r in rows if r["split"] == split)
        assert counts == {"none": 0.4 * n, "audio": 0.3 * n, "image": 0.3 * n}
    assert len({r["source_image"] for r in rows}) == 1700
    row = next(r for r in rows if r["corruption"] == "audio" and r["split"] == "test")
    clean, _ = soundfile.read(str(FSDD / "recordings" / f"{row['id']}.wav"), dtype="float64")
    noisy, rate = soundfile.read(str(manifest.parent / row["audio"]), dtype="float64")
    measured = 10 * np.log10(np.mean(clean**2) / np.mean((noisy - clean) ** 2))
    assert rate == 8000 and abs(measured - snr_db(float(row["severity"]))) < 0.5
    dataset = load_dataset("fsdd-robust", DatasetOptions(manifest=manifest, root=manifest.parent))
    assert len(dataset.samples) == 1700 and dataset.info.num_classes == 10
