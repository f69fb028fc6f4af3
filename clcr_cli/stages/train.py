"""Stage ``train``: fit CLCR (or a variant, or a baseline) on the cached features.

Inputs:   the extract stage's ``features.h5`` for the task (extracted first if missing).
Params:   :class:`~clcr_cli.config.TrainConfig` (one output per seed).
Outputs:  ``<workdir>/train/<task>-<key>/``
            model.safetensors  the weights of the best validation epoch
            model.json         model and train config, feature statistics, best epoch/score
            history.csv        per epoch: train/valid loss, each loss term, the main metric,
                               seconds and samples/s
            timing.json        mean epoch time, samples/s, and the share of step time spent
                               in the Stiefel (orthogonal) parameterisation and the whitening
                               regulariser
            last.pt            the resumable checkpoint (model, optimiser, scheduler, RNG
                               states, epoch, best score), a state dict read back with
                               ``torch.load(weights_only=True)``
Cache:    a complete output is reused; a killed run resumes from ``last.pt`` and ends with
          the same weights and metrics as an uninterrupted run (bit-identical on CPU).
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
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch.nn.parallel import DistributedDataParallel

from clcr_cli.cache import StageDir, StageKey
from clcr_cli.config import ExtractConfig, TrainConfig
from clcr_cli.distributed import Dist, all_sum, barrier, setup, shard
from clcr_cli.errors import ConfigError, DataError
from clcr_cli.metrics import primary_metric
from clcr_cli.model import ModelConfig, build_model, count_parameters
from clcr_cli.progress import progress_bar
from clcr_cli.runtime import resolve_device
from clcr_cli.stages.data import (
    FeatureStats,
    batches,
    carve_valid,
    load_split,
    modality_specs,
    standardise,
)
from clcr_cli.stages.extract import resolve_store
from clcr_cli.stages.inference import compute_metrics, predict, save_trained
from clcr_cli.stages.overhead import measure_overhead
from clcr_cli.store import FeatureStore

TRAIN_VERSION = 1
CHECKPOINT = "last.pt"
HISTORY = "history.csv"


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
        lambda_intra=cfg.lambda_intra,
        lambda_inter=cfg.lambda_inter,
        regression_loss=cfg.regression_loss,
        dropout=cfg.dropout,
    )


def train_key(cfg: TrainConfig, extract_digest: str) -> StageKey:
    return StageKey("train", TRAIN_VERSION, cfg.task, dataclasses.asdict(cfg), {"extract": extract_digest})


def _optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


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
    needs no saved RNG state to replay the uninterrupted one bit for bit.
    """
    device = dist.device
    torch.manual_seed(cfg.seed)
    kinds = {m: info.kind for m, info in store.modalities.items()}
    train = load_split(store, "train")
    if len(train) == 0:
        raise DataError(store.path, "the training split is empty")
    if len(store.split_indices("valid")):
        valid = load_split(store, "valid")
    else:
        train, valid = carve_valid(train, cfg.valid_fraction, cfg.seed)
        console.print(f"no valid split in the store: carved {len(valid)} samples from train (seeded)")
    stats = FeatureStats.of(train, kinds)
    train, valid = standardise(train, stats, kinds), standardise(valid, stats, kinds)

    mcfg = model_config(cfg, store)
    model = build_model(mcfg).to(device)
    optimizer = _optimizer(cfg, model)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
        if cfg.scheduler == "cosine"
        else None
    )
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

    overhead = measure_overhead(model, next(batches(train, cfg.batch_size)).to(device))
    # variants leave some parameters unused (e.g. no-intraced's bases): DDP must not wait on them
    net = DistributedDataParallel(model, find_unused_parameters=True) if dist.active else model
    autocast, scaler = mixed_precision(cfg.precision, device)
    console.print(
        f"train {cfg.task}: {mcfg.model}/{mcfg.variant}, {count_parameters(model):,} parameters, "
        f"{len(train)} train / {len(valid)} valid samples on {device}"
        + (f", {dist.world} processes" if dist.active else "")
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
            t0 = time.perf_counter()
            sums: dict[str, float] = {}
            for global_batch in batches(train, cfg.batch_size, generator=shuffle):
                batch = shard(global_batch, dist).to(device)
                with autocast:
                    out_b = net(batch)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(out_b.loss).backward()
                if cfg.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                b = len(batch.target)
                sums["n"] = sums.get("n", 0.0) + b
                sums["loss"] = sums.get("loss", 0.0) + float(out_b.loss.detach()) * b
                for name, value in out_b.terms.items():
                    sums[name] = sums.get(name, 0.0) + float(value) * b
            if scheduler is not None:
                scheduler.step()
            sums = all_sum(sums, dist)
            seen = sums.pop("n")
            seconds = time.perf_counter() - t0
            val = predict(model, valid, cfg.batch_size, device)  # identical on every rank
            score = float(compute_metrics(val, store.target, store.num_classes)[metric])
            if _better(score, best_score, higher):
                best_score, best_epoch, bad_epochs = score, epoch + 1, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad_epochs += 1
            row = {"epoch": epoch + 1, "train_loss": sums["loss"] / seen}
            row.update({f"train_{k}": v / seen for k, v in sums.items() if k != "loss"})
            row.update({"valid_loss": val.loss, f"valid_{metric}": score})
            row.update({"seconds": round(seconds, 4), "samples_per_s": round(seen / seconds, 2)})
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
        timing = {
            "epochs_run": len(history),
            "processes": dist.world,
            "mean_epoch_seconds": sum(r["seconds"] for r in history) / len(history),
            "mean_samples_per_s": sum(r["samples_per_s"] for r in history) / len(history),
            **overhead,
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
