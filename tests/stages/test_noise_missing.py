"""Modalities missing at random: the draws (training/presence.py), ``clcr noise
--missing-rate`` and ``clcr train --modality-dropout``."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from clcr_cli.cli import app
from clcr_cli.config import EvalConfig, NoiseConfig, TrainConfig, key_options
from clcr_cli.pipeline import noise as run_noise
from clcr_cli.pipeline import train as run_train
from clcr_cli.stages.evaluate import run_eval
from clcr_cli.training.data import SplitData, batches
from clcr_cli.training.presence import random_presence

MODALITIES = ["text", "audio", "video"]
IDS = [f"s{i:05d}" for i in range(3000)]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def eval_metrics(run: Path, cfg: EvalConfig) -> dict[str, float]:
    """``clcr eval``'s metrics but the confusion matrix (curves.csv holds the rest)."""
    return {k: v for k, v in run_eval(run, cfg)["metrics"].items() if k != "confusion"}


def _absent(present: dict[str, torch.Tensor]) -> np.ndarray:
    return ~np.stack([present[m].numpy() for m in MODALITIES], 1)


# --- the draws ------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.3, 0.7, 0.95, 1.0])
def test_a_sample_never_loses_every_modality(rate: float):
    absent = _absent(random_presence(IDS, MODALITIES, rate, ("missing", 0)))
    assert not absent.all(1).any()
    if rate == 1.0:
        assert (absent.sum(1) == 2).all()  # exactly one stays


def test_rate_zero_keeps_everything_and_the_rate_is_met():
    assert not _absent(random_presence(IDS, MODALITIES, 0.0, ("missing", 0))).any()
    for rate in (0.1, 0.5):
        absent = _absent(random_presence(IDS, MODALITIES, rate, ("missing", 0)))
        expected = rate - rate**3 / 3  # the keep-one rule saves rate^3 / 3 (presence.py)
        assert absent.mean() == pytest.approx(expected, abs=0.015)
        assert absent.mean(0) == pytest.approx([expected] * 3, abs=0.03)  # each modality alike


def test_draws_are_nested_across_rates_and_fixed_by_seed_and_id():
    rates = (0.1, 0.3, 0.6, 0.9, 1.0)
    absent = [_absent(random_presence(IDS, MODALITIES, r, ("missing", 1))) for r in rates]
    for low, high in zip(absent, absent[1:], strict=False):
        assert (high | ~low).all()  # absent at a rate: absent at every higher rate
    again = _absent(random_presence(IDS, MODALITIES, 0.3, ("missing", 1)))
    assert np.array_equal(again, absent[1])
    other = _absent(random_presence(IDS, MODALITIES, 0.3, ("missing", 2)))
    assert not np.array_equal(other, absent[1])
    reordered = random_presence(IDS[::-1], MODALITIES, 0.3, ("missing", 1))  # order does not matter
    assert np.array_equal(_absent(reordered)[::-1], absent[1])


def test_only_the_droppable_modalities_go_missing():
    present = random_presence(IDS, MODALITIES, 1.0, ("missing", 0), droppable=["text"])
    assert not present["text"].any()  # one droppable modality: no keep-one rule needed
    assert present["audio"].all() and present["video"].all()


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


