"""The Python API (issue 21): a run folder copied anywhere, its workspace deleted, predicts
what its evaluation predicted, through `clcr_cli.load_run` and through `clcr predict`."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import clcr_cli as clcr
from clcr_cli.config import EvalConfig, TrainConfig
from clcr_cli.stages.evaluate import run_eval


def _probabilities(path: Path) -> dict[str, list[float]]:
    with open(path, newline="") as fh:
        return {r["id"]: [float(v) for k, v in r.items() if k.startswith("prob_")] for r in csv.DictReader(fh)}


def test_a_copied_run_predicts_its_evaluation_without_its_workspace(synth_run, tmp_path: Path):
    # a copy of the workspace whose run has no evaluation yet (other tests add theirs to the
    # shared one): the one made here is the run's only one
    workspace = tmp_path / "workspace"
    shutil.copytree(synth_run.workdir, workspace)
    trained = workspace / "train" / synth_run.run.name
    shutil.rmtree(trained / "eval", ignore_errors=True)
    evaluation = run_eval(trained, EvalConfig())
    (folder,) = (trained / "eval").iterdir()
    expected = _probabilities(folder / "predictions.csv")
    assert len(expected) == evaluation["num_samples"]
    # the test clips' media and texts, kept outside the workspace, which then goes
    (raw,) = (workspace / "raw" / "synth").iterdir()
    media = tmp_path / "media"
    shutil.copytree(raw, media)
    with open(media / "transcripts.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["id"] in expected]
    manifest = tmp_path / "new.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "audio", "video", "text"])
        writer.writerows([r["id"], media / "audio" / f"{r['id']}.wav", media / "video" / f"{r['id']}.mp4", r["text"]]
                         for r in rows)
    copy = tmp_path / "elsewhere" / synth_run.run.name
    shutil.copytree(trained, copy)
    shutil.rmtree(workspace)

    run = clcr.load_run(copy)
    assert isinstance(run.config, TrainConfig) and run.config.model.d == synth_run.train.model.d
    assert run.task == "synth" and not run.model.training
    prediction = run.predict(manifest=manifest, device="cpu")
    got = {r["id"]: list(r["probabilities"].values()) for r in prediction.records()}
    assert got.keys() == expected.keys()
    for sample, probs in expected.items():
        # both sides rounded to 6 decimals: one value can round either side of a last digit
        assert got[sample] == pytest.approx(probs, abs=1.5e-6), sample

    out = tmp_path / "cli-predictions"
    done = subprocess.run([sys.executable, "-m", "clcr_cli", "predict", "--run", str(copy), "--manifest", str(manifest),
                           "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    cli = _probabilities(out / "predictions.csv")
    for sample, probs in expected.items():
        assert cli[sample] == pytest.approx(probs, abs=1.5e-6), sample
