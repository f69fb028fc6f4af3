"""Stage ``noise``: robustness sweeps on the test inputs, of three kinds.

``--level features`` (the default; MultiBench's protocol): Gaussian noise on the extracted
features. At level sigma, each feature x of the noised modality gets
``x + sigma * std_train(x) * N(0, 1)`` on its valid steps, where ``std_train`` is the
feature's standard deviation over the training split's valid steps (per feature for
sequences, per level and dimension for BERT levels, per colour channel for frames).

``--level raw``: noise on the media before extraction (``features/perturb.py``): audio at
signal-to-noise ratios in dB (``--snr-db``), frames with Gaussian pixel noise in 0-255
units (``--pixel-sigma``) after an optional blur (``--blur``), text with letters replaced
or words deleted at rates (``--text-rate``, ``--text-unit``). A curve's steps are 0, the
clean inputs, and k = 1, 2, ..., the k-th value of each list; ``--modality all`` perturbs
every modality at step k together, so the lists of the task's media must be of one
length. Each (modality, step, noise seed) is extracted from the media once, through the
extractors and with exactly the options of the run's store, by the cached ``perturb``
stage (``stages/perturb.py``), and evaluated like the clean split. The x axis is the
step, so the relative robustness is the curve's mean height over the steps.

``--missing-rate``: modalities absent at random (``training/presence.py``). At rate r each
modality of the curve is absent from a sample with probability r, drawn per noise seed and
sample; a sample never loses every modality (the one with the highest draw stays). The
curves of ``--modality each`` are ``all`` (every modality independently absent, MMSA's
protocol) and then each modality alone; the draws are nested, so what is absent at one
rate is absent at every higher rate.

sigma 0, step 0 and rate 0 leave the inputs untouched, so their metrics equal ``eval``'s
exactly. Every model compared (``--models``: CLCR and the baselines) sees the same inputs.

Inputs:   a train output per compared model (trained or reused), its store; for
          ``--level raw`` the store's media and the ``perturb`` outputs made from them.
Params:   :class:`~clcr_cli.config.NoiseConfig` plus the base train options.
Outputs:  ``<workdir>/noise/<task>-<key>/``
            curves.csv      model, modality, the level (sigma | step, setting | rate),
                            noise seed, every metric
            summary.csv     model, modality, level, mean and std of the main metric
            robustness.csv  model, modality, relative robustness (area under the
                            metric-vs-level curve over the level range)
            noise_<metric>.png | noise_raw_<metric>.png | missing_<metric>.png
                            the curves, one line per model (and modality); raw: one
                            panel per curve, whose ticks name each step's setting
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from clcr_cli.cache import StageDir, StageKey, produce, write_csv
from clcr_cli.config import (
    EvalConfig,
    NoiseConfig,
    TrainConfig,
    flag,
    key_options,
    option_values,
    options,
)
from clcr_cli.errors import ConfigError, DataError
from clcr_cli.features.perturb import RawNoise
from clcr_cli.metrics import METRIC_NAMES, primary_metric, relative_robustness
from clcr_cli.model import BASELINES
from clcr_cli.model.batch import Batch, step_mask
from clcr_cli.plots import Curve, plot_noise_panels
from clcr_cli.progress import progress_bar
from clcr_cli.runs import (
    CURVES_CSV,
    ROBUSTNESS_CSV,
    SUMMARY_CSV,
    SWEEP_TITLES,
    Extraction,
    Loaded,
    check_split,
    extraction_of,
    load_for_eval,
)
from clcr_cli.runtime import resolve_device
from clcr_cli.store import KIND_TIME_AXIS, FeatureStore
from clcr_cli.training.data import FeatureStats, SplitData, load_rows, standardise
from clcr_cli.training.presence import random_presence

NOISE_VERSION = 1
BATCH_SIZE = EvalConfig.batch_size  # eval's own, so that a clean point is eval's to the bit
RAW_OPTIONS = ("snr_db", "pixel_sigma", "blur", "text_rate", "text_unit")
# what the graph hands in: train(config, check) -> its output, and the perturb stage:
# perturb(extraction, split, modality, noise) -> the store of that split's media, perturbed
Train = Callable[[TrainConfig, Callable[[FeatureStore], None]], Path]
Perturb = Callable[[Extraction, str, str, RawNoise], Path]


def gaussian_noise(
    sigma: float,
    modalities: list[str],
    kinds: dict[str, str],
    stats: FeatureStats,
    generator: torch.Generator,
) -> Callable[[Batch], Batch]:
    """A batch transform adding feature-scaled Gaussian noise to ``modalities``.

    Sequences arrive standardised (std 1 on the training split), so their scale is 1;
    BERT levels, frames and the spectrograms a ResNet18 reads as stored are scaled by their
    training std. Padded steps stay zero.
    """

    def transform(batch: Batch) -> Batch:
        if sigma == 0:
            return batch
        inputs = dict(batch.inputs)
        for m in modalities:
            x = inputs[m].float()
            kind = kinds[m]
            scale = torch.ones(()) if stats.standardised(m, kind) else stats.std[m]
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


def _levels(name: str, values: Sequence[float], at_least: int, decreasing: bool = False) -> None:
    """``values`` of option ``name`` must be ``at_least`` many, strictly monotone."""
    label = flag(name, options(NoiseConfig)[name])
    order = sorted(set(values), reverse=decreasing)
    if len(values) < at_least or list(values) != order:
        way = "decreasing" if decreasing else "increasing"
        raise ConfigError(f"{label}: needs at least {at_least} strictly {way} value(s), got {','.join(map(str, values))}")


@dataclass(frozen=True)
class Point:
    """One level of a curve: its place on the x axis, its columns in curves.csv and the
    label of its tick."""

    x: float
    columns: dict[str, Any]
    tick: str


class FeatureNoise:
    """``--level features``: :func:`gaussian_noise` at each of ``--sigmas``."""

    title, xlabel, plot = SWEEP_TITLES["features"], "noise level σ (training std)", "noise"

    def __init__(self, cfg: NoiseConfig) -> None:
        _levels("sigmas", cfg.sigmas, 2)
        self.cfg = cfg

    def curves(self, modalities: list[str]) -> dict[str, list[str]]:
        return noised_sets(self.cfg, modalities)

    def check(self, store: FeatureStore, curves: dict[str, list[str]]) -> None:
        """Nothing more than every sweep's checks."""

    def points(self, modalities: list[str]) -> list[Point]:
        return [Point(s, {"sigma": s}, f"{s:g}") for s in self.cfg.sigmas]

    def metrics(self, loaded: Loaded, modalities: list[str], k: int, seed: int, device: str) -> dict[str, Any]:
        g = torch.Generator().manual_seed(seed)  # drawn on the CPU: the same noise on any device
        transform = gaussian_noise(self.cfg.sigmas[k], modalities, loaded.kinds, loaded.stats, g)
        return loaded.predict(BATCH_SIZE, device, transform=transform)[1]


