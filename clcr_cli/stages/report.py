"""Stage ``report``: every result in the workspace on one page (Markdown and HTML).

Inputs:   the complete eval, ablate and noise outputs, train histories and mechanism
          diagnostics (``diagnostics.json``) under ``workdir``.
Outputs:  ``<workdir>/report/``
            report.md, report.html   the same sections, tables and figures
            *.png                    training curves per run, InterCAD level and modality
                                     weights per task (the paper's "adaptive modality
                                     importance"), copies of the noise curves
Not cached: the report reflects whatever the workspace holds when it is made.
"""

from __future__ import annotations

import csv
import html
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from clcr_cli.cache import complete_outputs
from clcr_cli.metrics import METRIC_NAMES, metric_label
from clcr_cli.plots import plot_training_curves, plot_weights
from clcr_cli.stages.ablate import ABLATION_CSV
from clcr_cli.stages.evaluate import METRICS_FILE
from clcr_cli.stages.noise import ROBUSTNESS_CSV
from clcr_cli.training.inference import META_FILE
from clcr_cli.training.loop import DIAGNOSTICS, HISTORY

REPORT_DIR = "report"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"


@dataclass
class Section:
    title: str
    text: str = ""
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # file names inside the report folder


def _read_csv_table(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def evaluation_section(workdir: Path) -> tuple[Section, list[dict]]:
    results = [json.loads((d / METRICS_FILE).read_text()) for d in complete_outputs(workdir, "eval")]
    section = Section("Evaluations", "One row per evaluated run (`clcr eval`).")
    for target in ("classification", "regression"):
        rows = [r for r in results if r["target"] == target]
        if not rows:
            continue
        names = list(METRIC_NAMES[target])
        header = ["task", "model", "variant", "seed", "split", "missing", *(metric_label(n) for n in names)]
        body = [
            [r["task"], r["model"], r["variant"], str(r["seed"]), r["split"], ",".join(r["missing"]) or "-",
             *(f"{r['metrics'][n]:.4f}" for n in names)]
            for r in rows
        ]
        section.tables.append((header, body))
    return section, results


def weights_section(results: list[dict], out: Path) -> Section:
    """Mean InterCAD weights of the full CLCR model per task (clean test evaluations)."""
    section = Section("Adaptive level and modality importance",
                      "InterCAD's level weights w and shared-path modality weights, averaged over "
                      "test samples and seeds of the full CLCR model.")
    full = [r for r in results if r["model"] == "clcr" and r["variant"] == "full" and not r["missing"]
            and r["level_weights"] is not None]
    for kind, key in (("level", "level_weights"), ("modality", "modality_weights")):
        by_task: dict[str, list[list[float]]] = {}
        labels: dict[str, list[str]] = {}
        for r in full:
            by_task.setdefault(r["task"], []).append(r[key])
            labels[r["task"]] = r["modalities"] if kind == "modality" else [f"level {i + 1}" for i in range(len(r[key]))]
        for task, rows in by_task.items():
            mean = [sum(col) / len(col) for col in zip(*rows, strict=True)]
            name = f"{kind}_weights_{task}.png"
            plot_weights({task: mean}, labels[task], out / name, f"{task}: {kind} weights")
            section.images.append(name)
            section.tables.append((["task", *labels[task]], [[task, *(f"{v:.3f}" for v in mean)]]))
    return section


def _share(stats: dict, key: str) -> str:
    return f"{stats[key]:.3f}" if key in stats else "-"


def mechanisms_section(workdir: Path) -> Section:
    """What each trained CLCR's budget and InterCAD did on its valid split (diagnostics.json)."""
    section = Section(
        "Mechanisms: token budget and InterCAD weights",
        "Per trained run and level, on its valid split: the budget weights alpha over valid tokens "
        "(mean, share below 0.05 and above 0.95), the learned participation rate rho_l and "
        "threshold theta_l, and InterCAD's mean level weight w_l. A budget that selects has "
        "tokens near 0 and near 1; an inert one sits at alpha ~ r.",
    )
    header = ["run", "model/variant", "level", "alpha mean", "alpha < 0.05", "alpha > 0.95",
              "rho_l", "theta_l", "w_l"]
    body = []
    for d in complete_outputs(workdir, "train"):
        path = d / DIAGNOSTICS
        if not path.is_file():
            continue
        diag = json.loads(path.read_text())
        meta = json.loads((d / META_FILE).read_text())["model_config"]
        weights = diag.get("level_weights", [])
        for i, level in enumerate(diag["levels"]):
            alpha = level.get("alpha", {})
            body.append([
                d.name, f"{meta['model']}/{meta['variant']}", str(level["level"]),
                _share(alpha, "mean"), _share(alpha, "below_0.05"), _share(alpha, "above_0.95"),
                _share(level, "participation"), _share(level, "threshold"),
                f"{weights[i]:.3f}" if i < len(weights) else "-",
            ])
    if body:
        section.tables.append((header, body))
    else:
        section.text = "No trained CLCR run with diagnostics in this workspace."
    return section


def report_sections(workdir: Path, out: Path) -> list[Section]:
    evaluation, results = evaluation_section(workdir)
    sections = [evaluation, weights_section(results, out), mechanisms_section(workdir)]
    for d in complete_outputs(workdir, "ablate"):
        sections.append(Section(f"Ablation: {d.name}", f"From `{d}`.", [_read_csv_table(d / ABLATION_CSV)]))
    for d in complete_outputs(workdir, "noise"):
        images = []
        for png in sorted(d.glob("*.png")):
            shutil.copyfile(png, out / f"{d.name}-{png.name}")
            images.append(f"{d.name}-{png.name}")
        sections.append(Section(f"Noise robustness: {d.name}", f"From `{d}`.",
                                [_read_csv_table(d / ROBUSTNESS_CSV)], images))
    curves = Section("Training curves")
    for d in complete_outputs(workdir, "train"):
        name = f"curves_{d.name}.png"
        plot_training_curves(d / HISTORY, out / name)
        curves.images.append(name)
    sections.append(curves)
    return sections


def to_markdown(sections: list[Section]) -> str:
    lines = ["# clcr report", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        if s.text:
            lines += [s.text, ""]
        for header, rows in s.tables:
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(r) + " |" for r in rows]
            lines.append("")
        lines += [f"![{img}]({img})" for img in s.images]
        lines.append("")
    return "\n".join(lines)


def to_html(sections: list[Section]) -> str:
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>clcr report</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px}"
             "img{max-width:100%}</style></head><body><h1>clcr report</h1>"]
    for s in sections:
        parts.append(f"<h2>{e(s.title)}</h2>")
        if s.text:
            parts.append(f"<p>{e(s.text)}</p>")
        for header, rows in s.tables:
            parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows]
            parts.append("</table>")
        parts += [f"<img src='{e(img)}' alt='{e(img)}'>" for img in s.images]
    parts.append("</body></html>")
    return "\n".join(parts)


def run_report(workdir: Path, console: Console | None = None) -> Path:
    """Write ``<workdir>/report/report.md`` and ``report.html``; return the folder."""
    console = console or Console(stderr=True)
    out = Path(workdir) / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    sections = report_sections(Path(workdir), out)
    (out / REPORT_MD).write_text(to_markdown(sections))
    (out / REPORT_HTML).write_text(to_html(sections))
    console.print(f"[green]report[/] -> {out / REPORT_HTML}")
    return out
