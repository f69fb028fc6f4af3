"""Stage ``report``: every result in the workspace on one page (Markdown and HTML).

Inputs:   the complete eval, ablate and noise outputs, train histories and mechanism
          diagnostics (``diagnostics.json``) under ``workdir``.
Outputs:  ``<workdir>/report/``
            report.md, report.html   the same sections, tables and figures: the HTML is
                                     the Markdown converted (:func:`markdown_to_html`)
            *.png                    training curves per run, InterCAD level and modality
                                     weights per task and configuration (the paper's
                                     "adaptive modality importance"), copies of the noise
                                     curves
Not cached: the report reflects whatever the workspace holds when it is made. An output
that is damaged (``clcr status`` calls it corrupt) or whose files cannot be read is left
out and listed, with the reason, under "Unreadable outputs"; the rest is reported.

A row of an evaluation names its run (the train output's key) and the train options that
differ from the task's defaults; the runs of one configuration (the same options but the
seed) are one row with mean ± std over their seeds (ddof 1) and n, their seeds a table of
their own.
"""

from __future__ import annotations

import csv
import html
import json
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console

from clcr_cli.cache import (
    PARAMS,
    atomic_write_text,
    canonical_json,
    complete_outputs,
    is_folder_name,
    list_outputs,
)
from clcr_cli.config import non_default_options
from clcr_cli.errors import DataError
from clcr_cli.metrics import METRIC_NAMES, STD_LABEL, mean_std, metric_label
from clcr_cli.plots import plot_training_curves, plot_weights
from clcr_cli.runs import ABLATION_CSV, METRICS_FILE, ROBUSTNESS_CSV, sweep_title
from clcr_cli.training.inference import META_FILE
from clcr_cli.training.loop import DIAGNOSTICS, HISTORY

REPORT_DIR = "report"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
SHOWN_APART = ("model", "variant", "seed")  # train options with columns of their own
T = TypeVar("T")


@dataclass
class Section:
    title: str
    text: str = ""  # Markdown: `code`, [text](link) and **bold**
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


def run_options(train_dir: Path) -> tuple[dict[str, Any], str]:
    """A train output's options (its params.json) and those that differ from its task's
    defaults as ``k=v, ...`` (``(defaults)`` for none; model, variant and seed left out)."""
    params = json.loads((train_dir / PARAMS).read_text())["params"]
    if not isinstance(params, dict):
        raise ValueError(f"{train_dir / PARAMS} holds no options")
    given = non_default_options("train", params)
    shown = ", ".join(f"{k}={v}" for k, v in sorted(given.items()) if k not in SHOWN_APART and v is not None)
    return params, shown or "(defaults)"


@dataclass(frozen=True)
class Evaluation:
    """What the report uses of one ``metrics.json`` and its run's options, every field
    checked as it is read."""

    task: str
    target: str
    model: str
    variant: str
    seed: str
    split: str
    missing: str  # the modalities evaluated as missing, "-" for none
    run: str  # the key of the train output evaluated
    options: str  # its train options that differ from the task's defaults (run_options)
    config: str  # what the seeds of one configuration share: the options but the seed, the evaluation's
    metrics: dict[str, float]  # METRIC_NAMES[target]
    full: bool  # a clean evaluation of the full CLCR model
    weights: dict[str, list[float] | None]  # level_weights, modality_weights (means)
    labels: dict[str, list[str]]  # the labels of the weights' bars


def read_evaluation(folder: Path) -> Evaluation:
    """The evaluation in ``folder``, which sits in ``<train output>/eval/``."""
    r = json.loads((folder / METRICS_FILE).read_text())
    if not is_folder_name(r["task"]):
        raise ValueError(f"task {r['task']!r} is not a plain name")
    params, options = run_options(folder.parent.parent)
    missing = ",".join(str(m) for m in r["missing"]) or "-"
    metrics = {n: float(r["metrics"][n]) for n in METRIC_NAMES[r["target"]]}
    weights = {k: None if r[k] is None else [float(v) for v in r[k]] for k in ("level_weights", "modality_weights")}
    modalities = [str(m) for m in r["modalities"]]
    if weights["modality_weights"] is not None and len(weights["modality_weights"]) != len(modalities):
        raise ValueError("modality_weights and modalities differ in length")
    levels = [f"level {i + 1}" for i in range(len(weights["level_weights"] or []))]
    config = canonical_json({"task": r["task"], "params": {k: v for k, v in params.items() if k != "seed"},
                             "split": r["split"], "missing": missing})
    full = r["model"] == "clcr" and r["variant"] == "full" and missing == "-"
    return Evaluation(r["task"], r["target"], str(r["model"]), str(r["variant"]), str(r["seed"]), str(r["split"]),
                      missing, str(r["train_key"]), options, config, metrics, full, weights,
                      {"level_weights": levels, "modality_weights": modalities})


