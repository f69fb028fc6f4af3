"""Stage ``train``: fit CLCR (or a variant, or a baseline) on the cached features.

Inputs:   the extract stage's ``features.h5`` for the task (extracted first if missing).
Params:   :class:`~clcr_cli.config.TrainConfig` (one output per seed); ``compile``,
          ``stream_above_mb`` and ``loader_workers`` say how to run, not what to compute,
          and are left out of the key.
Outputs:  ``<workdir>/train/<task>-<key>/``
            model.safetensors  the weights of the best validation epoch
            model.json         model and train config, feature statistics, best epoch/score
            history.csv        per epoch: train/valid loss, each loss term, the main metric,
                               the learning rate, seconds and samples/s
            timing.json        epochs run, mean epoch seconds and mean samples/s (what the
                               run times itself; ``bench/`` measures where a step's time goes)
            diagnostics.json   what the mechanisms of the selected model do on the valid
                               split (``model.diagnostics``): per level the budget weights
                               alpha (mean, share < 0.05 and > 0.95), the participation rate
                               and threshold; InterCAD's mean level and modality weights
            last.pt            the resumable checkpoint (model, optimiser, scheduler, epoch,
                               best score, history), a state dict read back with
                               ``torch.load(weights_only=True)``
Cache:    a complete output is reused; a killed run resumes from ``last.pt`` and ends with
          the same weights and metrics as an uninterrupted run (bit-identical on CPU).
Data:     a split larger than ``stream_above_mb`` is streamed from the store in batches
          (``stages.data.StoreSplit``), otherwise held in memory; the batches are the same.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import torch
from rich.console import Console
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from clcr_cli.cache import StageDir, StageKey
from clcr_cli.config import ExtractConfig, TrainConfig
from clcr_cli.distributed import Dist, all_sum, barrier, setup, shard
from clcr_cli.errors import ConfigError, DataError
from clcr_cli.metrics import primary_metric
from clcr_cli.model import ModelConfig, build_model, count_parameters
from clcr_cli.model.batch import Batch, ModelOutput
from clcr_cli.model.diagnostics import mechanism_diagnostics
from clcr_cli.progress import progress_bar
from clcr_cli.runtime import resolve_device
from clcr_cli.stages.data import (
    FeatureStats,
    StoreSplit,
    batches,
    carve_valid,
    modality_specs,
    open_split,
    standardise,
)
from clcr_cli.stages.extract import resolve_store
from clcr_cli.stages.inference import compute_metrics, predict, save_trained
from clcr_cli.store import FeatureStore

T = TypeVar("T")

# 2: warmup-cosine is a schedule (version 1 trained it at a constant lr); history has lr
TRAIN_VERSION = 2
# options that change how a run computes, not what: not part of the cache key
RUN_ONLY_OPTIONS = ("compile", "stream_above_mb", "loader_workers")
WARMUP_START = 0.1  # warmup-cosine starts at lr * WARMUP_START
CHECKPOINT = "last.pt"
HISTORY = "history.csv"
DIAGNOSTICS = "diagnostics.json"


def model_config(cfg: TrainConfig, store: FeatureStore) -> ModelConfig:
    return ModelConfig(
        modalities=modality_specs(store),
        task=store.target,  # type: ignore[arg-type]
        num_classes=max(store.num_classes, 1),
        model=cfg.model,
        variant=cfg.variant,
        d=cfg.d,
        num_levels=cfg.num_levels,
        num_heads=cfg.num_heads,
        participation=cfg.participation,
        learn_budget=cfg.learn_budget,
        lambda_intra=cfg.lambda_intra,
        lambda_inter=cfg.lambda_inter,
        regression_loss=cfg.regression_loss,
        dropout=cfg.dropout,
    )


def train_key(cfg: TrainConfig, extract_digest: str) -> StageKey:
    """The cache key: every option but :data:`RUN_ONLY_OPTIONS`, and the extraction's key."""
    params = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RUN_ONLY_OPTIONS}
    return StageKey("train", TRAIN_VERSION, cfg.task, params, {"extract": extract_digest})


