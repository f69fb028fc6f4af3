"""The eval stage on small generated data: metrics and predictions beside the checkpoint,
missing modalities, ``clcr eval --json``, the regression metrics, and a run whose manifest
names a path instead of a dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner
from workspace import QUICK, clcr, error_line, extract_cfg, read_csv, snapshot, train_dir

from clcr_cli.cli import app
from clcr_cli.config import EvalConfig, train_config
from clcr_cli.pipeline import train as run_train
from clcr_cli.stages.evaluate import run_eval


def _predictions(train_dir: Path) -> list[dict[str, str]]:
    (eval_dir,) = (train_dir / "eval").iterdir()
    return read_csv(eval_dir / "predictions.csv")


def test_eval_writes_metrics_and_predictions_next_to_checkpoint(trained: Path):
    metrics = run_eval(trained, EvalConfig())
    rows = _predictions(trained)
    assert len(rows) == metrics["num_samples"]
    assert list(rows[0])[:4] == ["id", "split", "label", "prediction"]
    probs = np.array([[float(r[c]) for c in r if c.startswith("prob_")] for r in rows])
    assert probs.shape[1] == 8
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    acc = np.mean([int(r["label"]) == int(r["prediction"]) for r in rows])
    assert acc == pytest.approx(metrics["metrics"]["acc"])
    assert np.array(metrics["metrics"]["confusion"]).sum() == len(rows)
    assert len(metrics["level_weights"]) == 3 and len(metrics["modality_weights"]) == 3
    np.testing.assert_allclose(sum(metrics["level_weights"]), 1.0, atol=1e-4)


def test_eval_with_missing_modality_changes_predictions(trained: Path):
    clean = run_eval(trained, EvalConfig())
    missing = run_eval(trained, EvalConfig(missing=("text",)))
    assert missing["missing"] == ["text"]
    assert missing["loss"] != clean["loss"]


def test_cli_eval_json(workdir: Path, trained: Path):
    args = ["eval", "--task", "synth", "--workdir", str(workdir), "--json"]
    for k, v in QUICK.items():
        args += ["--set", f"{k}={json.dumps(v)}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["runs"][0]["train"] == str(trained)
    assert payload["mean_std"]["acc"][1] == 0.0


@pytest.mark.slow
def test_regression_task_reports_mosi_metrics(workdir: Path):
    out = run_train(train_config({}, {"task": "synth-reg", **QUICK}), extract_cfg("synth-reg"), workdir)
    m = run_eval(out, EvalConfig())["metrics"]
    assert set(m) == {"mae", "corr", "acc7", "acc5", "has0_acc2", "has0_f1", "non0_acc2", "non0_f1"}
    assert m["corr"] > 0.3


# --- paths read from a run's files stay inside the run folder -----------------------------------


@pytest.mark.parametrize("name", ["../../../escape", "/ABS/evil", "..", "a/b"])
def test_eval_run_refuses_a_dataset_name_that_is_a_path(ws: Path, name: str):
    run = train_dir(ws)
    manifest = json.loads((run / "manifest.json").read_text())
    name = name.replace("/ABS", str(ws))
    manifest["dataset"] = name
    (run / "manifest.json").write_text(json.dumps(manifest))
    before = snapshot(ws)
    result = clcr("eval", "--run", run, "--workdir", ws / "data", "--eval-batch-size", "7")
    assert error_line(result) == (
        f"error: {run / 'manifest.json'}: dataset {name!r} is not a plain name (letters, digits, '_', '.', '-')"
    )
    assert snapshot(ws) == before  # nothing written anywhere, in the workspace or beside it
    assert not (ws / "escape").exists() and not (ws / "evil").exists()