class MissingModalities:
    """``--missing-rate``: the curve's modalities absent at random at each rate."""

    title, xlabel, plot = SWEEP_TITLES["missing"], "missing rate", "missing"

    def __init__(self, cfg: NoiseConfig) -> None:
        _levels("missing_rates", cfg.missing_rates, 2)
        self.cfg = cfg

    def curves(self, modalities: list[str]) -> dict[str, list[str]]:
        """As :func:`noised_sets`, but ``each`` begins with the curve ``all``: every
        modality independently absent (MMSA's protocol), then one modality at a time."""
        sets = noised_sets(self.cfg, modalities)
        return {"all": list(modalities), **sets} if self.cfg.modality == "each" else sets

    def check(self, store: FeatureStore, curves: dict[str, list[str]]) -> None:
        """Nothing more than every sweep's checks."""

    def points(self, modalities: list[str]) -> list[Point]:
        return [Point(r, {"rate": r}, f"{r:g}") for r in self.cfg.missing_rates]

    def metrics(self, loaded: Loaded, modalities: list[str], k: int, seed: int, device: str) -> dict[str, Any]:
        rate, present = self.cfg.missing_rates[k], None
        if rate > 0:
            present = random_presence(loaded.split.ids, list(loaded.kinds), rate, ("missing", seed), modalities)
        return loaded.predict(BATCH_SIZE, device, present=present)[1]


