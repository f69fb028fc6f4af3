"""Stage ``report``: every result in the workspace on one page (Markdown and HTML).

Inputs:   the complete eval, ablate and noise outputs, train histories and mechanism
          diagnostics (``diagnostics.json``) under ``workdir``.
Outputs:  ``<workdir>/report/``
            report.md, report.html   the same sections, tables and figures
            *.png                    training curves per run, InterCAD level and modality
                                     weights per task (the paper's "adaptive modality
                                     importance"), copies of the noise curves
Not cached: the report reflects whatever the workspace holds when it is made. An output
that is damaged (``clcr status`` calls it corrupt) or whose files cannot be read is left
out and listed, with the reason, under "Unreadable outputs"; the rest is reported.
"""

from __future__ import annotations

import csv
import html
import json
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from rich.console import Console

from clcr_cli.cache import atomic_write_text, complete_outputs, is_folder_name, list_outputs
from clcr_cli.errors import DataError
from clcr_cli.metrics import METRIC_NAMES, metric_label
from clcr_cli.plots import plot_training_curves, plot_weights
from clcr_cli.runs import ABLATION_CSV, METRICS_FILE, ROBUSTNESS_CSV, sweep_title
from clcr_cli.training.inference import META_FILE
from clcr_cli.training.loop import DIAGNOSTICS, HISTORY

REPORT_DIR = "report"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
T = TypeVar("T")


@dataclass
class Section:
    title: str
    text: str = ""
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # file names inside the report folder


def readable(folders: Iterable[Path], read: Callable[[Path], T], unreadable: list[str]) -> list[T]:
    """``read(folder)`` of every folder; a folder that cannot be read is added to
    ``unreadable`` (with the reason) instead, and the others are reported."""
    out = []
    for folder in folders:
        try:
            out.append(read(folder))
        except Exception as exc:  # any damage to one output's files must not stop the report
            reason = " ".join(str(exc).split())[:200]
            unreadable.append(f"{folder}: {type(exc).__name__}: {reason}")
    return out


