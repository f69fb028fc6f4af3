"""The graph: which stage's output feeds which, and running the upstream stages on demand.

Each stage (``stages/``) is given its inputs -- a store, a train output, the callables
that train and evaluate the runs it compares -- and never imports another stage; this
module is where they meet, as a DVC pipeline names each stage's dependencies:

    extract --> train --> eval
                  |  \\--> ablate (train + eval per variant and seed)
                  \\-----> noise  (train per model; perturb for --level raw)
                  \\-----> predict (a trained run + new media)

The functions here are what the CLI calls, and what a Python user calls to run a stage
with its upstream resolved: :func:`train`, :func:`evaluate`, :func:`ablate`, :func:`noise`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from clcr_cli.config import AblateConfig, EvalConfig, ExtractConfig, NoiseConfig, TrainConfig
from clcr_cli.distributed import main_first, setup
from clcr_cli.errors import ConfigError
from clcr_cli.features.perturb import RawNoise
from clcr_cli.runs import Extraction, latest_store, train_manifest
from clcr_cli.runtime import resolve_device
from clcr_cli.stages.ablate import run_ablate
from clcr_cli.stages.evaluate import check_options, eval_key, run_eval
from clcr_cli.stages.extract import run_extract
from clcr_cli.stages.noise import run_noise
from clcr_cli.stages.perturb import run_perturbed
from clcr_cli.stages.train import run_train
from clcr_cli.store import FeatureStore
from clcr_cli.training.loop import check_precision

Check = Callable[[FeatureStore], None]


def store_for(
    task: str, extract_cfg: ExtractConfig | None, workdir: Path, *, device: str = "auto",
    console: Console | None = None,
) -> Path:
    """The feature store a run of ``task`` trains on.

    Pinned (``extract_cfg``, the ``[extract]`` section of a config file): exactly that
    extraction, run or reused. Unpinned: the latest extraction of the task in ``workdir``
    (``runs.latest_store``: named when used; none, or a damaged one, is an error naming
    the command to run).
    """
    if extract_cfg is None:
        return latest_store(workdir, task, console)
    if extract_cfg.dataset != task:
        raise ConfigError(f"extract options are for {extract_cfg.dataset!r}, not the task {task!r}")
    return run_extract(extract_cfg, workdir, device=device, console=console)


def train(
    cfg: TrainConfig,
    extract_cfg: ExtractConfig | None,
    workdir: Path,
    *,
    force: bool = False,
    device: str = "auto",
    console: Console | None = None,
    lock_timeout: float | None = None,
    after_epoch: Callable[[int], None] | None = None,
    check: Check | None = None,
    announce: bool = False,
) -> Path:
    """Train (or reuse, or resume) one run of ``cfg`` on its store (:func:`store_for`);
    ``announce``: say so when it has to train (``stages.train.run_train``).

    Under torchrun every rank calls this: rank 0 resolves (and if pinned, extracts) the
    store first, the others wait and then find it complete (``distributed.main_first``).
    """
    console = console or Console(stderr=True)
    device = resolve_device(device)
    check_precision(cfg.precision, device)
    dist = setup(device)
    if not dist.main:
        console = Console(stderr=True, quiet=True)
    # rank 0 extracts first; a failure on any rank ends every rank with its line
    store = main_first(dist, lambda: store_for(cfg.task, extract_cfg, workdir, device=device, console=console))
    return run_train(cfg, store, workdir, dist, force=force, console=console, lock_timeout=lock_timeout,
                     after_epoch=after_epoch, check=check, announce=announce)


def evaluate(
    runs: Sequence[TrainConfig] | Sequence[Path],
    extract_cfg: ExtractConfig | None,
    cfg: EvalConfig,
    workdir: Path,
    *,
    force: bool = False,
    device: str = "auto",
    console: Console | None = None,
) -> list[dict[str, Any]]:
    """The ``metrics.json`` of every run, with ``train`` (the run folder evaluated, wherever
    it lies now) and ``output`` (its evaluation's folder): train outputs as given, or the
    runs of these train options (trained first where needed, with a note, after the
    evaluation's options are checked)."""
    dirs = [
        r if isinstance(r, Path) else
        train(r, extract_cfg, workdir, device=device, console=console, check=lambda s: check_options(cfg, s),
              announce=True)
        for r in runs
    ]
    results = []
    for d in dirs:
        result = run_eval(d, cfg, force=force, device=device, console=console)
        result["train"] = str(d)
        result["output"] = str(d / "eval" / f"{result['task']}-{eval_key(train_manifest(d), cfg).digest}")
        results.append(result)
    return results


def ablate(
    base: TrainConfig,
    extract_cfg: ExtractConfig | None,
    cfg: AblateConfig,
    workdir: Path,
    *,
    force: bool = False,
    device: str = "auto",
    console: Console | None = None,
) -> Path:
    """``clcr ablate``: every planned run trained and evaluated (or reused), then the tables."""

    def trained(tcfg: TrainConfig, check: Check) -> Path:
        return train(tcfg, extract_cfg, workdir, force=force, device=device, console=console, check=check)

    def evaluated(train_dir: Path, ecfg: EvalConfig) -> dict[str, Any]:
        return run_eval(train_dir, ecfg, device=device, console=console)

    return run_ablate(base, cfg, workdir, train=trained, evaluate=evaluated, force=force, console=console)


def noise(
    base: TrainConfig,
    extract_cfg: ExtractConfig | None,
    cfg: NoiseConfig,
    workdir: Path,
    *,
    force: bool = False,
    device: str = "auto",
    console: Console | None = None,
) -> Path:
    """``clcr noise``: each compared model trained (or reused), then the sweep."""

    def trained(tcfg: TrainConfig, check: Check) -> Path:
        return train(tcfg, extract_cfg, workdir, device=device, console=console, check=check)

    def perturbed(source: Extraction, split: str, modality: str, raw: RawNoise) -> Path:
        return run_perturbed(source, split, modality, raw, workdir, device=device, console=console)

    return run_noise(base, cfg, workdir, train=trained, perturb=perturbed, force=force, device=device,
                     console=console)
