"""training/data.py: a split streamed from the store gives the batches and statistics of the
split held in memory; the statistics, computed in small float64 slices, are the exact ones;
when a split is streamed, and how valid is carved from train; every sample keeps its own
presence through a shuffle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from toy_store import both_splits

from clcr_cli.store import FeatureStore
from clcr_cli.training.data import (
    FeatureStats,
    SplitData,
    StoreSplit,
    batches,
    carve_valid,
    load_rows,
    open_split,
    split_megabytes,
)
from clcr_cli.training.presence import random_presence


def assert_same_batches(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.target, y.target)
        assert x.inputs.keys() == y.inputs.keys() == x.present.keys() == y.present.keys()
        for m in x.inputs:
            assert x.inputs[m].dtype == y.inputs[m].dtype, m
            assert torch.equal(x.inputs[m], y.inputs[m]), m
            assert torch.equal(x.lengths[m], y.lengths[m]), m
            assert torch.equal(x.present[m], y.present[m]), m


def test_streamed_split_gives_the_in_memory_batches_and_statistics(store_path: Path):
    with FeatureStore(store_path) as store:
        rows = store.split_indices("train")
        memory, streamed, stats = both_splits(store, rows)
        assert streamed.ids == memory.ids and torch.equal(streamed.target, memory.target)
        # statistics are those of the valid steps: standardised audio has mean 0, std 1 there
        audio, lengths = memory.inputs["audio"], memory.lengths["audio"]
        valid_steps = torch.arange(audio.shape[1])[None, :] < lengths[:, None]
        assert audio[valid_steps].mean(0).abs().max() < 1e-5
        assert audio[valid_steps].std(0).sub(1).abs().max() < 1e-4
        assert not audio[~valid_steps].any()
        for seed in (None, 5):
            generator = None if seed is None else torch.Generator().manual_seed(seed)
            expected = list(batches(memory, 10, generator=generator, present={"text": False}))
            for workers in (0, 2):
                generator = None if seed is None else torch.Generator().manual_seed(seed)
                rng = torch.get_rng_state()
                got = list(batches(streamed, 10, generator, present={"text": False}, workers=workers))
                assert torch.equal(torch.get_rng_state(), rng)  # dropout's RNG untouched
                assert_same_batches(got, expected)
        assert [len(b.target) for b in expected] == [10, 10, 10, 10, 4]  # 44 train samples
        assert not expected[0].present["text"].any() and expected[0].present["audio"].all()


def test_statistics_in_small_float64_slices_are_the_exact_ones(store_path: Path, monkeypatch):
    """FeatureStats converts a chunk to float64 a few rows at a time (memory stays flat):
    the result is the float64 mean and std of the valid steps, per channel of the frames."""
    monkeypatch.setattr("clcr_cli.training.data.STATS_BYTES", 8 * 3 * 50)  # 50 pixels per slice
    with FeatureStore(store_path) as store:
        kinds = {m: info.kind for m, info in store.modalities.items()}
        memory = load_rows(store, store.split_indices("train"))
        stats = FeatureStats.of(memory, kinds, chunk=7)
    frames, lengths = memory.inputs["video"].numpy(), memory.lengths["video"].numpy()
    pixels = np.concatenate([f[:n].reshape(-1, 3) for f, n in zip(frames, lengths, strict=True)]).astype("f8")
    np.testing.assert_allclose(stats.mean["video"].numpy(), pixels.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats.std["video"].numpy(), pixels.std(0, ddof=1), rtol=1e-5)


def test_open_split_streams_above_the_threshold_and_carves_valid_rows(store_path: Path):
    with FeatureStore(store_path) as store:
        rows = store.split_indices("train")
        shapes = {m: info.shape for m, info in store.modalities.items()}
        assert shapes["text"][::2] == (3, 6) and shapes["video"][1:] == (8, 8, 3)
        # padded float32 text and audio, uint8 video
        row_bytes = 4 * np.prod(shapes["text"]) + 4 * np.prod(shapes["audio"]) + np.prod(shapes["video"])
        assert split_megabytes(store, rows) == pytest.approx(len(rows) * row_bytes / 2**20)
        assert isinstance(open_split(store, rows, 0.0), StoreSplit)
        assert isinstance(open_split(store, rows, 1.0), SplitData)
    train, valid = carve_valid(rows, 0.25, seed=1)
    assert len(valid) == round(0.25 * len(rows)) and len(train) + len(valid) == len(rows)
    assert sorted([*train, *valid]) == sorted(rows)
    assert (np.diff(train) > 0).all() and (np.diff(valid) > 0).all()
    again = carve_valid(rows, 0.25, seed=1)
    assert np.array_equal(again[0], train) and not np.array_equal(carve_valid(rows, 0.25, 2)[1], valid)


IDS = [f"s{i:05d}" for i in range(50)]


def test_batches_carry_each_samples_own_presence_through_a_shuffle():
    n = 50
    ids = IDS[:n]
    split = SplitData(ids, {"a": torch.arange(n).float()[:, None, None]}, {"a": torch.ones(n, dtype=torch.long)},
                      torch.zeros(n, dtype=torch.long))
    present = random_presence(ids, ["a", "b"], 0.5, "x", droppable=["a"])
    seen = {}
    for batch in batches(split, 8, generator=torch.Generator().manual_seed(0), present=present):
        for row, p in zip(batch.inputs["a"][:, 0, 0].long().tolist(), batch.present["a"].tolist(), strict=True):
            seen[row] = p
    assert seen == dict(enumerate(present["a"].tolist()))
