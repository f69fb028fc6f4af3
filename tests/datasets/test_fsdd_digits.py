"""Real data through the manifest path: FSDD spoken digits paired with sklearn's handwritten digits.

FSDD (Free Spoken Digit Dataset, CC BY-SA 4.0) lives in the shared data folder on CI and
the project machines; elsewhere the real-data tests skip and say so.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile

from clcr_cli.datasets import load_dataset
from clcr_cli.datasets.base import DatasetOptions
from clcr_cli.datasets.fsdd_digits import write_fsdd_digits_manifest
from clcr_cli.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]
CANDIDATES = [Path(p) for p in (os.environ.get("CLCR_FSDD"),) if p] + [
    REPO.parent / "shared" / "data" / "fsdd",
    REPO / "shared" / "data" / "fsdd",
]
FSDD = next((p for p in CANDIDATES if (p / "recordings").is_dir()), None)
needs_fsdd = pytest.mark.skipif(
    FSDD is None,
    reason=f"FSDD not found (looked in {', '.join(map(str, CANDIDATES))}; set CLCR_FSDD)",
)


@needs_fsdd
def test_fsdd_digits_manifest_loads_with_fsdd_splits(tmp_path):
    from sklearn.datasets import load_digits

    manifest = write_fsdd_digits_manifest(FSDD, tmp_path / "av-digits", per_digit=6, seed=0)
    dataset = load_dataset("fsdd-digits", DatasetOptions(manifest=manifest))
    assert dataset.info.class_names == tuple(str(d) for d in range(10))
    assert dataset.info.modalities == {"audio": "audio", "image": "video"}
    assert len(dataset.samples) == 60
    counts = {
        split: sum(s.split == split for s in dataset.samples)
        for split in ("train", "valid", "test")
    }
    assert counts == {"train": 40, "valid": 10, "test": 10}

    digits = load_digits()
    expected = {
        d: [
            np.round(img * (255 / 16)).astype(np.uint8) for img in digits.images[digits.target == d]
        ]
        for d in range(10)
    }
    used_images: dict[str, set[bytes]] = {"train": set(), "valid": set(), "test": set()}
    for s in dataset.samples:
        digit, _speaker, index = s.id.split("_")
        assert s.label == float(digit)
        assert s.split == ("test" if int(index) < 5 else "valid" if int(index) < 10 else "train")
        assert s.audio == (FSDD / "recordings" / f"{s.id}.wav").resolve()
        image = cv2.imread(str(s.video), cv2.IMREAD_GRAYSCALE)
        assert image.shape == (8, 8)
        assert any(np.array_equal(image, candidate) for candidate in expected[int(digit)])
        used_images[s.split].add(image.tobytes())
    assert not used_images["train"] & (used_images["valid"] | used_images["test"])
    assert soundfile.info(str(dataset.samples[0].audio)).samplerate == 8000

    again = write_fsdd_digits_manifest(FSDD, tmp_path / "again", per_digit=6, seed=0)
    assert again.read_text() == manifest.read_text().replace(
        str(tmp_path / "av-digits"), str(tmp_path / "again")
    )


@needs_fsdd
def test_fsdd_digits_argument_checks(tmp_path):
    with pytest.raises(ConfigError, match="per_digit must be at least 3"):
        write_fsdd_digits_manifest(FSDD, tmp_path, per_digit=2, seed=0)
    with pytest.raises(ConfigError, match="per_digit must be at most"):
        write_fsdd_digits_manifest(FSDD, tmp_path, per_digit=1000, seed=0)


def test_missing_fsdd_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="recordings: missing folder: expected FSDD recordings"):
        write_fsdd_digits_manifest(tmp_path / "nowhere", tmp_path / "out", per_digit=6, seed=0)


@needs_fsdd
def test_fsdd_digits_extract_real_audio_and_images(tmp_path):
    """The real recordings and digit images go through the whole extract stage."""
    from clcr_cli.config import extract_config
    from clcr_cli.stages.extract import run_extract
    from clcr_cli.store import FeatureStore

    manifest = write_fsdd_digits_manifest(FSDD, tmp_path / "av-digits", per_digit=3, seed=0)
    cfg = extract_config({}, {"dataset": "fsdd-digits", "manifest": str(manifest), "max_seconds": 1.0,
                              "frame_size": 32, "part_size": 8})
    with FeatureStore(run_extract(cfg, tmp_path / "wd")) as store:
        assert len(store) == 30 and store.num_classes == 10
        assert {m: i.kind for m, i in store.modalities.items()} == {"audio": "sequence", "image": "frames"}
        assert [int(i.split("_")[0]) for i in store.ids] == [int(x) for x in store.labels]
        audio, audio_len = store.read("audio")
        # FSDD clips last 0.2-1 s: at 16 kHz and hop 160 that is about 20-101 frames, all real sound
        assert audio.shape[1:] == (101, 64) and audio_len.min() >= 15 and audio_len.max() <= 101
        assert all(audio[i, : audio_len[i]].max() > audio[i, : audio_len[i]].min() + 20 for i in range(30))
        images, image_len = store.read("image")
        assert images.shape[1:] == (1, 32, 32, 3) and (image_len == 1).all()
        assert images.std() > 10  # real digit strokes, not blank frames
