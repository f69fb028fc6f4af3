"""The training loop: :func:`fit` trains one run into a folder, resumable after any epoch.

Its parts, each a function or class below:

- the optimiser, the per-epoch learning-rate schedule, mixed precision and torch.compile
  with an eager fallback, put together in a :class:`Stepper` (one optimisation step);
- one epoch (:func:`train_epoch`): a seeded shuffle, seeded dropout, modalities dropped
  per sample with ``modality_dropout`` (``training/presence.py``), loss terms summed over
  the DDP ranks;
- selection (:class:`Selection`): the best validation epoch's weights, early stopping;
- resuming (``training/checkpoint.py``): ``last.pt``, written after every epoch, holds
  everything the next epoch depends on and the key of the run that wrote it; a damaged one,
  or one of another run, is reported, removed and the run starts from epoch 0;
- what each epoch records (``training/epoch_log.py``): history.csv, TensorBoard events,
  train.log, a plain line per epoch where the console is not a terminal;
- a run from set-up to outputs (:class:`TrainingRun`: set-up, restore, train, finish, as
  torchtune's recipes split them) and the outputs of a finished run (:func:`write_outputs`).

Randomness: epoch e shuffles with a generator seeded by (seed, e) -- the same on every
rank --, draws dropout from torch's RNG seeded by (seed, e, rank) and drops modalities
by draws fixed by (seed, e, sample id, modality), so a resumed run needs no saved RNG
state to replay the uninterrupted one bit for bit. A split larger
than ``stream_above_mb`` is streamed from the store in the same batches, in the same
order, so streaming changes nothing either.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, TypeVar

import torch
from rich.console import Console
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from clcr_cli.cache import atomic_write_text
from clcr_cli.config import TrainConfig, option_values
from clcr_cli.distributed import Dist, all_sum, barrier, shard
from clcr_cli.errors import ConfigError, DataError
from clcr_cli.features.text import resolve_text_model
from clcr_cli.metrics import primary_metric
from clcr_cli.model import ModelConfig, build_model, count_parameters
from clcr_cli.model.batch import Batch, ModelOutput
from clcr_cli.model.bert import BertModel
from clcr_cli.model.diagnostics import mechanism_diagnostics
from clcr_cli.progress import progress_bar
from clcr_cli.store import FeatureStore
from clcr_cli.training.checkpoint import CHECKPOINT, ForeignCheckpoint, resume, save_checkpoint
from clcr_cli.training.data import (
    FeatureStats,
    Split,
    StoreSplit,
    batches,
    carve_valid,
    frame_views,
    model_config,
    open_split,
    raw_modalities,
    standardise,
)
from clcr_cli.training.epoch_log import HISTORY, LOG, EpochLog, RunLog, write_history
from clcr_cli.training.inference import (
    TEST_BEST_FILE,
    compute_metrics,
    predict,
    save_trained,
    save_weights,
)
from clcr_cli.training.presence import random_presence
from clcr_cli.training.pretrained import load_pretrained
from clcr_cli.training.text_weights import load_bert_weights

T = TypeVar("T")

DIAGNOSTICS = "diagnostics.json"
TIMING = "timing.json"
WARMUP_START = 0.1  # warmup-cosine starts at lr * WARMUP_START


# --- the pieces of a step -----------------------------------------------------------------


def parameter_groups(cfg: TrainConfig, model: nn.Module) -> list[dict[str, Any]] | list[nn.Parameter]:
    """The trainable parameters: one group, or with ``text_lr`` a second one for the BERT
    fine-tuned inside the model (model/bert.py) at its own learning rate."""
    params = [p for p in model.parameters() if p.requires_grad]
    text = {id(p) for m in model.modules() if isinstance(m, BertModel) for p in m.parameters()}
    if cfg.text_lr <= 0 or not text:
        return params
    return [{"params": [p for p in params if id(p) not in text]},
            {"params": [p for p in params if id(p) in text], "lr": cfg.text_lr}]


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = parameter_groups(cfg, model)
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
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.step_gamma)
    return None


def check_precision(precision: str, device: str) -> None:
    """fp16 needs a GPU (bf16 and fp32 run anywhere): checked before any work."""
    if precision == "fp16" and not device.startswith("cuda"):
        raise ConfigError("--precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")


def mixed_precision(precision: str, device: str) -> tuple[Any, torch.amp.GradScaler]:
    """(autocast context, grad scaler) for ``fp32`` (both no-ops), ``bf16`` or ``fp16``.

    fp16 needs loss scaling and a GPU; bf16 runs under autocast on CUDA and on the CPU.
    """
    check_precision(precision, device)
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = torch.autocast(device_type, dtype=dtype, enabled=dtype is not None)
    return autocast, torch.amp.GradScaler(device_type, enabled=precision == "fp16")


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


class Stepper:
    """One optimisation step per batch: forward under autocast, scaled backward, gradient
    clipping (``grad_clip`` > 0), optimiser step. ``net`` is what runs the batch (the model,
    or its DDP wrapper); with ``compile`` the first step compiles it."""

    def __init__(
        self, net: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
        device: str, console: Console,
    ) -> None:
        self.net, self.model, self.optimizer = net, model, optimizer
        self.autocast, self.scaler = mixed_precision(cfg.precision, device)
        self.grad_clip, self.compile, self.console = cfg.grad_clip, cfg.compile, console

    def _forward_backward(self, module: nn.Module, batch: Batch) -> ModelOutput:
        with self.autocast:
            out = module(batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out.loss).backward()
        return out

    def __call__(self, batch: Batch) -> ModelOutput:
        if self.compile:
            self.net, out = compiled_or_eager(self.net, partial(self._forward_backward, batch=batch), self.console)
            self.compile = False
        else:
            out = self._forward_backward(self.net, batch)
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return out


# --- one epoch, selection, checkpoints ----------------------------------------------------


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one epoch's RNG streams: a resumed run replays them exactly."""
    return (seed * 1_000_003 + epoch) * 1_009 + rank