class RawSignalNoise:
    """``--level raw``: the split extracted again from perturbed media at each step."""

    title, xlabel, plot = SWEEP_TITLES["raw"], "step (0: clean)", "noise_raw"

    def __init__(self, cfg: NoiseConfig, workdir: Path, perturb: Perturb) -> None:
        _levels("snr_db", cfg.snr_db, 1, decreasing=True)
        _levels("pixel_sigma", cfg.pixel_sigma, 1)
        _levels("text_rate", cfg.text_rate, 1)
        self.cfg, self.workdir, self.perturb = cfg, workdir, perturb
        self.sources: dict[str, str] = {}  # modality -> its source, from the store
        self.extractions: dict[Path, Extraction] = {}  # by store
        self.stores: dict[tuple[Path, str, int, int], Path] = {}  # (store, modality, step, seed)

    def steps(self, source: str) -> tuple[str, tuple[float, ...]]:
        """The option giving the steps after the clean one of a medium of ``source``, and its values."""
        name = {"audio": "snr_db", "text": "text_rate"}.get(source, "pixel_sigma")
        return name, getattr(self.cfg, name)

    def noise(self, source: str, k: int, seed: int) -> RawNoise:
        """What step ``k`` >= 1 puts on a medium of ``source``."""
        value = self.steps(source)[1][k - 1]
        if source == "audio":
            return RawNoise(seed, snr_db=value)
        if source == "text":
            return RawNoise(seed, text_rate=value, text_unit=self.cfg.text_unit)
        return RawNoise(seed, pixel_sigma=value, blur=self.cfg.blur)

    def setting(self, source: str, k: int) -> str:
        """Step ``k`` of a medium of ``source`` in words, e.g. ``10 dB``."""
        value = self.steps(source)[1][k - 1]
        if source == "audio":
            return f"{value:g} dB"
        if source == "text":
            return f"{self.cfg.text_unit} {value:g}"
        return f"σ {value:g}" + (f", blur {self.cfg.blur:g}" if self.cfg.blur else "")

    def curves(self, modalities: list[str]) -> dict[str, list[str]]:
        return noised_sets(self.cfg, modalities)

    def check(self, store: FeatureStore, curves: dict[str, list[str]]) -> None:
        """Every curve's media can be perturbed and have one number of steps, and the
        store's media can be found again (before anything is trained)."""
        self.sources = {m: info.source for m, info in store.modalities.items()}
        for modalities in curves.values():
            if arrays := [m for m in modalities if self.sources[m] == "array"]:
                raise ConfigError(f"--level raw: {arrays[0]} of {store.dataset} was read as precomputed "
                                  "features, it has no signal to perturb (use --level features)")
            steps = dict(self.steps(self.sources[m]) for m in modalities)
            if len({len(v) for v in steps.values()}) > 1:
                given = ", ".join(f"{flag(n, options(NoiseConfig)[n])} {len(v)}" for n, v in steps.items())
                raise ConfigError(f"--level raw --modality all: every medium needs as many steps ({given})")
        self.extraction(store.path)

    def extraction(self, store: Path) -> Extraction:
        if store not in self.extractions:
            self.extractions[store] = extraction_of(store, self.workdir)
        return self.extractions[store]

    def points(self, modalities: list[str]) -> list[Point]:
        sources = [self.sources[m] for m in modalities]
        out = [Point(0, {"step": 0, "setting": "clean"}, "clean")]
        for k in range(1, len(self.steps(sources[0])[1]) + 1):
            settings = list(dict.fromkeys(self.setting(s, k) for s in sources))
            out.append(Point(k, {"step": k, "setting": " / ".join(settings)}, "\n".join(settings)))
        return out

    def perturbed(self, loaded: Loaded, modality: str, k: int, seed: int) -> Path:
        """The store of ``modality`` of the split at step ``k`` (extracted or reused, once)."""
        key = (loaded.store, modality, k, seed)
        if key not in self.stores:
            noise = self.noise(self.sources[modality], k, seed)
            self.stores[key] = self.perturb(self.extraction(loaded.store), loaded.split_name, modality, noise)
        return self.stores[key]

    def metrics(self, loaded: Loaded, modalities: list[str], k: int, seed: int, device: str) -> dict[str, Any]:
        if k == 0:
            return loaded.predict(BATCH_SIZE, device)[1]
        inputs, lengths = dict(loaded.split.inputs), dict(loaded.split.lengths)
        for m in modalities:
            path = self.perturbed(loaded, m, k, seed)
            with FeatureStore(path) as store:
                if list(store.ids) != loaded.split.ids:
                    raise DataError(path, f"its samples are not those of the {loaded.split_name} split")
                noisy = standardise(load_rows(store, np.arange(len(store)), [m]), loaded.stats, loaded.kinds)
            inputs[m], lengths[m] = noisy.inputs[m], noisy.lengths[m]
        split = SplitData(loaded.split.ids, inputs, lengths, loaded.split.target)
        return dataclasses.replace(loaded, split=split).predict(BATCH_SIZE, device)[1]


