"""``clcr report``: every result of a workspace collected into report.md and report.html;
evaluation rows named by run and options, the seeds of a configuration aggregated; the noise
sections named by what was swept, numbers rounded; the HTML the Markdown rendered; a damaged
output listed as unreadable, the rest still reported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner
from workspace import QUICK, clcr, extract_cfg, rewrite, train_dir

from clcr_cli.cli import app
from clcr_cli.config import AblateConfig, EvalConfig, NoiseConfig, key_options, train_config
from clcr_cli.pipeline import ablate as run_ablate
from clcr_cli.pipeline import noise as run_noise
from clcr_cli.pipeline import train as run_train
from clcr_cli.stages.evaluate import run_eval
from clcr_cli.stages.report import (
    Section,
    evaluation_section,
    noise_section,
    read_evaluation,
    seeds_section,
    to_html,
    to_markdown,
)


@pytest.fixture(scope="module")
def workdir(workdir: Path) -> Path:
    """This module's workspace (tests/conftest.py) with what a report collects: the run's
    evaluation, a noise sweep and an ablation (two variants, two seeds each, of a shorter
    training), as test_evaluate.py, test_noise.py and test_ablate.py make them."""
    base = train_config({}, {"task": "synth", **QUICK})
    run_eval(run_train(base, extract_cfg(), workdir), EvalConfig())
    noise = NoiseConfig(sigmas=(0.0, 0.5, 4.0), noise_seeds=(0, 1), models=("clcr",), modality="all")
    run_noise(base, extract_cfg(), noise, workdir)
    ablate = AblateConfig(variants=("full", "full-mix"), seeds=(0, 1))
    run_ablate(train_config({}, {"task": "synth", **QUICK, "epochs": 2}), extract_cfg(), ablate, workdir)
    return workdir


def _tables(md: str, title: str) -> list[list[list[str]]]:
    """The tables of the report section ``title``, each a list of rows of cells (header first)."""
    body = md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    tables, rows = [], []
    for line in [*body.splitlines(), ""]:
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip()[1:-1].split(" | ")])
        elif not line.startswith("|---") and rows:
            tables.append(rows)
            rows = []
    return tables


def test_report_collects_every_result(workdir: Path, trained: Path):
    # the workdir fixture above filled the workspace with an evaluation, a sweep and an ablation
    result = CliRunner().invoke(app, ["report", "--workdir", str(workdir)])
    assert result.exit_code == 0, result.output
    out = workdir / "report"
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    for title in ("Evaluations", "Evaluations per seed", "Adaptive level and modality importance", "Ablation:",
                  "Noise robustness:"):
        assert title in md and html_escape(title) in page
    assert "| synth | clcr | full | 0 | test |" in md
    assert f"curves_{trained.name}.png" in md and (out / f"curves_{trained.name}.png").is_file()
    # the run and the ablation's full runs are two configurations of one task: a figure each
    for kind in ("level", "modality"):
        images = [line[2:].split("]")[0] for line in md.splitlines() if line.startswith(f"![{kind}_weights_synth")]
        assert len(images) == 2, images
        for name in images:
            assert (out / name).read_bytes()[:4] == b"\x89PNG"
    separators = [line for line in md.splitlines() if line.startswith("|---")]
    assert page.count("<table>") == len(separators) > 0 and "<img src=" in page
    assert "<code>clcr eval</code>" in page and "`" not in page.split("<body>")[1]  # Markdown rendered


def test_report_rows_name_run_and_options_and_aggregate_seeds(workdir: Path, trained: Path):
    assert CliRunner().invoke(app, ["report", "--workdir", str(workdir)]).exit_code == 0
    md = (workdir / "report" / "report.md").read_text()
    (configs,) = _tables(md, "Evaluations")
    header, rows = configs[0], configs[1:]
    assert header[:8] == ["task", "model", "variant", "split", "missing", "options", "n", "seeds"]
    assert header[8] == "Acc (mean ± std, ddof 1)"
    short, long = "batch_size=16, d=32, epochs=2, lr=0.003", "batch_size=16, d=32, epochs=12, lr=0.003"
    by_config = {(r[2], r[5]): r for r in rows}
    assert sorted(by_config) == [("full", long), ("full", short), ("full-mix", short)]  # runs told apart
    assert by_config[("full", long)][6:8] == ["1", "0"] and by_config[("full", short)][6:8] == ["2", "0,1"]
    (seeds,) = _tables(md, "Evaluations per seed")
    assert seeds[0][:8] == ["task", "model", "variant", "seed", "split", "missing", "run", "options"]
    assert ["synth", "clcr", "full", "0", "test", "-", trained.name.rsplit("-", 1)[1], long] in [r[:8] for r in seeds]
    acc = [float(r[8]) for r in seeds[1:] if (r[2], r[7]) == ("full", short)]
    assert len(acc) == 2
    mean, std = by_config[("full", short)][8].split(" ± ")
    assert (float(mean), float(std)) == pytest.approx((np.mean(acc), np.std(acc, ddof=1)), abs=1e-4)


def _evaluated_run(workdir: Path, name: str, seed: int, acc: float, **options: object) -> Path:
    """A train output's params.json and one evaluation's metrics.json inside it, as the
    train and eval stages write them (no training)."""
    params = key_options(train_config({}, {"task": "synth", "seed": seed, **options}))
    run = workdir / "train" / f"synth-{name}"
    evaluation = run / "eval" / "synth-0123456789ab"
    evaluation.mkdir(parents=True)
    (run / "params.json").write_text(json.dumps({"stage": "train", "key": name, "params": params}))
    (evaluation / "metrics.json").write_text(json.dumps({
        "task": "synth", "target": "classification", "split": "test", "missing": [], "train": str(run),
        "train_key": name, "model": "clcr", "variant": "full", "seed": seed,
        "metrics": {"acc": acc, "f1_macro": acc - 0.1, "f1_weighted": acc - 0.05, "confusion": [[1]]},
        "modalities": ["audio", "video"], "level_weights": [0.5, 0.3, 0.2], "modality_weights": [0.6, 0.4],
    }))
    return evaluation


def test_seeds_of_one_configuration_are_one_row_with_mean_std_and_n(tmp_path: Path):
    runs = [("aaaaaaaaaaa0", 0, 0.70, {}), ("aaaaaaaaaaa1", 1, 0.74, {}), ("aaaaaaaaaaa2", 2, 0.81, {}),
            ("bbbbbbbbbbbb", 0, 0.60, {"lr": 0.01})]
    evaluations = [read_evaluation(_evaluated_run(tmp_path, name, seed, acc, **options))
                   for name, seed, acc, options in runs]
    (table,) = evaluation_section(evaluations).tables
    header, rows = table
    assert header[6:9] == ["n", "seeds", "Acc (mean ± std, ddof 1)"]
    std = np.std([0.70, 0.74, 0.81], ddof=1)
    assert rows[0][:9] == ["synth", "clcr", "full", "test", "-", "(defaults)", "3", "0,1,2",
                           f"{np.mean([0.70, 0.74, 0.81]):.4f} ± {std:.4f}"]
    assert rows[1][5:9] == ["lr=0.01", "1", "0", "0.6000"]  # one seed: no spread to show
    (per_seed,) = seeds_section(evaluations).tables
    assert [r[3] for r in per_seed[1]] == ["0", "1", "2", "0"]
    assert [r[6:8] for r in per_seed[1]][-1] == ["bbbbbbbbbbbb", "lr=0.01"]


def test_html_renders_the_markdown_of_a_section(tmp_path: Path):
    section = Section("Runs", "From `train/synth-abc` (see [the guide](docs/guide.md#report), **bold**) <b>&",
                      [(["name", "a|b"], [["x*y", "<i>"]])], ["curves.png"])
    md, page = to_markdown([section]), to_html([section])
    assert "| name | a\\|b |" in md and "| x\\*y | <i> |" in md  # cells are plain text in both
    assert ("<p>From <code>train/synth-abc</code> (see <a href=\"docs/guide.md#report\">the guide</a>, "
            "<strong>bold</strong>) &lt;b&gt;&amp;</p>") in page
    assert "<th>name</th><th>a|b</th>" in page and "<td>x*y</td><td>&lt;i&gt;</td>" in page
    assert '<img src="curves.png" alt="curves.png">' in page and "<h2>Runs</h2>" in page


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