def train_epoch(
    step: Stepper, train: Split, cfg: TrainConfig, epoch: int, dist: Dist, loading: dict[str, Any]
) -> dict[str, float]:
    """Epoch ``epoch`` (0-based) over ``train``: the mean of every loss term over all the
    ranks' samples, the samples seen (``n``) and the epoch's ``seconds``."""
    step.net.train()
    torch.manual_seed(epoch_seed(cfg.seed, epoch, dist.rank))
    shuffle = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
    present = None
    if cfg.modality_dropout > 0:
        seed = ("modality_dropout", cfg.seed, epoch)
        present = random_presence(train.ids, train.modalities(), cfg.modality_dropout, seed)
    t0 = time.perf_counter()
    seen = 0
    sums: dict[str, Tensor] = {}  # sample-weighted loss terms, on the device
    views = frame_views(cfg, epoch)
    for global_batch in batches(train, cfg.batch_size, generator=shuffle, present=present, views=views, **loading):
        batch = shard(global_batch, dist).to(dist.device)
        out = step(batch)
        b = len(batch.target)
        seen += b
        for name, value in {"loss": out.loss, **out.terms}.items():
            weighted = value.detach().double() * b
            sums[name] = sums[name] + weighted if name in sums else weighted
    # one device -> host transfer per epoch, then the sum over ranks
    totals = dict(zip(sums, torch.stack(list(sums.values())).tolist(), strict=True))
    totals = all_sum({"n": float(seen), **totals}, dist)
    n = totals.pop("n")
    return {"n": n, "seconds": time.perf_counter() - t0, **{k: v / n for k, v in totals.items()}}


def _better(score: float, best: float | None, higher: bool) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(score)
    return score > best if higher else score < best


@dataclass
class Selection:
    """The weights a run keeps -- those of its best validation epoch -- and early stopping."""

    higher: bool  # a higher score is better
    best_score: float | None = None
    best_epoch: int = -1
    best_state: dict[str, Tensor] | None = None
    bad_epochs: int = 0  # epochs since the last improvement

    def update(self, score: float, epoch: int, model: nn.Module) -> None:
        """Score epoch ``epoch`` (1-based); copy the weights when it is the best yet."""
        if _better(score, self.best_score, self.higher):
            self.best_score, self.best_epoch, self.bad_epochs = score, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.bad_epochs += 1

    def exhausted(self, patience: int) -> bool:
        """True once ``patience`` (0: never) epochs passed without improvement."""
        return patience > 0 and self.bad_epochs >= patience