Sweep = FeatureNoise | MissingModalities | RawSignalNoise


def noise_key(base: TrainConfig, cfg: NoiseConfig, inputs: dict[str, str]) -> StageKey:
    """The cache key: every base train option, the sweep's options and the runs it read
    (model -> train folder name)."""
    return StageKey("noise", NOISE_VERSION, base.task, {"base": option_values(base), "noise": key_options(cfg)}, inputs)


def make_sweep(cfg: NoiseConfig, workdir: Path, perturb: Perturb) -> Sweep:
    """The sweep ``cfg`` asks for (``--missing-rate`` given: missing modalities; else
    ``--level``), its levels checked. An option of another kind of sweep, given with a
    value other than its default, is refused: it would do nothing."""
    if cfg.missing_rates and cfg.level == "raw":
        raise ConfigError("--missing-rate: sweeps missing modalities without noise; leave out --level raw")
    kind = "missing" if cfg.missing_rates else cfg.level
    owners = {"sigmas": "features", **dict.fromkeys(RAW_OPTIONS, "raw")}
    for name, owner in owners.items():
        f = options(NoiseConfig)[name]
        if owner != kind and getattr(cfg, name) != f.default:
            sweep = "missing modalities" if kind == "missing" else f"--level {kind}"
            raise ConfigError(f"{flag(name, f)}: not an option of a sweep of {sweep}")
    if kind == "missing":
        return MissingModalities(cfg)
    if kind == "raw":
        return RawSignalNoise(cfg, workdir, perturb)
    return FeatureNoise(cfg)