def _optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def warmup_cosine(epoch: int, warmup: int, epochs: int) -> float:
    """The lr factor of ``epoch`` (0-based): linear from :data:`WARMUP_START` to 1 over
    ``warmup`` epochs (at most ``epochs - 1``, so a short run still decays), then a half
    cosine from 1 down to 0 at ``epochs``."""
    warmup = min(warmup, epochs - 1)
    if epoch < warmup:
        return WARMUP_START + (1 - WARMUP_START) * epoch / warmup
    return 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / (epochs - warmup)))


def lr_scheduler(
    cfg: TrainConfig, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-epoch schedule of ``cfg.scheduler`` (None for ``none``); its state dict goes
    into ``last.pt``, so a resumed run continues the schedule where it stopped."""
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.scheduler == "warmup-cosine":
        factor = partial(warmup_cosine, warmup=cfg.warmup_epochs, epochs=cfg.epochs)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return None


def compiled_or_eager(
    module: nn.Module, first_step: Callable[[nn.Module], T], console: Console
) -> tuple[nn.Module, T]:
    """``torch.compile(module)`` and ``first_step`` run with it: (compiled module, result).

    Compiling happens at the first call (forward and backward). Where it fails -- no C
    compiler, an operation or a Python the compiler does not support -- one line says so,
    torch's RNG is put back as it was, and ``first_step`` runs with ``module`` itself:
    (module, result), the same as if compiling had never been asked for.
    """
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        compiled = torch.compile(module)
        return compiled, first_step(compiled)
    except Exception as exc:  # whatever the compiler raises, eager mode is the fallback
        reason = (str(exc).strip().splitlines() or [""])[0][:160]
        console.print(f"torch.compile failed, training eagerly: {type(exc).__name__}: {reason}")
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        return module, first_step(module)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _better(score: float, best: float | None, higher: bool) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(score)
    return score > best if higher else score < best


def mixed_precision(precision: str, device: str) -> tuple[Any, torch.amp.GradScaler]:
    """(autocast context, grad scaler) for ``fp32`` (both no-ops), ``bf16`` or ``fp16``.

    fp16 needs loss scaling and a GPU; bf16 runs under autocast on CUDA and on the CPU.
    """
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    if precision == "fp16" and device_type != "cuda":
        raise ConfigError("--precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = torch.autocast(device_type, dtype=dtype, enabled=dtype is not None)
    return autocast, torch.amp.GradScaler(device_type, enabled=precision == "fp16")


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one epoch's RNG streams: a resumed run replays them exactly."""
    return (seed * 1_000_003 + epoch) * 1_009 + rank


def fit(
    cfg: TrainConfig,
    store: FeatureStore,
    out: Path,
    dist: Dist,
    console: Console,
    after_epoch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """The training loop, resuming from ``out/last.pt`` when it exists. Returns the summary.

    Randomness: epoch e shuffles with a generator seeded by (seed, e) -- the same on every
    rank -- and draws dropout from torch's RNG seeded by (seed, e, rank), so a resumed run
    needs no saved RNG state to replay the uninterrupted one bit for bit. A split larger
    than ``cfg.stream_above_mb`` is streamed from the store in the same batches, in the same
    order, so streaming changes nothing either.
    """
    device = dist.device
    torch.manual_seed(cfg.seed)
    kinds = {m: info.kind for m, info in store.modalities.items()}
    train_rows, valid_rows = store.split_indices("train"), store.split_indices("valid")
    if len(train_rows) == 0:
        raise DataError(store.path, "the training split is empty")
    if len(valid_rows) == 0:
        train_rows, valid_rows = carve_valid(train_rows, cfg.valid_fraction, cfg.seed)
        console.print(f"no valid split in the store: carved {len(valid_rows)} samples from train (seeded)")
    train = open_split(store, train_rows, cfg.stream_above_mb)
    stats = FeatureStats.of(train, kinds)  # from the raw split, chunk by chunk
    train = standardise(train, stats, kinds)
    valid = standardise(open_split(store, valid_rows, cfg.stream_above_mb), stats, kinds)
    loading = {"workers": cfg.loader_workers, "pin_memory": device.startswith("cuda")}

    mcfg = model_config(cfg, store)
    model = build_model(mcfg).to(device)
    optimizer = _optimizer(cfg, model)
    scheduler = lr_scheduler(cfg, optimizer)
    metric, higher = primary_metric(store.target)
    start_epoch, best_score, best_epoch, best_state, bad_epochs = 0, None, -1, None, 0
    history: list[dict[str, Any]] = []
    ckpt_path = out / CHECKPOINT
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, best_epoch, bad_epochs = ckpt["epoch"], ckpt["best_epoch"], ckpt["bad_epochs"]
        best_score, best_state = ckpt["best_score"], ckpt["best_state"]
        history = json.loads(ckpt["history"])
        console.print(f"resuming train {cfg.task} from epoch {start_epoch}/{cfg.epochs}")

    # variants leave some parameters unused (e.g. no-intraced's bases): DDP must not wait on them
    net = DistributedDataParallel(model, find_unused_parameters=True) if dist.active else model
    autocast, scaler = mixed_precision(cfg.precision, device)

    def forward_backward(module: nn.Module, batch: Batch) -> ModelOutput:
        with autocast:
            out_b = module(batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(out_b.loss).backward()
        return out_b

    to_compile = cfg.compile
    streamed = [name for name, s in (("train", train), ("valid", valid)) if isinstance(s, StoreSplit)]
    console.print(
        f"train {cfg.task}: {mcfg.model}/{mcfg.variant}, {count_parameters(model):,} parameters, "
        f"{len(train)} train / {len(valid)} valid samples on {device}"
        + (f", {dist.world} processes" if dist.active else "")
        + (f", {' and '.join(streamed)} streamed from the store" if streamed else "")
    )
    with progress_bar(console, unit="epoch") as progress:
        task = progress.add_task(f"train {cfg.task}", total=cfg.epochs, completed=start_epoch)
        for epoch in range(start_epoch, cfg.epochs):
            if cfg.patience and bad_epochs >= cfg.patience:
                console.print(f"early stop: no improvement of valid {metric} for {cfg.patience} epochs")
                break
            net.train()
            torch.manual_seed(epoch_seed(cfg.seed, epoch, dist.rank))
            shuffle = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
            lr = optimizer.param_groups[0]["lr"]
            t0 = time.perf_counter()
            seen = 0
            sums: dict[str, Tensor] = {}  # sample-weighted loss terms, on the device
            for global_batch in batches(train, cfg.batch_size, generator=shuffle, **loading):
                batch = shard(global_batch, dist).to(device)
                if to_compile:
                    net, out_b = compiled_or_eager(net, partial(forward_backward, batch=batch), console)
                    to_compile = False
                else:
                    out_b = forward_backward(net, batch)
                if cfg.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                b = len(batch.target)
                seen += b
                for name, value in {"loss": out_b.loss, **out_b.terms}.items():
                    weighted = value.detach().double() * b
                    sums[name] = sums[name] + weighted if name in sums else weighted
            if scheduler is not None:
                scheduler.step()
            # one device -> host transfer per epoch, then the sum over ranks
            totals = dict(zip(sums, torch.stack(list(sums.values())).tolist(), strict=True))
            totals = all_sum({"n": float(seen), **totals}, dist)
            n = totals.pop("n")
            seconds = time.perf_counter() - t0
            val = predict(model, valid, cfg.batch_size, device, workers=cfg.loader_workers)
            score = float(compute_metrics(val, store.target, store.num_classes)[metric])
            if _better(score, best_score, higher):
                best_score, best_epoch, bad_epochs = score, epoch + 1, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad_epochs += 1
            row = {"epoch": epoch + 1, "train_loss": totals.pop("loss") / n}
            row.update({f"train_{k}": v / n for k, v in totals.items()})
            row.update({"valid_loss": val.loss, f"valid_{metric}": score, "lr": lr})
            row.update({"seconds": round(seconds, 4), "samples_per_s": round(n / seconds, 2)})
            history.append(row)
            if dist.main:
                _write_history(out / HISTORY, history)
                _save_checkpoint(
                    ckpt_path,
                    {
                        "epoch": epoch + 1,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict() if scheduler is not None else None,
                        "best_epoch": best_epoch,
                        "best_score": best_score,
                        "best_state": best_state,
                        "bad_epochs": bad_epochs,
                        "history": json.dumps(history),
                    },
                )
            barrier(dist)
            progress.update(
                task,
                advance=1,
                description=f"train {cfg.task} loss {row['train_loss']:.3f} valid {metric} {score:.3f}",
            )
            if after_epoch is not None:
                after_epoch(epoch + 1)

    if best_state is None:
        raise DataError(out, f"no epoch produced a finite valid {metric}")
    if dist.main:
        meta = {
            "model_config": dataclasses.asdict(mcfg),
            "train_config": dataclasses.asdict(cfg),
            "stats": stats.as_lists(),
            "store": str(store.path),
            "metric": metric,
            "best_epoch": best_epoch,
            "best_score": best_score,
            "parameters": count_parameters(model),
            "processes": dist.world,
        }
        save_trained(out, model, best_state, meta)
        model.load_state_dict(best_state)
        diagnostics = mechanism_diagnostics(
            model, (b.to(device) for b in batches(valid, cfg.batch_size, **loading))
        )
        (out / DIAGNOSTICS).write_text(json.dumps(diagnostics, indent=2))
        timing = {
            "epochs_run": len(history),
            "processes": dist.world,
            "mean_epoch_seconds": sum(r["seconds"] for r in history) / len(history),
            "mean_samples_per_s": sum(r["samples_per_s"] for r in history) / len(history),
        }
        (out / "timing.json").write_text(json.dumps(timing, indent=2))
    return {"best_epoch": best_epoch, f"valid_{metric}": best_score, "epochs_run": len(history)}


def run_train(
    cfg: TrainConfig,
    extract_cfg: ExtractConfig | None,
    workdir: Path,
    *,
    force: bool = False,
    device: str = "auto",
    console: Console | None = None,
    lock_timeout: float | None = None,
    after_epoch: Callable[[int], None] | None = None,
) -> Path:
    """Run (or reuse, or resume) one training run; return its output folder.

    ``extract_cfg`` None: train on the latest extraction of the task (see ``resolve_store``).
    """
    console = console or Console(stderr=True)
    dist = setup(resolve_device(device))
    if not dist.main:  # one writer: rank 0 extracts, locks and completes; the others follow
        console = Console(stderr=True, quiet=True)
        barrier(dist)
    store_path = resolve_store(cfg.task, workdir, extract_cfg, device, console)
    key = train_key(cfg, store_path.parent.name.rsplit("-", 1)[-1])
    stage = StageDir(workdir, key)
    if dist.main:
        barrier(dist)
    if stage.is_complete() and not force:
        console.print(f"[green]reusing[/] train {cfg.task} ({key.digest}): {stage.path}")
        return stage.path
    lock = stage.lock(lock_timeout, on_wait=console.print) if dist.main else nullcontext()
    with lock:
        if stage.is_complete() and not force:
            return stage.path
        if dist.main:
            stage.begin(force=force)
        barrier(dist)
        with FeatureStore(store_path) as store:
            summary = fit(cfg, store, stage.path, dist, console, after_epoch)
        if dist.main:
            stage.complete(summary)
    console.print(f"[green]trained[/] {cfg.task}: {summary} -> {stage.path}")
    return stage.path