# --- a run --------------------------------------------------------------------------------


def _splits(
    cfg: TrainConfig, store: FeatureStore, console: Console, raw: tuple[str, ...] = ()
) -> tuple[Split, Split, FeatureStats]:
    """(train, valid, statistics): the splits standardised with the training statistics,
    held in memory or streamed; valid carved from train where the store has none."""
    kinds = {m: info.kind for m, info in store.modalities.items()}
    train_rows, valid_rows = store.split_indices("train"), store.split_indices("valid")
    if len(train_rows) == 0:
        raise DataError(store.path, "the training split is empty")
    if len(valid_rows) == 0:
        train_rows, valid_rows = carve_valid(train_rows, cfg.valid_fraction, cfg.seed)
        console.print(f"no valid split in the store: carved {len(valid_rows)} samples from train (seeded)")
    train = open_split(store, train_rows, cfg.stream_above_mb)
    stats = FeatureStats.of(train, kinds, raw=raw)  # from the raw split, chunk by chunk
    train = standardise(train, stats, kinds)
    valid = standardise(open_split(store, valid_rows, cfg.stream_above_mb), stats, kinds)
    return train, valid, stats


def fresh_model(
    cfg: TrainConfig, mcfg: ModelConfig, device: str
) -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """A new model (initialised from the run's seed), its optimiser and its schedule."""
    torch.manual_seed(cfg.seed)
    model = build_model(mcfg)
    load_pretrained(model, cfg.encoder_weights)
    for bert in (m for m in model.modules() if isinstance(m, BertModel)):  # the text model's own weights
        load_bert_weights(bert, resolve_text_model(mcfg.text_encoder["model"]))
        bert.gradient_checkpointing = cfg.gradient_checkpointing
    model = model.to(device)
    optimizer = make_optimizer(cfg, model)
    return model, optimizer, lr_scheduler(cfg, optimizer)


def _first_line(exc: BaseException, limit: int = 200) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:limit]