def run_noise(
    base: TrainConfig,
    cfg: NoiseConfig,
    workdir: Path,
    *,
    train: Train,
    perturb: Perturb,
    force: bool = False,
    device: str = "auto",
    console: Console | None = None,
) -> Path:
    """Train (or reuse) each compared model with ``train``, then sweep the levels; return
    the output folder. ``perturb`` extracts perturbed media for ``--level raw``."""
    console = console or Console(stderr=True)
    unknown = [m for m in cfg.models if m != "clcr" and m not in BASELINES]
    if unknown or not cfg.models:
        raise ConfigError(f"--models {', '.join(unknown)}: the models are clcr, {', '.join(BASELINES)}")
    device = resolve_device(device)
    kind = make_sweep(cfg, workdir, perturb)

    def check(store: FeatureStore) -> None:  # before anything is trained
        kind.check(store, kind.curves(list(store.modalities)))
        check_split(cfg.split, store)

    train_dirs = {
        name: train(dataclasses.replace(base, model=dataclasses.replace(base.model, model=name, variant="full")), check)
        for name in cfg.models
    }
    stage = StageDir(workdir, noise_key(base, cfg, {name: d.name for name, d in train_dirs.items()}))
    produce(stage, lambda: sweep(train_dirs, cfg, kind, device, stage.path, base.task, console),
            force=force, console=console)
    return stage.path


def sweep(
    train_dirs: dict[str, Path], cfg: NoiseConfig, kind: Sweep, device: str, out: Path, task: str, console: Console
) -> dict[str, int]:
    """Evaluate every model at every level and noise seed of ``kind`` into ``out``: the
    curves, their summary, the relative robustness and the plot. Returns the summary."""
    rows: list[dict[str, Any]] = []
    with progress_bar(console, unit="eval") as progress:
        for model_name, train_dir in train_dirs.items():
            loaded = load_for_eval(train_dir, cfg.split, device)
            sets = kind.curves(list(loaded.kinds))
            points = {curve: kind.points(modalities) for curve, modalities in sets.items()}
            bar = progress.add_task(f"{kind.plot} {model_name}",
                                    total=sum(map(len, points.values())) * len(cfg.noise_seeds))
            for curve, modalities in sets.items():
                for k, point in enumerate(points[curve]):
                    for seed in cfg.noise_seeds:
                        metrics = kind.metrics(loaded, modalities, k, seed, device)
                        rows.append({"model": model_name, "modality": curve, **point.columns, "seed": seed,
                                     **{m: v for m, v in metrics.items() if m != "confusion"}})
                        progress.advance(bar)
    metric, _ = primary_metric(loaded.target)
    levels = list(next(iter(points.values()))[0].columns)
    summary, robustness = [], []
    panels: dict[str, tuple[dict[str, Curve], list[str] | None]] = {}
    for model, curve in dict.fromkeys((r["model"], r["modality"]) for r in rows):
        means, stds = [], []
        for point in points[curve]:
            values = [r[metric] for r in rows if (r["model"], r["modality"]) == (model, curve)
                      and r[levels[0]] == point.columns[levels[0]]]
            means.append(float(np.mean(values)))
            stds.append(float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)
            summary.append([model, curve, *point.columns.values(), means[-1], stds[-1]])
        xs = [p.x for p in points[curve]]
        robustness.append([model, curve, relative_robustness(xs, means)])
        if isinstance(kind, RawSignalNoise):  # a panel per curve: the steps differ by medium
            panels.setdefault(f"{task}: {curve}", ({}, [p.tick for p in points[curve]]))[0][model] = (xs, means, stds)
        else:
            panels.setdefault(f"{task}: {kind.title}", ({}, None))[0][f"{model} ({curve})"] = (xs, means, stds)
    write_csv(out / CURVES_CSV, ["model", "modality", *levels, "seed", *METRIC_NAMES[loaded.target]],
              [[r[c] for c in ["model", "modality", *levels, "seed", *METRIC_NAMES[loaded.target]]] for r in rows])
    write_csv(out / SUMMARY_CSV, ["model", "modality", *levels, f"{metric}_mean", f"{metric}_std"], summary)
    write_csv(out / ROBUSTNESS_CSV, ["model", "modality", f"relative_robustness_{metric}"], robustness)
    title = f"{task}: {kind.title}" if len(panels) > 1 else None
    plot_noise_panels(panels, metric, out / f"{kind.plot}_{metric}.png", kind.xlabel, title)
    return {"evaluations": len(rows)}