def _read_csv_table(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as fh:
        header, *rows = list(csv.reader(fh))
    return header, rows


@dataclass(frozen=True)
class Evaluation:
    """What the report uses of one ``metrics.json``, every field checked as it is read."""

    task: str
    target: str
    row: list[str]  # the cells of its table row
    full: bool  # a clean evaluation of the full CLCR model
    weights: dict[str, list[float] | None]  # level_weights, modality_weights (means)
    labels: dict[str, list[str]]  # the labels of the weights' bars


def read_evaluation(folder: Path) -> Evaluation:
    r = json.loads((folder / METRICS_FILE).read_text())
    if not is_folder_name(r["task"]):
        raise ValueError(f"task {r['task']!r} is not a plain name")
    missing = [str(m) for m in r["missing"]]
    row = [r["task"], str(r["model"]), str(r["variant"]), str(r["seed"]), str(r["split"]),
           ",".join(missing) or "-", *(f"{float(r['metrics'][n]):.4f}" for n in METRIC_NAMES[r["target"]])]
    weights = {k: None if r[k] is None else [float(v) for v in r[k]] for k in ("level_weights", "modality_weights")}
    modalities = [str(m) for m in r["modalities"]]
    if weights["modality_weights"] is not None and len(weights["modality_weights"]) != len(modalities):
        raise ValueError("modality_weights and modalities differ in length")
    levels = [f"level {i + 1}" for i in range(len(weights["level_weights"] or []))]
    full = r["model"] == "clcr" and r["variant"] == "full" and not missing
    return Evaluation(r["task"], r["target"], row, full, weights,
                      {"level_weights": levels, "modality_weights": modalities})


def evaluation_section(evaluations: list[Evaluation]) -> Section:
    section = Section("Evaluations", "One row per evaluated run (`clcr eval`).")
    for target in ("classification", "regression"):
        rows = [e.row for e in evaluations if e.target == target]
        if rows:
            names = [metric_label(n) for n in METRIC_NAMES[target]]
            section.tables.append((["task", "model", "variant", "seed", "split", "missing", *names], rows))
    return section


def weights_section(evaluations: list[Evaluation], out: Path) -> Section:
    """Mean InterCAD weights of the full CLCR model per task (clean test evaluations);
    runs of one task with other levels or modalities (another num_levels) are their own group."""
    section = Section("Adaptive level and modality importance",
                      "InterCAD's level weights w and shared-path modality weights, averaged over "
                      "test samples and seeds of the full CLCR model.")
    for kind, key in (("level", "level_weights"), ("modality", "modality_weights")):
        groups: dict[tuple[str, tuple[str, ...]], list[list[float]]] = {}
        for e in evaluations:
            if e.full and e.weights[key] is not None:
                groups.setdefault((e.task, tuple(e.labels[key])), []).append(e.weights[key])
        for (task, labels), rows in groups.items():
            mean = [sum(col) / len(col) for col in zip(*rows, strict=True)]
            alone = sum(t == task for t, _ in groups) == 1
            name = f"{kind}_weights_{task}.png" if alone else f"{kind}_weights_{task}-{len(labels)}.png"
            plot_weights({task: mean}, list(labels), out / name, f"{task}: {kind} weights")
            section.images.append(name)
            section.tables.append((["task", *labels], [[task, *(f"{v:.3f}" for v in mean)]]))
    return section


def _share(stats: dict, key: str) -> str:
    return f"{float(stats[key]):.3f}" if key in stats else "-"


def mechanism_rows(folder: Path) -> list[list[str]]:
    """One row per level of a trained run's diagnostics.json (none without one)."""
    path = folder / DIAGNOSTICS
    if not path.is_file():
        return []
    diag = json.loads(path.read_text())
    meta = json.loads((folder / META_FILE).read_text())["model_config"]
    weights = diag.get("level_weights", [])
    rows = []
    for i, level in enumerate(diag["levels"]):
        alpha = level.get("alpha", {})
        rows.append([
            folder.name, f"{meta['model']}/{meta['variant']}", str(level["level"]),
            _share(alpha, "mean"), _share(alpha, "below_0.05"), _share(alpha, "above_0.95"),
            _share(level, "participation"), _share(level, "threshold"),
            f"{float(weights[i]):.3f}" if i < len(weights) else "-",
        ])
    return rows


def mechanisms_section(trained: list[Path], unreadable: list[str]) -> Section:
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
    body = [row for rows in readable(trained, mechanism_rows, unreadable) for row in rows]
    if body:
        section.tables.append((header, body))
    else:
        section.text = "No trained CLCR run with diagnostics in this workspace."
    return section


def _rounded(cell: str) -> str:
    try:
        return f"{float(cell):.4f}" if "." in cell else cell
    except ValueError:
        return cell


def noise_section(folder: Path, out: Path) -> Section:
    header, rows = _read_csv_table(folder / ROBUSTNESS_CSV)
    table = (header, [[_rounded(c) for c in row] for row in rows])
    images = []
    for png in sorted(folder.glob("*.png")):
        shutil.copyfile(png, out / f"{folder.name}-{png.name}")
        images.append(f"{folder.name}-{png.name}")
    return Section(f"Noise robustness: {sweep_title(folder)}, {folder.name}", f"From `{folder}`.", [table], images)


def curves_image(folder: Path, out: Path) -> str:
    name = f"curves_{folder.name}.png"
    plot_training_curves(folder / HISTORY, out / name)
    return name


def report_sections(workdir: Path, out: Path) -> tuple[list[Section], list[str]]:
    """The report's sections (images written to ``out``) and the outputs left out as unreadable."""
    unreadable = [f"{r.path}: {r.problem}" for r in list_outputs(workdir) if r.state == "corrupt"]
    evaluations = readable(complete_outputs(workdir, "eval"), read_evaluation, unreadable)
    trained = complete_outputs(workdir, "train")
    sections = [evaluation_section(evaluations), weights_section(evaluations, out),
                mechanisms_section(trained, unreadable)]
    sections += readable(
        complete_outputs(workdir, "ablate"),
        lambda d: Section(f"Ablation: {d.name}", f"From `{d}`.", [_read_csv_table(d / ABLATION_CSV)]),
        unreadable,
    )
    sections += readable(complete_outputs(workdir, "noise"), lambda d: noise_section(d, out), unreadable)
    sections.append(Section("Training curves", images=readable(trained, lambda d: curves_image(d, out), unreadable)))
    if unreadable:
        body = [[line] for line in unreadable]
        sections.append(Section("Unreadable outputs", "Left out of this report: damaged or unreadable "
                                "(`clcr status --verify` checks every file).", [(["output: problem"], body)]))
    return sections, unreadable


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
    if not Path(workdir).is_dir():
        raise DataError(workdir, "no such workspace folder (nothing to report)")
    out = Path(workdir) / REPORT_DIR
    out.mkdir(exist_ok=True)
    sections, unreadable = report_sections(Path(workdir), out)
    atomic_write_text(out / REPORT_MD, to_markdown(sections))
    atomic_write_text(out / REPORT_HTML, to_html(sections))
    if unreadable:
        console.print(f"[yellow]{len(unreadable)} output(s) could not be read[/]: listed under "
                      "Unreadable outputs in the report")
    console.print(f"[green]report[/] -> {out / REPORT_HTML}")
    return out