class TrainingRun:
    """One run, in four steps as torchtune's recipes have them: set-up (``__init__``: the
    splits and their statistics, the model, optimiser, schedule and selection),
    :meth:`restore` (from ``last.pt`` or from epoch 0), :meth:`train` (the epochs) and
    :meth:`finish` (the outputs and what describes them)."""

    def __init__(
        self, cfg: TrainConfig, store: FeatureStore, out: Path, dist: Dist, console: Console, run_key: str,
        provenance: dict[str, Any],
    ) -> None:
        self.cfg, self.out, self.dist, self.run_key, self.provenance = cfg, out, dist, run_key, provenance
        self.device = dist.device
        self.log = RunLog(console, out / LOG if dist.main else None)
        self.mcfg = model_config(cfg, store)
        self.train_split, self.valid, self.stats = _splits(cfg, store, self.log, raw_modalities(self.mcfg))
        self.loading = {"workers": cfg.loader_workers, "pin_memory": self.device.startswith("cuda")}
        self.target, self.num_classes = store.target, store.num_classes
        self.metric, self.higher = primary_metric(store.target)
        self.test = self._test_split(store) if cfg.keep_test_best else None
        self.model, self.optimizer, self.scheduler = fresh_model(cfg, self.mcfg, self.device)
        self.selection, self.test_selection = Selection(self.higher), self._test_selection()
        self.start, self.history = 0, []

    def _test_split(self, store: FeatureStore) -> Split:
        """``--keep-test-best``: the test split, standardised as valid is."""
        rows = store.split_indices("test")
        if len(rows) == 0:
            raise DataError(store.path, "--keep-test-best: the store has no test split")
        kinds = {m: info.kind for m, info in store.modalities.items()}
        return standardise(open_split(store, rows, self.cfg.stream_above_mb), self.stats, kinds)

    def _test_selection(self) -> Selection | None:
        return Selection(self.higher) if self.test is not None else None

    def restore(self) -> None:
        """Resume from ``last.pt``; one that is damaged or not this run's (``training.checkpoint``)
        is reported and removed, and the run starts from epoch 0."""
        checkpoint = self.out / CHECKPOINT
        try:
            self.start, self.history = resume(checkpoint, self.run_key, self.model, self.optimizer, self.scheduler,
                                              self.selection, self.device, self.cfg.epochs, self.metric,
                                              self.test_selection)
        except Exception as exc:  # whatever a damaged file makes torch.load or a state dict raise
            what = "not this run's checkpoint" if isinstance(exc, ForeignCheckpoint) else "unreadable checkpoint"
            reason = _first_line(exc) if isinstance(exc, ForeignCheckpoint) else f"{type(exc).__name__}: {_first_line(exc)}"
            self.log.print(f"[yellow]{checkpoint}: {what} ({reason}); training from epoch 0[/]", soft_wrap=True)
            barrier(self.dist)  # every rank has tried it before rank 0 removes it
            if self.dist.main:
                checkpoint.unlink()
            self.model, self.optimizer, self.scheduler = fresh_model(self.cfg, self.mcfg, self.device)
            self.selection, self.test_selection = Selection(self.higher), self._test_selection()
            self.start, self.history = 0, []
        if self.start:
            self.log.print(f"resuming train {self.cfg.task} from epoch {self.start}/{self.cfg.epochs}")

    def _epoch(self, step: Stepper, epoch: int) -> dict[str, Any]:
        """Train and validate epoch ``epoch`` (0-based): its history row."""
        cfg = self.cfg
        lr = self.optimizer.param_groups[0]["lr"]
        terms = train_epoch(step, self.train_split, cfg, epoch, self.dist, self.loading)
        if self.scheduler is not None:
            self.scheduler.step()
        n, seconds = terms.pop("n"), terms.pop("seconds")
        val = predict(self.model, self.valid, cfg.batch_size, self.device, workers=cfg.loader_workers,
                      views=frame_views(cfg))
        score = float(compute_metrics(val, self.target, self.num_classes)[self.metric])
        self.selection.update(score, epoch + 1, self.model)
        row = {"epoch": epoch + 1, "train_loss": terms.pop("loss")}
        row.update({f"train_{k}": v for k, v in terms.items()})
        row.update({"valid_loss": val.loss, f"valid_{self.metric}": score, "lr": lr})
        if self.test is not None:  # --keep-test-best: read test every epoch, as the peers do
            test = predict(self.model, self.test, cfg.batch_size, self.device, workers=cfg.loader_workers,
                           views=frame_views(cfg))
            row[f"test_{self.metric}"] = float(compute_metrics(test, self.target, self.num_classes)[self.metric])
            self.test_selection.update(row[f"test_{self.metric}"], epoch + 1, self.model)
        if val.level_weights is not None:
            row.update({f"valid_level_weight_{i}": float(w) for i, w in enumerate(val.level_weights)})
        row.update({"seconds": round(seconds, 4), "samples_per_s": round(n / seconds, 2)})
        return row

    def train(self, after_epoch: Callable[[int], None] | None = None) -> None:
        """The epochs from :attr:`start` on: after each, history, events and ``last.pt``;
        ``after_epoch(e)`` is called once epoch e (1-based) is checkpointed."""
        cfg, dist, model = self.cfg, self.dist, self.model
        # variants leave some parameters unused (e.g. no-intraced's bases): DDP must not wait on them
        net = DistributedDataParallel(model, find_unused_parameters=True) if dist.active else model
        step = Stepper(net, model, self.optimizer, cfg, self.device, self.log)
        streamed = [name for name, s in (("train", self.train_split), ("valid", self.valid))
                    if isinstance(s, StoreSplit)]
        self.log.print(
            f"train {cfg.task}: {self.mcfg.model}/{self.mcfg.variant}, {count_parameters(model):,} parameters, "
            f"{len(self.train_split)} train / {len(self.valid)} valid samples on {self.device}"
            + (f", {dist.world} processes" if dist.active else "")
            + (f", {' and '.join(streamed)} streamed from the store" if streamed else "")
        )
        epochs = EpochLog(self.out, self.start, cfg.epochs, self.metric, self.log, dist.main)
        try:
            with progress_bar(self.log.console, unit="epoch") as progress:
                task = progress.add_task(f"train {cfg.task}", total=cfg.epochs, completed=self.start)
                for epoch in range(self.start, cfg.epochs):
                    if self.selection.exhausted(cfg.patience):
                        self.log.print(f"early stop: no improvement of valid {self.metric} for {cfg.patience} epochs")
                        break
                    self.history.append(self._epoch(step, epoch))
                    epochs.record(self.history)
                    if dist.main:
                        save_checkpoint(self.out / CHECKPOINT, self.run_key, epoch + 1, model, self.optimizer,
                                        self.scheduler, self.selection, self.history, self.test_selection)
                    barrier(dist)
                    row = self.history[-1]
                    progress.update(task, advance=1, description=f"train {cfg.task} loss {row['train_loss']:.3f} "
                                                                 f"valid {self.metric} {row[f'valid_{self.metric}']:.3f}")
                    if after_epoch is not None:
                        after_epoch(epoch + 1)
        finally:
            epochs.close()

    def finish(self) -> dict[str, Any]:
        """Write the selected model and what describes it (rank 0); the run's summary."""
        try:
            if self.selection.best_state is None:
                raise DataError(self.out, f"no epoch produced a finite valid {self.metric}")
            if self.dist.main:
                meta = {
                    "model_config": dataclasses.asdict(self.mcfg),
                    "train_config": option_values(self.cfg),
                    "stats": self.stats.as_lists(),
                    "run_key": self.run_key,
                    **self.provenance,
                    "versions": {"clcr": package_version("clcr"), "torch": torch.__version__},
                    "metric": self.metric,
                    "best_epoch": self.selection.best_epoch,
                    "best_score": self.selection.best_score,
                    "parameters": count_parameters(self.model),
                    "processes": self.dist.world,
                }
                if self.test_selection is not None:  # optimistic, and labelled so wherever it is read
                    meta["test_best_epoch"] = self.test_selection.best_epoch
                    meta["test_best_score"] = self.test_selection.best_score
                    save_weights(self.out / TEST_BEST_FILE, self.test_selection.best_state)
                valid_batches = (b.to(self.device) for b in batches(self.valid, self.cfg.batch_size,
                                                                     views=frame_views(self.cfg), **self.loading))
                write_outputs(self.out, self.model, self.selection, self.history, valid_batches, meta)
            return {"best_epoch": self.selection.best_epoch, f"valid_{self.metric}": self.selection.best_score,
                    "epochs_run": len(self.history)}
        finally:
            self.log.close()


