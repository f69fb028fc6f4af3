"""A real audio-visual digits task in the style of AV-MNIST, written as a clcr manifest.

Audio: the Free Spoken Digit Dataset (FSDD; Z. Jackson et al., github.com/Jakobovski/
free-spoken-digit-dataset, CC BY-SA 4.0): 8 kHz recordings ``{digit}_{speaker}_{index}.wav``
of 6 speakers. Image: scikit-learn's bundled ``load_digits()`` handwritten digits (8x8,
UCI optdigits), written as grey PNGs. Each recording is paired with an image of the same
digit; the pair's label is the digit.

Splits follow FSDD's convention: recordings 0-4 of each speaker are the test set; we
take 5-9 as valid and 10-49 as train. Per digit, ``per_digit`` recordings are drawn
(seeded): ``max(1, per_digit // 5)`` each from test and valid, the rest from train.
Images are drawn per digit from one seeded permutation, so no image is in two splits.
The manifest (columns id, split, label, audio, image) registers as
``clcr extract --dataset fsdd-digits --manifest <out_dir>/manifest.csv``.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import cv2
import numpy as np

from clcr_cli.errors import ConfigError, DataError

RECORDING = re.compile(r"^(?P<digit>\d)_(?P<speaker>[a-z]+)_(?P<index>\d+)$")
SPLIT_OF_INDEX = (("test", range(0, 5)), ("valid", range(5, 10)), ("train", range(10, 50)))


def fsdd_recordings(fsdd_root: Path) -> dict[tuple[int, str], list[Path]]:
    """(digit, split) -> recordings, sorted by name, from ``<fsdd_root>/recordings``."""
    folder = fsdd_root / "recordings"
    if not folder.is_dir():
        raise DataError(
            folder, "missing folder: expected FSDD recordings {digit}_{speaker}_{index}.wav"
        )
    pools: dict[tuple[int, str], list[Path]] = {}
    for path in sorted(folder.glob("*.wav")):
        match = RECORDING.match(path.stem)
        if match is None:
            continue
        index = int(match["index"])
        split = next((s for s, indices in SPLIT_OF_INDEX if index in indices), None)
        if split is not None:
            pools.setdefault((int(match["digit"]), split), []).append(path)
    return pools


def write_fsdd_digits_manifest(fsdd_root: Path, out_dir: Path, per_digit: int, seed: int) -> Path:
    """Write ``out_dir/manifest.csv`` and ``out_dir/images/*.png``; return the manifest path."""
    from sklearn.datasets import load_digits

    if per_digit < 3:
        raise ConfigError(
            f"per_digit must be at least 3 (one each for train, valid, test), not {per_digit}"
        )
    n_held_out = max(1, per_digit // 5)
    counts = {"test": n_held_out, "valid": n_held_out, "train": per_digit - 2 * n_held_out}
    fsdd_root, out_dir = Path(fsdd_root), Path(out_dir)
    pools = fsdd_recordings(fsdd_root)
    digits = load_digits()
    images_per_digit = int(np.bincount(digits.target).min())
    if per_digit > images_per_digit:
        raise ConfigError(
            f"per_digit must be at most {images_per_digit} (the images of the rarest digit), not {per_digit}"
        )
    rng = np.random.default_rng(seed)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for digit in range(10):
        image_order = iter(rng.permutation(np.flatnonzero(digits.target == digit)))
        for split, count in counts.items():
            pool = pools.get((digit, split), [])
            if len(pool) < count:
                raise DataError(
                    fsdd_root / "recordings",
                    f"only {len(pool)} {split} recordings of digit {digit}, need {count}",
                )
            for k in rng.choice(len(pool), size=count, replace=False):
                recording = pool[k]
                image = digits.images[next(image_order)]  # 0..16 grey levels
                image_path = image_dir / f"{recording.stem}.png"
                cv2.imwrite(str(image_path), np.round(image * (255 / 16)).astype(np.uint8))
                rows.append(
                    (
                        recording.stem,
                        split,
                        digit,
                        recording.resolve(),
                        image_path.relative_to(out_dir),
                    )
                )
    manifest = out_dir / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(("id", "split", "label", "audio", "image"))
        writer.writerows(rows)
    return manifest
