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


# --- per-sample diagnostics and the breakdown by corruption group -----------------------------


def test_eval_writes_per_sample_diagnostics_in_the_rows_of_predictions(trained: Path, monkeypatch):
    """diagnostics.csv holds one row per row of predictions.csv, the same ids in the same order;
    where the manifest has a corruption column, metrics.json breaks the results down by it."""
    from clcr_cli.stages import evaluate as stage
    from clcr_cli.store import FeatureStore

    def groups_of(store: Path) -> dict[str, str]:  # as a manifest's corruption column would say
        with FeatureStore(store) as opened:
            return {str(i): ("none", "audio", "video")[n % 3] for n, i in enumerate(opened.ids)}

    monkeypatch.setattr(stage, "manifest_groups", groups_of)
    metrics_summary = run_eval(trained, EvalConfig(split="valid"), force=True)
    (eval_dir,) = [d for d in (trained / "eval").iterdir()
                   if json.loads((d / "metrics.json").read_text())["split"] == "valid"]
    predictions = read_csv(eval_dir / "predictions.csv")
    diagnostics = read_csv(eval_dir / "diagnostics.csv")
    assert [r["id"] for r in diagnostics] == [r["id"] for r in predictions]
    assert {r["split"] for r in diagnostics} == {"valid"}
    modalities = ("text", "audio", "video")
    names = [f"{k}_{m}" for k in ("beta", "eta", "alpha", "probe") for m in modalities]
    assert set(names) <= set(diagnostics[0])
    beta = np.array([[float(r[f"beta_{m}"]) for m in modalities] for r in diagnostics])
    np.testing.assert_allclose(beta.sum(1), 1.0, atol=1e-4)
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert metrics["diagnostics_file"] == "diagnostics.csv"
    assert set(metrics["probes"]) == set(modalities) and all(0 <= v <= 1 for v in metrics["probes"].values())
    groups = metrics["breakdown"]["groups"]
    assert groups["all"]["acc"] == pytest.approx(metrics_summary["metrics"]["acc"])
    assert sum(groups[g]["n"] for g in groups if g != "all") == len(predictions)
    for group in set(groups) - {"all"}:  # each group's accuracy, recomputed from the two files
        rows = [p for p, d in zip(predictions, diagnostics, strict=True) if d["corruption"] == group]
        assert groups[group]["acc"] == pytest.approx(np.mean([r["label"] == r["prediction"] for r in rows]))
        assert groups[group]["beta_audio"] == pytest.approx(
            np.mean([float(d["beta_audio"]) for d in diagnostics if d["corruption"] == group]), abs=1e-5)
    assert set(metrics["breakdown"]["selection_auc"]) == {"audio", "video", "mean"}
    # the linear probes, and the default model's own auxiliary heads (lambda_aux = 1)
    assert set(metrics["breakdown"]["single_modality"]) == {f"{k}_{m}" for k in ("probe", "aux") for m in modalities}


def test_eval_without_a_corruption_column_has_no_breakdown(trained: Path):
    from clcr_cli.runs import train_manifest, train_store
    from clcr_cli.stages.evaluate import manifest_groups

    assert manifest_groups(train_store(trained, train_manifest(trained))) is None  # synth: no manifest
    metrics = run_eval(trained, EvalConfig(split="train"))
    (eval_dir,) = [d for d in (trained / "eval").iterdir()
                   if json.loads((d / "metrics.json").read_text())["split"] == "train"]
    full = json.loads((eval_dir / "metrics.json").read_text())
    assert "breakdown" not in full and set(full["probes"]) == {"text", "audio", "video"}
    assert "corruption" not in read_csv(eval_dir / "diagnostics.csv")[0]
    assert metrics["metrics"]["acc"] >= 0


def test_a_failed_evaluation_leaves_no_folder(trained: Path, monkeypatch):
    """Evaluation cannot resume: when it fails, its unfinished eval/<key>/ is removed, so
    ``clcr status`` lists nothing half-made and a rerun starts clean."""
    from clcr_cli.stages import evaluate as stage

    def fail(*args, **kwargs):
        raise RuntimeError("out of memory")

    before = sorted(p.name for p in (trained / "eval").iterdir()) if (trained / "eval").exists() else []
    monkeypatch.setattr(stage, "load_for_eval", fail)
    with pytest.raises(RuntimeError, match="out of memory"):
        run_eval(trained, EvalConfig(split="valid", missing=("video",)))
    after = sorted(p.name for p in (trained / "eval").iterdir()) if (trained / "eval").exists() else []
    assert after == before
    monkeypatch.undo()
    assert run_eval(trained, EvalConfig(split="valid", missing=("video",)))["num_samples"] > 0


def test_probe_samples_zero_skips_the_probes(trained: Path):
    run_eval(trained, EvalConfig(split="valid", probe_samples=0))
    (eval_dir,) = [d for d in (trained / "eval").iterdir()
                   if json.loads((d / "params.json").read_text())["params"].get("probe_samples") == 0]
    assert json.loads((eval_dir / "metrics.json").read_text())["probes"] == {}
    header = read_csv(eval_dir / "diagnostics.csv")[0]
    assert not any(name.startswith("probe_") for name in header) and "beta_audio" in header