def configurations(evaluations: list[Evaluation]) -> list[list[Evaluation]]:
    """The evaluations grouped by configuration (:attr:`Evaluation.config`), in order of
    first appearance, each group by seed."""
    groups: dict[str, list[Evaluation]] = {}
    for e in evaluations:
        groups.setdefault(e.config, []).append(e)
    return [sorted(g, key=lambda e: int(e.seed) if e.seed.isdigit() else e.seed) for g in groups.values()]


def _mean_std(mean: float, std: float, n: int) -> str:
    """``mean ± std``; one seed has no spread (ddof 1): its value alone."""
    return f"{mean:.4f}" if n == 1 else f"{mean:.4f} ± {std:.4f}"


def evaluation_section(evaluations: list[Evaluation]) -> Section:
    """One row per configuration: mean ± std of every metric over its seeds, and n."""
    section = Section("Evaluations", "One row per configuration (`clcr eval`): the runs whose train options "
                      "differ in their seed only, evaluated alike. Each metric is the mean ± std over their "
                      f"n seeds ({STD_LABEL}; one seed: its value). **options**: the train options that "
                      "differ from the task's defaults.")
    for target in ("classification", "regression"):
        groups = [g for g in configurations(evaluations) if g[0].target == target]
        if groups:
            names = [f"{metric_label(n)} (mean ± {STD_LABEL})" for n in METRIC_NAMES[target]]
            header = ["task", "model", "variant", "split", "missing", "options", "n", "seeds", *names]
            rows = []
            for g in groups:
                first, summary = g[0], mean_std([e.metrics for e in g])
                rows.append([first.task, first.model, first.variant, first.split, first.missing, first.options,
                             str(len(g)), ",".join(e.seed for e in g),
                             *(_mean_std(*summary[n], len(g)) for n in METRIC_NAMES[target])])
            section.tables.append((header, rows))
    return section


def seeds_section(evaluations: list[Evaluation]) -> Section:
    """One row per evaluated run, the seeds of a configuration together."""
    section = Section("Evaluations per seed", "One row per evaluated run: its seed and key "
                      "(its folder: `train/<task>-<key>`).")
    for target in ("classification", "regression"):
        rows = [[e.task, e.model, e.variant, e.seed, e.split, e.missing, e.run, e.options,
                 *(f"{e.metrics[n]:.4f}" for n in METRIC_NAMES[target])]
                for g in configurations(evaluations) for e in g if e.target == target]
        if rows:
            names = [metric_label(n) for n in METRIC_NAMES[target]]
            section.tables.append((["task", "model", "variant", "seed", "split", "missing", "run", "options",
                                    *names], rows))
    return section


