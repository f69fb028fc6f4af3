"""Writing ``synth`` to disk: the recipe's samples as .wav, .mp4 and transcripts.csv.

:func:`ensure_generated` writes the folder for (n_samples, seed) under a temporary name and
renames it when complete (``cache.atomic_path``), so a killed generation never leaves a half
dataset; the leftovers of dead generations are removed the next time.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import soundfile

from clcr_cli.cache import atomic_path, remove_stale_temps
from clcr_cli.datasets.synth.recipe import (
    CLIP_SECONDS,
    CORRUPTION_RATE,
    FRAME_SIZE,
    GENERATOR_VERSION,
    SAMPLE_RATE,
    VIDEO_FPS,
    assign_splits,
    generate_sample,
)
from clcr_cli.errors import ConfigError, DataError

GENERATOR_FILE = "generator.json"
TRANSCRIPTS_FILE = "transcripts.csv"

def write_video(path: Path, frames_rgb: np.ndarray) -> None:
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(VIDEO_FPS), (FRAME_SIZE, FRAME_SIZE)
    )
    if not writer.isOpened():
        raise DataError(path, "OpenCV cannot write mp4v video here")
    for frame in frames_rgb:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


COLUMNS = (
    "id", "split", "label", "class_name", "target", "text", "corrupted_modality", "corrupted_level",
    "global", "mid", "local", "n_events", "carrier_hz", "noise_colour", "noise_level",
    "background_rgb", "object_x", "object_y", "name",
)  # fmt: skip


def fingerprint(n_samples: int, seed: int) -> str:
    return f"n{n_samples}-seed{seed}-v{GENERATOR_VERSION}"


def write_dataset(folder: Path, n_samples: int, seed: int) -> None:
    """Write every sample of (n_samples, seed), transcripts.csv and generator.json into ``folder``."""
    from rich.progress import track

    (folder / "audio").mkdir(parents=True)
    (folder / "video").mkdir()
    splits = assign_splits(n_samples, seed)
    rows = []
    for index in track(
        range(n_samples), description=f"generating synth ({n_samples} samples)", transient=True
    ):
        sample = generate_sample(seed, index)
        sample_id = str(sample.row["id"])
        soundfile.write(
            folder / "audio" / f"{sample_id}.wav", sample.audio, SAMPLE_RATE, subtype="PCM_16"
        )
        write_video(folder / "video" / f"{sample_id}.mp4", sample.frames)
        rows.append({**sample.row, "split": splits[index]})
    with open(folder / TRANSCRIPTS_FILE, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    meta = {
        "generator_version": GENERATOR_VERSION,
        "n_samples": n_samples,
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
        "clip_seconds": CLIP_SECONDS,
        "video_fps": VIDEO_FPS,
        "frame_size": FRAME_SIZE,
        "corruption_rate": CORRUPTION_RATE,
    }
    (folder / GENERATOR_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def ensure_generated(root: Path, n_samples: int, seed: int) -> Path:
    """The complete dataset folder for (n_samples, seed), generating it if absent."""
    if n_samples < 10:
        raise ConfigError(f"synth needs at least 10 samples, got {n_samples}")
    folder = root / fingerprint(n_samples, seed)
    if (folder / GENERATOR_FILE).is_file():
        return folder
    if folder.exists():
        raise DataError(
            folder, "incomplete synth dataset (not written by clcr?): delete it to regenerate"
        )
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(root)
    try:
        with atomic_path(folder) as temp:
            write_dataset(temp, n_samples, seed)
    except OSError:
        if not (folder / GENERATOR_FILE).is_file():  # not a concurrent generation that won
            raise
    return folder
