"""Training memory: peak RSS of a streamed training run for N and 16N training samples.

A store of random features with the shapes of a real audio-visual task (BERT levels 3 x 32
x 384, log-mel 201 x 64, 16 RGB frames of 64 x 64) is written part by part for each size;
then, in a fresh Python process per size, ``clcr_cli.training.loop.fit`` trains CLCR for
one epoch with ``stream_above_mb = 0``, so every split is read from the store batch by
batch. The process reports its lifetime peak RSS (``VmHWM``): the figure is the peak at
16N, the reference the peak at N, and the ratio must stay near 1 (the goal is <= 1.3).
The same run held in memory is the second figure: the memory the streaming saves.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench.common import Figure, Result, in_fresh_process, report_seconds_and_peak

BASE_SAMPLES = 32
GROWTH = 16
PART = 64  # samples per part file
NEVER_STREAM_MB = 1e9  # a split budget no store here reaches: the in-memory path
SHAPES = {"text": (3, 32, 384), "audio": (201, 64), "video": (16, 64, 64, 3)}


def write_store(folder: Path, n: int, shapes: dict[str, tuple[int, ...]] | None = None) -> Path:
    """A store of ``n`` samples of random features (70/15/15 splits, 8 classes), each modality
    of ``shapes`` (default :data:`SHAPES`; by name: text levels, an audio sequence, video frames)."""
    from clcr_cli.store import ModalityLayout, PartData, assemble_store, write_part

    shapes = shapes or SHAPES
    known = {
        "text": ModalityLayout("levels", "text", "float32"),
        "audio": ModalityLayout("sequence", "audio", "float32"),
        "video": ModalityLayout("frames", "video", "uint8"),
    }
    layouts = {m: known[m] for m in shapes}
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for start in range(0, n, PART):
        part = PartData()
        for i in range(start, min(n, start + PART)):
            part.ids.append(f"s{i:06d}")
            part.splits.append("train" if i % 20 < 14 else ("valid" if i % 20 < 17 else "test"))
            part.labels.append(float(i % 8))
            for m, shape in shapes.items():
                part.features.setdefault(m, []).append(
                    rng.integers(0, 256, shape, dtype=np.uint8) if layouts[m].dtype == "uint8"
                    else rng.standard_normal(shape, dtype="f4"))
        parts.append(folder / f"part-{start:06d}.h5")
        write_part(parts[-1], part, layouts)
    out = folder / "features.h5"
    attrs = {"dataset": "bench", "target": "classification", "class_names": [str(c) for c in range(8)]}
    assemble_store(parts, out, layouts, attrs)
    for p in parts:
        p.unlink()
    return out


def child_main(store_path: str, stream_above_mb: str) -> None:
    """In the fresh process: one epoch of CLCR training, then report seconds and peak RSS."""
    import io

    from rich.console import Console

    from clcr_cli.config import train_config
    from clcr_cli.distributed import Dist
    from clcr_cli.store import FeatureStore
    from clcr_cli.training.loop import fit

    cfg = train_config(
        {}, {"task": "bench", "epochs": 1, "batch_size": 16, "stream_above_mb": float(stream_above_mb)}
    )
    out = Path(store_path).parent / f"run-{stream_above_mb}"
    out.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    with FeatureStore(store_path) as store:
        fit(cfg, store, out, Dist(), Console(file=io.StringIO()))
    report_seconds_and_peak(time.perf_counter() - t0)


def train_in_subprocess(store: Path, stream_above_mb: float) -> dict[str, float]:
    """Seconds and peak RSS (MiB) of one training epoch in a fresh process."""
    return in_fresh_process("bench.streaming", "child_main", str(store), str(stream_above_mb))


def run(n_samples: int, workdir: Path, size: str = "small") -> Result:
    small, large = n_samples, GROWTH * n_samples
    stores = {n: write_store(Path(workdir) / f"streaming-{n}", n) for n in (small, large)}
    streamed = {n: train_in_subprocess(stores[n], 0.0) for n in (small, large)}
    in_memory = train_in_subprocess(stores[large], NEVER_STREAM_MB)
    train = {n: sum(1 for i in range(n) if i % 20 < 14) for n in (small, large)}
    return Result(
        "training memory",
        size,
        {"N": small, "16N": large, "train N": train[small], "train 16N": train[large]},
        [
            Figure("streamed peak RSS at 16N", streamed[large]["peak_mib"],
                   "streamed peak RSS at N", streamed[small]["peak_mib"], "MiB"),
            Figure("streamed peak RSS at 16N", streamed[large]["peak_mib"],
                   "in-memory peak RSS at 16N", in_memory["peak_mib"], "MiB"),
            Figure("streamed epoch seconds at 16N", streamed[large]["seconds"],
                   "in-memory epoch seconds at 16N", in_memory["seconds"], "s"),
        ],
        {"process": "fresh python per run; peak = VmHWM of that process (imports included)",
         "features": {m: list(s) for m, s in SHAPES.items()}},
    )
