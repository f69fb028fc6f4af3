"""Streaming a split from the store: the same batches, statistics and trained weights as
holding it in memory; the warmup-cosine schedule; the compile fallback; the cache key."""

from __future__ import annotations

import dataclasses
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from clcr_cli.config import TrainConfig, resolve
from clcr_cli.distributed import Dist
from clcr_cli.model import build_model
from clcr_cli.stages.train import train_key
from clcr_cli.store import FeatureStore, ModalityLayout, PartData, assemble_store, write_part
from clcr_cli.training.data import (
    FeatureStats,
    SplitData,
    StoreSplit,
    batches,
    carve_valid,
    load_rows,
    model_config,
    open_split,
    split_megabytes,
    standardise,
)
from clcr_cli.training.inference import predict
from clcr_cli.training.loop import fit, warmup_cosine

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
TIMING_COLUMNS = ("seconds", "samples_per_s")


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


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    return write_store(tmp_path_factory.mktemp("toy"))


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


def test_predict_on_a_streamed_split_equals_in_memory(store_path: Path):
    with FeatureStore(store_path) as store:
        memory, streamed, _ = both_splits(store, store.split_indices("valid"))
        torch.manual_seed(0)
        model = build_model(model_config(tiny(), store))
        a = predict(model, memory, 5, "cpu")
        b = predict(model, streamed, 5, "cpu", workers=2)
    assert a.ids == b.ids and np.array_equal(a.output, b.output) and np.array_equal(a.target, b.target)
    assert a.loss == b.loss and a.terms == b.terms
    assert np.array_equal(a.level_weights, b.level_weights)
    assert a.output.shape == (len(memory), 4) and math.isfinite(a.loss)


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


def run_fit(store_path: Path, out: Path, console: Console | None = None, after_epoch=None,
            **options) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    cfg = tiny(**options)
    with FeatureStore(store_path) as store:
        fit(cfg, store, out, Dist(), console or Console(file=io.StringIO()), after_epoch)
    return out


def history(out: Path) -> list[dict[str, str]]:
    import csv

    with open(out / "history.csv", newline="") as fh:
        return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in csv.DictReader(fh)]


def assert_same_run(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert history(a) == history(b)
    meta_a, meta_b = (json.loads((d / "model.json").read_text()) for d in (a, b))
    assert meta_a["stats"] == meta_b["stats"] and meta_a["best_epoch"] == meta_b["best_epoch"]


@pytest.fixture(scope="module")
def in_memory_run(store_path: Path, tmp_path_factory) -> Path:
    return run_fit(store_path, tmp_path_factory.mktemp("memory"))


def test_streamed_training_is_bit_identical_to_in_memory(store_path, in_memory_run, tmp_path):
    log = io.StringIO()
    streamed = run_fit(store_path, tmp_path / "s", Console(file=log, width=200), stream_above_mb=0.0)
    assert "train and valid streamed from the store" in log.getvalue()
    assert_same_run(streamed, in_memory_run)
    workers = run_fit(store_path, tmp_path / "w", stream_above_mb=0.0, loader_workers=2)
    assert_same_run(workers, in_memory_run)
    rows = history(in_memory_run)
    assert len(rows) == TINY["epochs"] and float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    timing = json.loads((in_memory_run / "timing.json").read_text())
    assert set(timing) == {"epochs_run", "processes", "mean_epoch_seconds", "mean_samples_per_s"}
    assert timing["epochs_run"] == TINY["epochs"] and timing["mean_samples_per_s"] > 0


def test_warmup_cosine_schedule_and_streamed_resume_is_bit_identical(store_path, in_memory_run, tmp_path):
    # the lr of each epoch: lr/10, then the cosine from lr (warmup_epochs=1, epochs=3)
    lrs = [float(r["lr"]) for r in history(in_memory_run)]
    expected = [TINY["lr"] * f for f in (0.1, 1.0, 0.5 * (1 + math.cos(math.pi / 2)))]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert [warmup_cosine(e, 2, 10) for e in (0, 1, 2, 6)] == pytest.approx([0.1, 0.55, 1.0, 0.5])
    assert warmup_cosine(10, 2, 10) == pytest.approx(0.0, abs=1e-12)

    class Killed(Exception):
        pass

    def kill_after_2(epoch: int) -> None:
        if epoch == 2:
            raise Killed

    out = tmp_path / "resumed"
    with pytest.raises(Killed):
        run_fit(store_path, out, after_epoch=kill_after_2, stream_above_mb=0.0)
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["scheduler"]["last_epoch"] == 2
    log = io.StringIO()
    run_fit(store_path, out, Console(file=log, width=200), stream_above_mb=0.0)
    assert "resuming train toy from epoch 2/3" in log.getvalue()
    assert_same_run(out, in_memory_run)


def test_failed_compile_falls_back_to_eager_with_one_line(store_path, in_memory_run, tmp_path, monkeypatch):
    def broken_compile(module):
        def first_call(*args, **kwargs):
            torch.rand(7)  # the failure comes after the RNG moved: the fallback must undo it
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\ndetails ...")

        return first_call

    monkeypatch.setattr(torch, "compile", broken_compile)
    log = io.StringIO()
    out = run_fit(store_path, tmp_path / "c", Console(file=log, width=200), compile=True)
    lines = [line for line in log.getvalue().splitlines() if "torch.compile" in line]
    assert lines == [
        "torch.compile failed, training eagerly: RuntimeError: InvalidCxxCompiler: No working C++ "
        "compiler found"
    ]
    assert_same_run(out, in_memory_run)


def test_run_only_options_leave_the_cache_key_alone():
    base = tiny()
    key = train_key(base, "abc").digest
    for change in ({"compile": True}, {"stream_above_mb": 0.0}, {"loader_workers": 4}):
        assert train_key(dataclasses.replace(base, **change), "abc").digest == key, change
    assert train_key(dataclasses.replace(base, lr=1e-2), "abc").digest != key
    assert train_key(base, "abd").digest != key
    assert "compile" not in train_key(base, "abc").params and "lr" in train_key(base, "abc").params
