"""``clcr report``: every result of a workspace collected into report.md and report.html;
the noise sections named by what was swept, numbers rounded; a damaged output listed as
unreadable, the rest still reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner
from workspace import QUICK, clcr, extract_cfg, rewrite, train_dir

from clcr_cli.cli import app
from clcr_cli.config import AblateConfig, EvalConfig, NoiseConfig, train_config
from clcr_cli.pipeline import ablate as run_ablate
from clcr_cli.pipeline import noise as run_noise
from clcr_cli.pipeline import train as run_train
from clcr_cli.stages.evaluate import run_eval
from clcr_cli.stages.report import noise_section


@pytest.fixture(scope="module")
def workdir(workdir: Path) -> Path:
    """This module's workspace (tests/conftest.py) with what a report collects: the run's
    evaluation, a noise sweep and an ablation, as test_evaluate.py, test_noise.py and
    test_ablate.py make them."""
    base = train_config({}, {"task": "synth", **QUICK})
    run_eval(run_train(base, extract_cfg(), workdir), EvalConfig())
    noise = NoiseConfig(sigmas=(0.0, 0.5, 4.0), noise_seeds=(0, 1), models=("clcr",), modality="all")
    run_noise(base, extract_cfg(), noise, workdir)
    ablate = AblateConfig(variants=("full", "full-mix"), seeds=(0,))
    run_ablate(train_config({}, {"task": "synth", **QUICK, "epochs": 2}), extract_cfg(), ablate, workdir)
    return workdir


def test_report_collects_every_result(workdir: Path, trained: Path):
    # the workdir fixture above filled the workspace with an evaluation, a sweep and an ablation
    result = CliRunner().invoke(app, ["report", "--workdir", str(workdir)])
    assert result.exit_code == 0, result.output
    out = workdir / "report"
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    for title in ("Evaluations", "Adaptive level and modality importance", "Ablation:", "Noise robustness:"):
        assert title in md and html_escape(title) in page
    assert "| synth | clcr | full | 0 | test |" in md
    assert f"curves_{trained.name}.png" in md and (out / f"curves_{trained.name}.png").is_file()
    for name in ("level_weights_synth.png", "modality_weights_synth.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    separators = [line for line in md.splitlines() if line.startswith("|---")]
    assert page.count("<table>") == len(separators) > 0 and "<img src=" in page


def html_escape(text: str) -> str:
    import html

    return html.escape(text)


@pytest.mark.parametrize(
    ("noise", "title"),
    [
        ({"sigmas": [0.0, 0.5]}, "Gaussian noise on features"),
        ({"sigmas": [0.0, 0.5], "level": "raw"}, "noise on the raw signal"),
        ({"sigmas": [0.0, 0.5], "missing_rates": [0.0, 0.5]}, "missing modalities"),
    ],
)
def test_noise_section_names_its_sweep_and_rounds(tmp_path: Path, noise: dict, title: str):
    folder = tmp_path / "synth-abc"
    folder.mkdir()
    (folder / "params.json").write_text(json.dumps({"stage": "noise", "params": {"base": {}, "noise": noise}}))
    (folder / "robustness.csv").write_text("model,modality,relative_robustness_acc\nclcr,all,0.8972222222222221\n")
    out = tmp_path / "report"
    out.mkdir()
    section = noise_section(folder, out)
    assert section.title == f"Noise robustness: {title}, synth-abc"
    assert section.tables == [(["model", "modality", "relative_robustness_acc"], [["clcr", "all", "0.8972"]])]


# --- damaged outputs ------------------------------------------------------------------------------


def test_report_survives_a_corrupt_metrics_json(ws: Path):
    metrics = next((train_dir(ws) / "eval").rglob("metrics.json"))
    rewrite(metrics, b'{"task": "synth", "metrics": ')
    result = clcr("report", "--workdir", ws / "data")
    assert result.exit_code == 0, result.output
    assert "1 output(s) could not be read" in result.output
    md = (ws / "data" / "report" / "report.md").read_text()
    assert f"| {metrics.parent}: JSONDecodeError: " in md
    assert f"curves_{train_dir(ws).name}.png" in md  # the rest is reported


@pytest.mark.slow
def test_report_survives_any_single_corrupt_file(ws: Path):
    workdir = ws / "data"
    files = [p for p in sorted(workdir.rglob("*")) if p.is_file() and not p.name.startswith(".lock")
             and "raw" not in p.relative_to(workdir).parts]
    assert len(files) > 10
    for path in files:
        saved = {p: p.read_bytes() for p in (path, path.parent / "manifest.json")}
        for recorded in (False, True):  # garbage the checksums catch, and garbage they were told of
            if recorded and path.name == "manifest.json":
                continue
            (rewrite if recorded else Path.write_bytes)(path, b"\xff\x00garbage")
            result = clcr("report", "--workdir", workdir)
            assert result.exit_code == 0, (path, result.output)
            md = (workdir / "report" / "report.md").read_text()
            assert md.startswith("# clcr report") and "## Training curves" in md, path
            if not recorded or path.name in ("metrics.json", "history.csv", "diagnostics.json", "model.json"):
                assert f"| {path.parent}: " in md, path  # listed as unreadable: damaged, or read and refused
            for p, content in saved.items():
                p.write_bytes(content)
