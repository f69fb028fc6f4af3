"""``clcr noise --missing-rate``: modalities missing at random (the draws:
tests/training/test_presence.py). Rate 0 is the clean evaluation and the curve falls; one
modality missing at rate 1 is ``clcr eval --missing``; a baseline beside CLCR; the options
are checked before any work and leave existing cache keys alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner
from workspace import read_csv

from clcr_cli.cli import app
from clcr_cli.config import EvalConfig, NoiseConfig, TrainConfig, key_options
from clcr_cli.pipeline import noise as run_noise
from clcr_cli.stages.evaluate import run_eval


def eval_metrics(run: Path, cfg: EvalConfig) -> dict[str, float]:
    """``clcr eval``'s metrics but the confusion matrix (curves.csv holds the rest)."""
    return {k: v for k, v in run_eval(run, cfg)["metrics"].items() if k != "confusion"}


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
