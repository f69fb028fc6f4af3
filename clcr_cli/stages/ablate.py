"""Stage ``ablate``: the paper's Table 3, each variant a swapped component, same data and seeds.

Inputs:   train outputs of every (variant | budget rate | baseline, seed) and their
          evaluations, trained or reused by the callables the graph hands in
          (``clcr_cli.pipeline.ablate``).
Params:   :class:`~clcr_cli.config.AblateConfig` plus the base train options.
Outputs:  ``<workdir>/ablate/<task>-<key>/``
            runs.csv       one row per run: label, seed, every metric, its train folder
            ablation.csv   per label: mean and std of every metric over seeds, and the
                           paired per-seed difference of the main metric to ``full`` with
                           its 95 % t-interval (the seeds of a label pair with full's)
            ablation.md    the same as a Markdown table in the paper's layout
Cache:    the table is reused when complete; each run inside is cached by train/eval.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from clcr_cli.cache import StageDir, StageKey, atomic_write_text, produce, write_csv
from clcr_cli.config import (
    AblateConfig,
    EvalConfig,
    TrainConfig,
    check_model,
    key_options,
    option_values,
)
from clcr_cli.errors import ConfigError
from clcr_cli.metrics import METRIC_NAMES, mean_std, metric_label, paired_difference, primary_metric
from clcr_cli.model import BASELINES, VARIANTS
from clcr_cli.runs import ABLATION_CSV, ABLATION_MD, RUNS_CSV, check_split
from clcr_cli.store import FeatureStore

ABLATE_VERSION = 2  # 2: paired differences with intervals
# what the graph hands in: train(config, check) -> its output; evaluate(train output, options) -> metrics.json
Train = Callable[[TrainConfig, Callable[[FeatureStore], None]], Path]
Evaluate = Callable[[Path, EvalConfig], dict[str, Any]]


def ablate_key(base: TrainConfig, cfg: AblateConfig, inputs: dict[str, str]) -> StageKey:
    """The cache key: every base train option, the ablation's options and the runs it read
    (``"<label>/<seed>"`` -> train folder name)."""
    return StageKey("ablate", ABLATE_VERSION, base.task, {"base": option_values(base), "ablate": key_options(cfg)}, inputs)


def planned_runs(base: TrainConfig, cfg: AblateConfig) -> list[tuple[str, TrainConfig]]:
    """(label, train config) of every run the table needs, ``full`` first; each run's model
    options are checked (a budget rate of 0, say) before any is trained."""
    variants = list(cfg.variants or VARIANTS)
    unknown = [v for v in variants if v not in VARIANTS] + [b for b in cfg.baselines if b not in BASELINES]
    if unknown:
        raise ConfigError(
            f"unknown variant/baseline {', '.join(unknown)}; variants: {', '.join(VARIANTS)}; "
            f"baselines: {', '.join(BASELINES)}"
        )
    if "full" not in variants:
        variants.insert(0, "full")
    plans: list[tuple[str, dict[str, Any]]] = [(v, {"model": "clcr", "variant": v}) for v in variants]
    plans += [
        (f"budget r={r:g}", {"model": "clcr", "variant": "full", "participation": r, "learn_budget": False})
        for r in cfg.budget_sweep
    ]
    plans += [(b, {"model": b, "variant": "full"}) for b in cfg.baselines]
    runs = [
        (label, dataclasses.replace(base, seed=seed, model=dataclasses.replace(base.model, **changes)))
        for label, changes in plans
        for seed in cfg.seeds
    ]
    for _, run in runs:
        check_model(run.model)
    return runs


def _markdown(rows: list[dict[str, Any]], names: list[str], primary: str) -> str:
    head = [
        "Variant",
        *(metric_label(n) for n in names),
        f"Δ {metric_label(primary)} vs full (paired, 95 % CI)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["label"]]
        cells += [f"{r[n + '_mean']:.4f} ± {r[n + '_std']:.4f}" for n in names]
        interval = "" if math.isnan(r["delta_low"]) else f" [{r['delta_low']:+.4f}, {r['delta_high']:+.4f}]"
        cells.append(f"{r['delta']:+.4f}{interval}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paired_with_full(
    results: list[tuple[str, int, Path, dict[str, Any]]], label: str, metric: str
) -> tuple[float, float, float]:
    """Paired difference of ``metric`` between ``label`` and ``full`` over their common seeds."""
    scores = {(lab, seed): m["metrics"][metric] for lab, seed, _, m in results}
    seeds = [seed for lab, seed, _, _ in results if lab == label and ("full", seed) in scores]
    return paired_difference(
        [scores[(label, s)] for s in seeds], [scores[("full", s)] for s in seeds]
    )


def run_ablate(
    base: TrainConfig,
    cfg: AblateConfig,
    workdir: Path,
    *,
    train: Train,
    evaluate: Evaluate,
    force: bool = False,
    console: Console | None = None,
) -> Path:
    """Train and evaluate every planned run (``train`` and ``evaluate`` reuse cached ones);
    write the tables."""
    console = console or Console(stderr=True)
    plans = planned_runs(base, cfg)
    results = []
    evaluation = EvalConfig(split=cfg.split)
    for i, (label, tcfg) in enumerate(plans, 1):
        console.rule(f"ablate {base.task} [{i}/{len(plans)}]: {label}, seed {tcfg.seed}")
        train_dir = train(tcfg, lambda store: check_split(cfg.split, store))
        results.append((label, tcfg.seed, train_dir, evaluate(train_dir, evaluation)))
    stage = StageDir(workdir, ablate_key(base, cfg, {f"{label}/{seed}": d.name for label, seed, d, _ in results}))
    produce(stage, lambda: write_tables(stage.path, results), force=force, console=console)
    console.print((stage.path / ABLATION_MD).read_text())
    return stage.path


def write_tables(out: Path, results: list[tuple[str, int, Path, dict[str, Any]]]) -> dict[str, Any]:
    """runs.csv, ablation.csv and ablation.md of the (label, seed, train folder, metrics)
    ``results`` into ``out``; the summary."""
    target = results[0][3]["target"]
    names = list(METRIC_NAMES[target])
    primary, _ = primary_metric(target)
    write_csv(out / RUNS_CSV, ["label", "seed", *names, "train"],
              ([label, seed, *(m["metrics"][n] for n in names), str(train_dir)]
               for label, seed, train_dir, m in results))
    labels = list(dict.fromkeys(label for label, *_ in results))
    summary = {
        label: mean_std([m["metrics"] for lab, _, _, m in results if lab == label]) for label in labels
    }
    rows = []
    for label in labels:
        row: dict[str, Any] = {"label": label}
        for n in names:
            row[n + "_mean"], row[n + "_std"] = summary[label][n]
        row["delta"], row["delta_low"], row["delta_high"] = paired_with_full(results, label, primary)
        rows.append(row)
    write_csv(out / ABLATION_CSV, list(rows[0]), (list(r.values()) for r in rows))
    atomic_write_text(out / ABLATION_MD, _markdown(rows, names, primary))
    return {"runs": len(results)}
