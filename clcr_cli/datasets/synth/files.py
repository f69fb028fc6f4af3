"""Writing ``synth`` to disk: the recipe's samples as .wav, .mp4 and transcripts.csv.

:func:`ensure_generated` writes the folder for (n_samples, seed) under a temporary name and
renames it when complete (``cache.atomic_path``), so a killed generation never leaves a half
dataset; the leftovers of dead generations are removed the next time, and a generation that
fails or is interrupted (Ctrl-C, SIGTERM) removes its own.

What it is asked for is checked before anything is written: at most :data:`MAX_SAMPLES`
samples, and no more than the free space of the folder holds (:data:`BYTES_PER_SAMPLE`
each). A write the system refuses (a full disk, a quota) is one line naming the folder and
the cause (``errors.writing``): the .wav is encoded in memory and written by Python, which
reports the errno that libsndfile would swallow ("System error."), and each .mp4 is checked
for completeness, as ``cv2.VideoWriter`` reports no failure at all.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import signal
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
from clcr_cli.errors import ConfigError, DataError, writing

GENERATOR_FILE = "generator.json"
TRANSCRIPTS_FILE = "transcripts.csv"
MIN_SAMPLES = 10
MAX_SAMPLES = 1_000_000  # 80 GB of files; the splits alone take 8 bytes a sample in memory
# on disk per sample: the .wav (64,044 B), the .mp4 (4-10 kB), its row (~250 B), on 4 kB blocks
BYTES_PER_SAMPLE = 80_000
PROBE_BYTES = 1 << 16  # more than any synth .mp4: what a silent video failure is re-tried with


def write_audio(path: Path, audio: np.ndarray) -> None:
    """``audio`` as 16-bit PCM .wav: encoded in memory, written by Python, so that a failing
    write raises the OSError with its errno (libsndfile would say only "System error.")."""
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    path.write_bytes(buffer.getvalue())


def write_video(path: Path, frames_rgb: np.ndarray) -> None:
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(VIDEO_FPS), (FRAME_SIZE, FRAME_SIZE)
    )
    opened = writer.isOpened()
    if opened:
        for frame in frames_rgb:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    if not (opened and mp4_complete(path)):
        retry_write(path)  # cv2 reports no cause: a disk that refuses the bytes raises it here
        problem = "OpenCV wrote an incomplete video" if opened else "OpenCV cannot write mp4v video here"
        raise DataError(path, problem)


def mp4_complete(path: Path) -> bool:
    """Whether ``path`` is a whole MP4 file: top-level boxes that tile it exactly, ``mdat``
    and ``moov`` among them (a writer cut short leaves a truncated box, or no ``moov``)."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    pos, kinds = 0, set()
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size == 1 and pos + 16 <= len(data):
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
        elif size == 0:  # the box runs to the end of the file
            size = len(data) - pos
        if size < 8:
            return False
        kinds.add(kind)
        pos += size
    return pos == len(data) and {b"mdat", b"moov"} <= kinds


def retry_write(path: Path) -> None:
    """Write :data:`PROBE_BYTES` to ``path`` from Python: where the system refuses them (a
    full disk, a quota, the file-size limit), the OSError that a silent writer swallowed."""
    with open(path, "wb") as handle:
        handle.write(bytes(PROBE_BYTES))
        handle.flush()
    path.unlink()


COLUMNS = (
    "id", "split", "label", "class_name", "target", "text", "corrupted_modality", "corrupted_level",
    "global", "mid", "local", "n_events", "carrier_hz", "noise_colour", "noise_level",
    "background_rgb", "object_x", "object_y", "name",
)  # fmt: skip


def fingerprint(n_samples: int, seed: int) -> str:
    return f"n{n_samples}-seed{seed}-v{GENERATOR_VERSION}"


def write_dataset(folder: Path, n_samples: int, seed: int) -> None:
    """Write every sample of (n_samples, seed), transcripts.csv and generator.json into ``folder``.

    The rows go to transcripts.csv as the samples are made: memory does not grow with them.
    """
    from rich.progress import track

    (folder / "audio").mkdir(parents=True)
    (folder / "video").mkdir()
    splits = assign_splits(n_samples, seed)
    with open(folder / TRANSCRIPTS_FILE, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for index in track(
            range(n_samples), description=f"generating synth ({n_samples} samples)", transient=True
        ):
            sample = generate_sample(seed, index)
            sample_id = str(sample.row["id"])
            write_audio(folder / "audio" / f"{sample_id}.wav", sample.audio)
            write_video(folder / "video" / f"{sample_id}.mp4", sample.frames)
            writer.writerow({**sample.row, "split": splits[index]})
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


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def check_n_samples(n_samples: int) -> None:
    """Refuse a number of samples out of :data:`MIN_SAMPLES` .. :data:`MAX_SAMPLES`."""
    if n_samples < MIN_SAMPLES:
        raise ConfigError(f"synth needs at least {MIN_SAMPLES} samples, got {n_samples}")
    if n_samples > MAX_SAMPLES:
        raise ConfigError(f"--n-samples {n_samples}: synth generates at most {MAX_SAMPLES:,} samples")


def check_free_space(root: Path, n_samples: int) -> None:
    """Refuse, before any work, more samples than the free space under ``root`` holds."""
    existing = next(p for p in (root, *root.parents) if p.exists())
    need, free = n_samples * BYTES_PER_SAMPLE, shutil.disk_usage(existing).free
    if need > free:
        raise ConfigError(
            f"--n-samples {n_samples}: the synth files need about {_size(need)}, "
            f"{existing} has {_size(free)} free"
        )


@contextmanager
def terminate_interrupts() -> Iterator[None]:
    """SIGTERM (``kill``, ``timeout``) raises KeyboardInterrupt in the block, as Ctrl-C does,
    so that the block's cleanup (the temporary folder's removal) runs. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def ensure_generated(root: Path, n_samples: int, seed: int) -> Path:
    """The complete dataset folder for (n_samples, seed), generating it if absent."""
    check_n_samples(n_samples)
    folder = root / fingerprint(n_samples, seed)
    if (folder / GENERATOR_FILE).is_file():
        return folder
    check_free_space(root, n_samples)
    if folder.exists():
        raise DataError(
            folder, "incomplete synth dataset (not written by clcr?): delete it to regenerate"
        )
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(root)
    try:
        with terminate_interrupts(), atomic_path(folder) as temp, writing(folder):
            write_dataset(temp, n_samples, seed)
    except OSError:
        if not (folder / GENERATOR_FILE).is_file():  # not a concurrent generation that won
            raise
    return folder