def fit(
    cfg: TrainConfig,
    store: FeatureStore,
    out: Path,
    dist: Dist,
    console: Console,
    after_epoch: Callable[[int], None] | None = None,
    run_key: str = "",
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one run into ``out``, resuming from ``out/last.pt`` when that is this run's
    (``run_key``: the train output's key); return its summary. ``provenance`` (the data the
    run was trained on: ``stages.train``) goes into model.json."""
    run = TrainingRun(cfg, store, out, dist, console, run_key, provenance or {})
    run.restore()
    run.train(after_epoch)
    return run.finish()


def write_outputs(
    out: Path,
    model: nn.Module,
    selection: Selection,
    history: list[dict[str, Any]],
    valid_batches: Iterable[Batch],
    meta: dict[str, Any],
) -> None:
    """A finished run's outputs: the selected weights and ``meta`` (model.safetensors,
    model.json), what its mechanisms do on the valid batches (diagnostics.json) and how
    long its epochs took (timing.json)."""
    save_trained(out, model, selection.best_state, meta)
    write_history(out / HISTORY, history)  # also when a redone output resumed past its last epoch
    model.load_state_dict(selection.best_state)
    atomic_write_text(out / DIAGNOSTICS, json.dumps(mechanism_diagnostics(model, valid_batches), indent=2))
    timing = {
        "epochs_run": len(history),
        "processes": meta["processes"],
        "mean_epoch_seconds": sum(r["seconds"] for r in history) / len(history),
        "mean_samples_per_s": sum(r["samples_per_s"] for r in history) / len(history),
    }
    atomic_write_text(out / TIMING, json.dumps(timing, indent=2))
