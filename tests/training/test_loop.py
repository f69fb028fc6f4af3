"""training/loop.py: :func:`fit` streamed or in memory, bit for bit; the warmup-cosine
schedule; kill and resume; the compile fallback; options that only change how a run is
computed stay out of its key; model selection and early stopping; checkpoints that are
damaged or cannot be written; modality dropout."""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file
from toy_store import TINY, tiny
from workspace import TRAIN, clcr, error_line, kept, read_csv, snapshot, temporaries, train_dir

from clcr_cli.config import EvalConfig
from clcr_cli.distributed import Dist
from clcr_cli.pipeline import train as run_train
from clcr_cli.stages.evaluate import run_eval
from clcr_cli.stages.train import train_key
from clcr_cli.store import FeatureStore
from clcr_cli.training.loop import Selection, fit, warmup_cosine
from clcr_cli.training.presence import random_presence

TIMING_COLUMNS = ("seconds", "samples_per_s")


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


# --- model selection and early stopping -------------------------------------------------------


def test_selection_keeps_the_best_epoch_and_counts_the_epochs_without_improvement():
    model = torch.nn.Linear(2, 1)
    selection = Selection(higher=True)
    assert not selection.exhausted(1)  # nothing scored yet
    selection.update(0.5, 1, model)
    best = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)  # the weights move on after the best epoch
    bad = []
    for epoch, score in ((2, 0.4), (3, 0.5)):  # worse, then as good: neither improves
        selection.update(score, epoch, model)
        bad.append(selection.bad_epochs)
    assert bad == [1, 2]
    assert (selection.best_epoch, selection.best_score) == (1, 0.5)
    assert selection.best_state.keys() == best.keys()
    assert all(torch.equal(selection.best_state[k], v) for k, v in best.items())  # epoch 1's weights
    assert selection.exhausted(1) and selection.exhausted(2) and not selection.exhausted(3)
    assert not selection.exhausted(0)  # patience 0: never
    selection.update(0.6, 4, model)  # an improvement resets the count
    assert (selection.best_epoch, selection.best_score, selection.bad_epochs) == (4, 0.6, 0)
    assert not selection.exhausted(1)
    assert torch.equal(selection.best_state["weight"], model.weight)


def test_selection_of_a_loss_keeps_the_lowest_and_never_selects_nan():
    model = torch.nn.Linear(2, 1)
    selection = Selection(higher=False)
    bad = []
    for epoch, score in enumerate([float("nan"), 2.0, 3.0, 1.5, 1.5, float("nan")], 1):
        selection.update(score, epoch, model)
        bad.append(selection.bad_epochs)
    assert bad == [1, 0, 1, 0, 1, 2]
    assert (selection.best_epoch, selection.best_score) == (4, 1.5)
    assert selection.exhausted(2) and not selection.exhausted(3)


@pytest.mark.parametrize("patience", [1, 2])
def test_training_stops_once_valid_has_not_improved_for_patience_epochs(ws: Path, patience: int):
    """With lr 0 the weights stay as initialised, so every epoch scores valid as epoch 1
    did: no epoch after the first improves, and the run stops after 1 + patience of the 6
    epochs asked."""
    result = clcr("train", "--config", ws / "c.toml", "--workdir", ws / "data", *TRAIN,
                  "--epochs", "6", "--lr", "0", "--patience", str(patience))
    assert result.exit_code == 0, result.output
    assert f"early stop: no improvement of valid acc for {patience} epochs" in result.output
    run = Path(result.stdout.strip())
    rows = read_csv(run / "history.csv")
    assert [r["epoch"] for r in rows] == [str(e) for e in range(1, patience + 2)]
    assert {r["valid_acc"] for r in rows} == {rows[0]["valid_acc"]} and {r["lr"] for r in rows} == {"0.0"}
    assert json.loads((run / "timing.json").read_text())["epochs_run"] == patience + 1
    assert json.loads((run / "model.json").read_text())["best_epoch"] == 1
    checkpoint = torch.load(run / "last.pt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["best_epoch"], checkpoint["bad_epochs"]) == (patience + 1, 1, patience)


# --- checkpoints that are damaged or cannot be written ----------------------------------------


def test_a_full_disk_while_checkpointing_is_one_line(ws: Path, monkeypatch):
    from clcr_cli.training import checkpoint

    before = snapshot(ws / "data")

    def full(obj, f, *args, **kwargs):  # last.pt is written to a file object
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f.name)

    monkeypatch.setattr(checkpoint.torch, "save", full)
    result = clcr("train", "--config", ws / "c.toml", "--workdir", ws / "data", *TRAIN, "--seed", "5")
    line = error_line(result)
    assert line.startswith(f"error: {ws / 'data' / 'train'}/synth-") and line.endswith(": No space left on device")
    assert temporaries(ws / "data") == []
    assert kept(before, ws / "data")


