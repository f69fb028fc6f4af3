"""The toy store of the training tests, imported by name (``from toy_store import tiny``:
pytest puts tests/training/ on the import path, as it does tests/model/ for model_fixtures):
72 samples of random features whose label shows in every modality (the ``store_path``
fixture of conftest.py writes it), and a small training recipe, :data:`TINY`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from clcr_cli.config import TrainConfig, resolve
from clcr_cli.store import FeatureStore, ModalityLayout, PartData, assemble_store, write_part
from clcr_cli.training.data import FeatureStats, SplitData, StoreSplit, load_rows, standardise

LAYOUTS = {
    "text": ModalityLayout("levels", "text", "float32"),
    "audio": ModalityLayout("sequence", "audio", "float32"),
    "video": ModalityLayout("frames", "video", "uint8"),
}


N_SAMPLES = 72


TINY = dict(
    task="toy", epochs=3, batch_size=8, d=16, num_heads=2, optimizer="adamw", lr=3e-3,
    scheduler="warmup-cosine", warmup_epochs=1, seed=3,
)


def tiny(**options) -> TrainConfig:
    """TINY over the declared defaults (no task recipe), the model's options among them."""
    return resolve(TrainConfig, [("test", {**TINY, **options})])


def write_store(folder: Path, n: int = N_SAMPLES) -> Path:
    """A small store of random features whose label shows in every modality."""
    rng = np.random.default_rng(0)
    part = PartData()
    for i in range(n):
        label = i % 4
        part.ids.append(f"s{i:03d}")
        part.splits.append(["train", "train", "train", "valid", "test"][i % 5])
        part.labels.append(float(label))
        t_text, t_audio, t_video = rng.integers(2, 9), rng.integers(3, 20), rng.integers(1, 5)
        part.features.setdefault("text", []).append(
            (rng.normal(size=(3, t_text, 6)) + label).astype("f4"))
        part.features.setdefault("audio", []).append(
            (rng.normal(size=(t_audio, 5)) * 3 + 2 * label).astype("f4"))
        part.features.setdefault("video", []).append(
            rng.integers(0, 60, size=(t_video, 8, 8, 3), dtype=np.uint8) + np.uint8(40 * label))
    folder.mkdir(parents=True, exist_ok=True)
    write_part(folder / "part.h5", part, LAYOUTS)
    out = folder / "features.h5"
    attrs = {"dataset": "toy", "target": "classification", "class_names": list("abcd")}
    assemble_store([folder / "part.h5"], out, LAYOUTS, attrs)
    return out


def both_splits(store: FeatureStore, rows: np.ndarray) -> tuple[SplitData, StoreSplit, FeatureStats]:
    """The rows in memory and streamed, each standardised with its own statistics (which
    must be equal)."""
    kinds = {m: info.kind for m, info in store.modalities.items()}
    memory, streamed = load_rows(store, rows), StoreSplit(store, rows)
    stats = FeatureStats.of(memory, kinds, chunk=7)
    streamed_stats = FeatureStats.of(streamed, kinds, chunk=7)
    for m in kinds:
        assert torch.equal(stats.mean[m], streamed_stats.mean[m]), m
        assert torch.equal(stats.std[m], streamed_stats.std[m]), m
    return standardise(memory, stats, kinds), standardise(streamed, streamed_stats, kinds), stats
