"""``clcr noise --level raw``: noise on the media, extracted again with the store's settings
(the perturb stage, test_perturb.py): step 0 is the clean evaluation, the loudest step is
less accurate; the options are checked before any work."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner
from workspace import read_csv

from clcr_cli.cli import app
from clcr_cli.config import EvalConfig, NoiseConfig
from clcr_cli.pipeline import noise as run_noise
from clcr_cli.stages.evaluate import run_eval


def test_raw_noise_level_zero_is_eval_and_the_highest_lowers_accuracy(synth_run):
    cfg = NoiseConfig(level="raw", modality="all", models=("clcr",), noise_seeds=(0, 1),
                      snr_db=(10.0, -5.0), pixel_sigma=(32.0, 160.0), text_rate=(0.1, 0.6))
    out = run_noise(synth_run.train, synth_run.extract, cfg, synth_run.workdir)
    rows = read_csv(out / "curves.csv")
    assert list(rows[0])[:5] == ["model", "modality", "step", "setting", "seed"]
    clean = {k: v for k, v in run_eval(synth_run.run, EvalConfig())["metrics"].items() if k != "confusion"}
    for r in (r for r in rows if r["step"] == "0"):
        assert r["setting"] == "clean" and {k: float(r[k]) for k in clean} == clean
    loud = [float(r["acc"]) for r in rows if r["step"] == "2"]
    assert len(loud) == 2 and max(loud) < clean["acc"] - 0.1, (loud, clean["acc"])
    assert {r["setting"] for r in rows if r["step"] == "2"} == {"-5 dB / char 0.6 / σ 160"}
    summary = read_csv(out / "summary.csv")
    assert [r["step"] for r in summary] == ["0", "1", "2"]
    (robust,) = read_csv(out / "robustness.csv")
    means = [float(r["acc_mean"]) for r in summary]
    assert float(robust["relative_robustness_acc"]) == pytest.approx(np.trapezoid(means, [0, 1, 2]) / 2)
    assert (out / "noise_raw_acc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # each (modality, step, seed) extracted once, into its own cached output
    assert len(list((synth_run.workdir / "perturb").glob("synth-*/manifest.json"))) >= 3 * 2 * 2


def test_raw_noise_options_are_checked_before_any_work(synth_run):
    def error(*args: str) -> str:
        result = CliRunner().invoke(app, ["noise", *synth_run.train_args(), "--level", "raw", *args])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and lines[-1].startswith("error:"), result.output
        return lines[-1]

    assert "every medium needs as many steps" in error("--modality", "all", "--snr-db", "10")
    assert "--snr-db: needs at least 1 strictly decreasing" in error("--snr-db", "0,10")
    assert "--sigmas: not an option of a sweep of --level raw" in error("--sigmas", "0,1")
    assert "--text-unit: must be one of char, word" in error("--text-unit", "line")