def weights_section(evaluations: list[Evaluation], out: Path) -> Section:
    """Mean InterCAD weights of the full CLCR model per task and configuration (clean
    evaluations); runs of one task with other levels or modalities are their own group."""
    section = Section("Adaptive level and modality importance",
                      "InterCAD's level weights w and shared-path modality weights of the full CLCR model, "
                      "averaged over the evaluated samples and the n seeds of a configuration.")
    for kind, key in (("level", "level_weights"), ("modality", "modality_weights")):
        groups: dict[tuple[str, str, tuple[str, ...]], list[Evaluation]] = {}
        for e in evaluations:
            if e.full and e.weights[key] is not None:
                groups.setdefault((e.task, e.config, tuple(e.labels[key])), []).append(e)
        for (task, _, labels), group in groups.items():
            mean = [sum(col) / len(col) for col in zip(*(e.weights[key] for e in group), strict=True)]
            first = group[0]
            alone = sum(t == task for t, _, _ in groups) == 1
            name = f"{kind}_weights_{task}.png" if alone else f"{kind}_weights_{task}-{first.run}-{first.split}.png"
            plot_weights({task: mean}, list(labels), out / name, f"{task}: {kind} weights")
            section.images.append(name)
            section.tables.append((["task", "split", "options", "n", *labels],
                                   [[task, first.split, first.options, str(len(group)), *(f"{v:.3f}" for v in mean)]]))
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
    options = run_options(folder)[1]
    weights = diag.get("level_weights", [])
    rows = []
    for i, level in enumerate(diag["levels"]):
        alpha = level.get("alpha", {})
        rows.append([
            folder.name, f"{meta['model']}/{meta['variant']}", options, str(level["level"]),
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
    header = ["run", "model/variant", "options", "level", "alpha mean", "alpha < 0.05", "alpha > 0.95",
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
    sections = [evaluation_section(evaluations), seeds_section(evaluations), weights_section(evaluations, out),
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


# characters a table cell escapes in Markdown: what the inline subset reads, and the cell bar
_MD_SPECIAL = re.compile(r"([\\`*\[\]|])")
_INLINE = re.compile(
    r"\\(?P<escaped>[\\`*\[\]|])"
    r"|`(?P<code>[^`]+)`"
    r"|\[(?P<text>[^\]]+)\]\((?P<href>[^)\s]+)\)"
    r"|\*\*(?P<bold>.+?)\*\*"
)
_IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+)\)$")
_CELL_BAR = re.compile(r"(?<!\\)\|")


def md_escape(text: str) -> str:
    """Plain text as Markdown that reads back as that text (a table cell, a path)."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def inline_html(text: str) -> str:
    """The Markdown subset the report writes -- `code`, [text](link), **bold** and
    backslash escapes -- as HTML; everything else is escaped."""
    e, parts, end = html.escape, [], 0
    for m in _INLINE.finditer(text):
        parts.append(e(text[end:m.start()]))
        if m["escaped"]:
            parts.append(e(m["escaped"]))
        elif m["code"]:
            parts.append(f"<code>{e(m['code'])}</code>")
        elif m["href"]:
            parts.append(f"<a href=\"{e(m['href'])}\">{inline_html(m['text'])}</a>")
        else:
            parts.append(f"<strong>{inline_html(m['bold'])}</strong>")
        end = m.end()
    return "".join(parts) + e(text[end:])


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A table as Markdown lines, its cells plain text (escaped)."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(md_escape(c) for c in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *(line(r) for r in rows)]


def to_markdown(sections: list[Section]) -> str:
    lines = ["# clcr report", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        if s.text:
            lines += [s.text, ""]
        for header, rows in s.tables:
            lines += [*markdown_table(header, rows), ""]
        lines += [f"![{img}]({img})" for img in s.images]
        lines.append("")
    return "\n".join(lines)


def _cells(line: str) -> list[str]:
    """The cells of a Markdown table line, as Markdown."""
    return [c.strip() for c in _CELL_BAR.split(line.strip())[1:-1]]


def _html_table(lines: list[str]) -> str:
    """A Markdown table (header, separator, rows) as an HTML table."""
    head, *body = [_cells(line) for line in lines[:1] + lines[2:]]
    out = ["<table><tr>" + "".join(f"<th>{inline_html(c)}</th>" for c in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{inline_html(c)}</td>" for c in r) + "</tr>" for r in body]
    return "\n".join([*out, "</table>"])


def _html_block(block: list[str]) -> str:
    """One block of Markdown lines (between blank lines): a heading, a table, images or a paragraph."""
    first = block[0]
    if first.startswith("#"):
        level, title = len(first) - len(first.lstrip("#")), first.lstrip("#").strip()
        return f"<h{level}>{inline_html(title)}</h{level}>"
    if first.startswith("|"):
        return _html_table(block)
    if all(_IMAGE.match(line) for line in block):
        return "\n".join(f"<img src=\"{html.escape(m['src'])}\" alt=\"{html.escape(m['alt'])}\">"
                         for m in map(_IMAGE.match, block))
    return f"<p>{inline_html(' '.join(block))}</p>"


def markdown_to_html(markdown: str) -> str:
    """The report's Markdown (what :func:`to_markdown` writes: headings, paragraphs of the
    inline subset, tables, images) as an HTML page."""
    blocks: list[list[str]] = [[]]
    for line in markdown.splitlines():
        if line.strip():
            blocks[-1].append(line)
        elif blocks[-1]:
            blocks.append([])
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>clcr report</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px}"
             "code{background:#f3f3f3;padding:0 2px}img{max-width:100%}</style></head><body>"]
    parts += [_html_block(block) for block in blocks if block]
    parts.append("</body></html>")
    return "\n".join(parts)


def to_html(sections: list[Section]) -> str:
    """The page of :func:`to_markdown`'s report, converted: one renderer for both."""
    return markdown_to_html(to_markdown(sections))


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
