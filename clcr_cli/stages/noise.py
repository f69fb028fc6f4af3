"""Stage ``noise``: Gaussian-noise robustness sweeps on the test inputs (MultiBench's protocol).

Noise scale: at level sigma, each feature x of the noised modality gets
``x + sigma * std_train(x) * N(0, 1)`` on its valid steps, where ``std_train`` is the
feature's standard deviation over the training split's valid steps (per feature for
sequences, per level and dimension for BERT levels, per colour channel for frames).
sigma = 0 leaves the inputs untouched, so its metrics equal ``eval``'s exactly.

Inputs:   a train output per compared model (trained or reused), its store.
Params:   :class:`~clcr_cli.config.NoiseConfig` plus the base train options.
Outputs:  ``<workdir>/noise/<task>-<key>/``
            curves.csv      model, modality, sigma, noise seed, every metric
            summary.csv     model, modality, sigma, mean and std of the main metric
            robustness.csv  model, modality, relative robustness (area under the
                            metric-vs-sigma curve over the sigma range)
            noise_<metric>.png  the curves, one line per model (and modality)
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from clcr_cli.cache import StageDir, StageKey, produce
from clcr_cli.config import EvalConfig, ExtractConfig, NoiseConfig, TrainConfig, key_options
from clcr_cli.errors import ConfigError
from clcr_cli.metrics import METRIC_NAMES, primary_metric, relative_robustness
from clcr_cli.model import BASELINES
from clcr_cli.model.batch import Batch
from clcr_cli.plots import plot_noise_curves
from clcr_cli.progress import progress_bar
from clcr_cli.runtime import resolve_device
from clcr_cli.stages.evaluate import check_options, load_for_eval
from clcr_cli.stages.train import run_train, train_params
from clcr_cli.store import KIND_TIME_AXIS, FeatureStore
from clcr_cli.training.data import FeatureStats, step_mask

NOISE_VERSION = 1
CURVES_CSV = "curves.csv"
SUMMARY_CSV = "summary.csv"
ROBUSTNESS_CSV = "robustness.csv"


def gaussian_noise(
    sigma: float,
    modalities: list[str],
    kinds: dict[str, str],
    stats: FeatureStats,
    generator: torch.Generator,
) -> Callable[[Batch], Batch]:
    """A batch transform adding feature-scaled Gaussian noise to ``modalities``.

    Sequences arrive standardised (std 1 on the training split), so their scale is 1;
    BERT levels and frames are scaled by their training std. Padded steps stay zero.
    """

    def transform(batch: Batch) -> Batch:
        if sigma == 0:
            return batch
        inputs = dict(batch.inputs)
        for m in modalities:
            x = inputs[m].float()
            kind = kinds[m]
            scale = torch.ones(()) if kind == "sequence" else stats.std[m]
            if kind == "levels":  # std (K, D) -> broadcast over (B, K, T, D)
                scale = scale[:, None, :]
            noise = torch.randn(x.shape, generator=generator) * scale * sigma
            time_axis = 1 + KIND_TIME_AXIS[kind]
            mask = step_mask(batch.lengths[m], x.shape[time_axis])  # (B, T)
            shape = [mask.shape[0]] + [1] * (x.dim() - 1)
            shape[time_axis] = mask.shape[1]
            inputs[m] = x + noise * mask.reshape(shape)
        return Batch(inputs, batch.lengths, batch.target, batch.present)

    return transform


def noised_sets(cfg: NoiseConfig, modalities: list[str]) -> dict[str, list[str]]:
    """Curve name -> the modalities noised together."""
    if cfg.modality == "each":
        return {m: [m] for m in modalities}
    if cfg.modality == "all":
        return {"all": list(modalities)}
    if cfg.modality not in modalities:
        raise ConfigError(f"--modality {cfg.modality}: the task's modalities are {', '.join(modalities)}")
    return {cfg.modality: [cfg.modality]}


def run_noise(
    base: TrainConfig,
    extract_cfg: ExtractConfig | None,
    cfg: NoiseConfig,
    workdir: Path,
    *,
    force: bool = False,
    device: str = "auto",
    console: Console | None = None,
) -> Path:
    """Train (or reuse) each compared model, then sweep the noise levels; return the output folder."""
    console = console or Console(stderr=True)
    if list(cfg.sigmas) != sorted(set(cfg.sigmas)) or len(cfg.sigmas) < 2:
        raise ConfigError("--sigmas must be at least two increasing values, e.g. 0,0.1,0.2")
    unknown = [m for m in cfg.models if m != "clcr" and m not in BASELINES]
    if unknown or not cfg.models:
        raise ConfigError(f"--models {', '.join(unknown)}: the models are clcr, {', '.join(BASELINES)}")

    def check(store: FeatureStore) -> None:  # before anything is trained
        noised_sets(cfg, list(store.modalities))
        check_options(EvalConfig(split=cfg.split), store)

    train_dirs = {
        name: run_train(
            dataclasses.replace(base, model=dataclasses.replace(base.model, model=name, variant="full")),
            extract_cfg,
            workdir,
            device=device,
            console=console,
            check=check,
        )
        for name in cfg.models
    }
    params = {"base": train_params(base, keyed_only=False), "noise": key_options(cfg)}
    inputs = {name: d.name for name, d in train_dirs.items()}
    stage = StageDir(workdir, StageKey("noise", NOISE_VERSION, base.task, params, inputs))
    produce(stage, lambda: sweep(train_dirs, cfg, resolve_device(device), stage.path, base.task, console),
            force=force, console=console)
    return stage.path


def sweep(
    train_dirs: dict[str, Path], cfg: NoiseConfig, device: str, out: Path, task: str, console: Console
) -> dict[str, int]:
    """Evaluate every model at every noise level and seed into ``out``: the curves, their
    summary, the relative robustness and the plot. Returns the summary."""
    rows = []
    # noise is drawn on the CPU before each batch moves, so it is the same on any device
    batch_size = EvalConfig.batch_size
    with progress_bar(console, unit="eval") as progress:
        for model_name, train_dir in train_dirs.items():
            loaded = load_for_eval(train_dir, cfg.split, device)
            sets = noised_sets(cfg, list(loaded.kinds))
            bar = progress.add_task(
                f"noise {model_name}", total=len(sets) * len(cfg.sigmas) * len(cfg.noise_seeds)
            )
            for curve, modalities in sets.items():
                for sigma in cfg.sigmas:
                    for seed in cfg.noise_seeds:
                        g = torch.Generator().manual_seed(seed)
                        transform = gaussian_noise(sigma, modalities, loaded.kinds, loaded.stats, g)
                        _, metrics = loaded.predict(batch_size, device, transform=transform)
                        rows.append({"model": model_name, "modality": curve, "sigma": sigma, "seed": seed,
                                     **{k: v for k, v in metrics.items() if k != "confusion"}})
                        progress.advance(bar)
    metric, _ = primary_metric(loaded.target)
    names = list(METRIC_NAMES[loaded.target])
    with open(out / CURVES_CSV, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["model", "modality", "sigma", "seed", *names])
        writer.writeheader()
        writer.writerows(rows)
    curves, summary, robustness = {}, [], []
    for key in dict.fromkeys((r["model"], r["modality"]) for r in rows):
        means, stds = [], []
        for sigma in cfg.sigmas:
            values = [r[metric] for r in rows if (r["model"], r["modality"]) == key and r["sigma"] == sigma]
            means.append(float(np.mean(values)))
            stds.append(float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)
            summary.append([*key, sigma, means[-1], stds[-1]])
        curves[f"{key[0]} ({key[1]})"] = (list(cfg.sigmas), means, stds)
        robustness.append([*key, relative_robustness(cfg.sigmas, means)])
    with open(out / SUMMARY_CSV, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["model", "modality", "sigma", f"{metric}_mean", f"{metric}_std"])
        writer.writerows(summary)
    with open(out / ROBUSTNESS_CSV, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["model", "modality", f"relative_robustness_{metric}"])
        writer.writerows(robustness)
    plot_noise_curves(curves, metric, out / f"noise_{metric}.png", f"{task}: Gaussian noise")
    return {"evaluations": len(rows)}