@pytest.mark.parametrize("damage", ["empty", "foreign"])
def test_a_damaged_checkpoint_restarts_the_run(ws: Path, damage: str):
    run = train_dir(ws)
    weights = (run / "model.safetensors").read_bytes()
    (run / "manifest.json").unlink()  # a killed run: partial, resumable from last.pt
    if damage == "empty":
        (run / "last.pt").write_bytes(b"")
        what, reason = "unreadable checkpoint", "EOFError"
    else:
        checkpoint = torch.load(run / "last.pt", weights_only=True)
        torch.save({**checkpoint, "epoch": 10**9}, run / "last.pt")
        what, reason = "not this run's checkpoint", "its fields do not belong to this run"
    store = snapshot(ws / "data" / "extract")
    result = clcr("train", "--config", ws / "c.toml", "--workdir", ws / "data", *TRAIN)
    assert result.exit_code == 0, result.output
    assert f"{run / 'last.pt'}: {what} ({reason}" in result.output.replace("\n", "")
    assert "training from epoch 0" in result.output
    assert (run / "model.safetensors").read_bytes() == weights  # the same run, from the start
    assert snapshot(ws / "data" / "extract") == store


# --- modality dropout -------------------------------------------------------------------------


@pytest.mark.slow
def test_modality_dropout_trains_and_loses_less_when_a_modality_is_missing(synth_run, monkeypatch):
    from clcr_cli.training import loop

    draws = []

    def recorded(ids, modalities, rate, seed, droppable=None):
        present = random_presence(ids, modalities, rate, seed, droppable)
        draws.append((rate, seed, present))
        return present

    monkeypatch.setattr(loop, "random_presence", recorded)
    # both runs in the paper's reading (lambda_aux = 0), where this was measured: the default's
    # auxiliary heads make every modality learn the task alone, another route to the same end
    paper = dataclasses.replace(synth_run.train, model=dataclasses.replace(synth_run.train.model, lambda_aux=0.0))
    plain = run_train(paper, synth_run.extract, synth_run.workdir)
    draws.clear()
    cfg = dataclasses.replace(paper, modality_dropout=0.5)
    robust = run_train(cfg, synth_run.extract, synth_run.workdir)
    assert robust != synth_run.run
    assert json.loads((robust / "params.json").read_text())["params"]["modality_dropout"] == 0.5
    # one draw per epoch, each its own, every sample keeping a modality
    assert [seed for _, seed, _ in draws] == [("modality_dropout", cfg.seed, e) for e in range(cfg.epochs)]
    absent = np.stack([~np.stack([p[m].numpy() for m in p], 1) for _, _, p in draws])
    assert not absent.all(2).any() and 0.35 < absent.mean() < 0.5  # 0.5 - 0.5^3/3 = 0.458
    assert not np.array_equal(absent[0], absent[1])

    def loss_increase(run: Path) -> float:
        """How much the task loss grows when the modality the models lean on most is absent."""
        return run_eval(run, EvalConfig(missing=("text",)))["loss"] - run_eval(run, EvalConfig())["loss"]

    # A small seeded check (160 samples, 12 epochs). At this size neither model learns much
    # from audio or video, so neither is accurate without text; what dropout buys is a model
    # that expects missing inputs: its loss grows less (1.17 against 1.43 here).
    assert loss_increase(robust) < loss_increase(plain) - 0.1