def test_new_options_leave_existing_cache_keys_alone():
    assert "modality_dropout" not in key_options(TrainConfig())
    assert key_options(TrainConfig(modality_dropout=0.3))["modality_dropout"] == 0.3
    assert set(key_options(NoiseConfig())) == {"sigmas", "modality", "noise_seeds", "models", "split"}
    assert key_options(NoiseConfig(missing_rates=(0.0, 0.5)))["missing_rates"] == (0.0, 0.5)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--missing-rate", "0,0.5", "--level", "raw"], "--missing-rate: sweeps missing modalities"),
        (["--missing-rate", "0.5,0.2"], "--missing-rate: needs at least 2 strictly increasing"),
        (["--missing-rate", "0,0.5", "--sigmas", "0,1"], "--sigmas: not an option of a sweep of missing"),
        (["--missing-rate", "0,1.5"], "--missing-rate: must be at most 1, got 1.5"),
        (["--modality-dropout", "1.5"], "--modality-dropout: must be at most 1, got 1.5"),
    ],
)
def test_bad_sweep_options_are_one_line_before_any_work(args: list[str], expected: str, tmp_path: Path):
    result = CliRunner().invoke(app, ["noise", "--task", "synth", "--workdir", str(tmp_path), *args])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error:") and expected in lines[0], lines[0]
    assert not (tmp_path / "train").exists()


# --- the sweep on a trained model -------------------------------------------------------------


def test_missing_rate_zero_is_eval_and_the_curve_falls(synth_run):
    cfg = NoiseConfig(missing_rates=(0.0, 0.3, 0.6, 0.9), noise_seeds=(0, 1, 2), models=("clcr",))
    out = run_noise(synth_run.train, synth_run.extract, cfg, synth_run.workdir)
    rows = read_csv(out / "curves.csv")
    clean = eval_metrics(synth_run.run, EvalConfig())
    zero = [r for r in rows if float(r["rate"]) == 0.0]
    assert len(zero) == 4 * 3  # curves all, audio, text, video; three seeds
    for r in zero:
        assert {k: float(r[k]) for k in clean} == clean  # every metric, to the bit
    assert [r["modality"] for r in read_csv(out / "robustness.csv")] == ["all", "audio", "text", "video"]
    summary = read_csv(out / "summary.csv")
    means = [float(r["acc_mean"]) for r in summary if r["modality"] == "all"]
    stds = [float(r["acc_std"]) for r in summary if r["modality"] == "all"]
    assert means[-1] < means[0] - 0.1
    for (a, sa), (b, sb) in zip(zip(means, stds, strict=True), zip(means[1:], stds[1:], strict=True), strict=False):
        assert b <= a + 2 * max(sa, sb, 0.02), means  # monotone within the spread over seeds
    assert (out / "missing_acc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_modality_missing_at_rate_one_is_eval_missing(synth_run):
    cfg = NoiseConfig(missing_rates=(0.0, 1.0), noise_seeds=(5,), models=("clcr",), modality="text")
    out = run_noise(synth_run.train, synth_run.extract, cfg, synth_run.workdir)
    (row,) = [r for r in read_csv(out / "curves.csv") if float(r["rate"]) == 1.0]
    missing = eval_metrics(synth_run.run, EvalConfig(missing=("text",)))
    assert {k: float(row[k]) for k in missing} == missing


def test_cli_missing_sweep_compares_clcr_and_a_baseline(synth_run):
    args = ["noise", *synth_run.train_args(epochs=2), "--missing-rate", "0,0.5", "--modality", "all",
            "--noise-seeds", "0", "--models", "clcr,late-fusion"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = Path(result.stdout.strip())
    assert {r["model"] for r in read_csv(out / "curves.csv")} == {"clcr", "late-fusion"}
    params = json.loads((out / "params.json").read_text())["params"]
    assert params["noise"]["missing_rates"] == [0.0, 0.5]


# --- training with modality dropout -----------------------------------------------------------


@pytest.mark.slow
def test_modality_dropout_trains_and_loses_less_when_a_modality_is_missing(synth_run, monkeypatch):
    from clcr_cli.training import loop

    draws = []

    def recorded(ids, modalities, rate, seed, droppable=None):
        present = random_presence(ids, modalities, rate, seed, droppable)
        draws.append((rate, seed, present))
        return present

    monkeypatch.setattr(loop, "random_presence", recorded)
    cfg = dataclasses.replace(synth_run.train, modality_dropout=0.5)
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
    assert loss_increase(robust) < loss_increase(synth_run.run) - 0.1
