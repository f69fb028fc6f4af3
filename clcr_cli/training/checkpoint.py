"""``last.pt``: everything the next epoch depends on, bound to the run that wrote it.

Written after every epoch (atomically: a temporary name, then a rename) and read back with
``torch.load(weights_only=True)``, so a crafted file runs no code. It records the key of the
run that wrote it (the train output's folder key, which hashes every option and the
extraction), and :func:`resume` accepts it only for that run and only when its fields agree
with each other: at most the run's epochs, one history row per epoch, this model's tensors,
and a best epoch and score that are the history's. Anything else -- a ``last.pt`` copied
from another run, a forged one, a damaged file -- is a :class:`ForeignCheckpoint`, and the
run starts again from epoch 0 (``training.loop``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from clcr_cli.cache import atomic_path
from clcr_cli.errors import writing
from clcr_cli.model.clcr import rename_legacy

if TYPE_CHECKING:
    from clcr_cli.training.loop import Selection

CHECKPOINT = "last.pt"


class ForeignCheckpoint(ValueError):
    """A ``last.pt`` that this run did not write, or whose fields contradict each other."""


def save_checkpoint(
    path: Path,
    run_key: str,
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    selection: Selection,
    history: list[dict[str, Any]],
    test_selection: Selection | None = None,
) -> None:
    """``last.pt`` after ``epoch`` epochs of the run ``run_key`` (``test_selection``: the best
    test epoch's, for ``--keep-test-best``); a full disk is one line."""
    state = {
        "run_key": run_key,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "best_epoch": selection.best_epoch,
        "best_score": selection.best_score,
        "best_state": selection.best_state,
        "bad_epochs": selection.bad_epochs,
        "history": json.dumps(history),
    }
    if test_selection is not None:
        state.update({f"test_{k}": v for k, v in _selected(test_selection).items()})
    with atomic_path(path) as tmp, writing(path), open(tmp, "wb") as fh:
        torch.save(state, fh)  # to a file object: a full disk is then torch's OSError, not an abort


def _selected(selection: Selection) -> dict[str, Any]:
    return {"best_epoch": selection.best_epoch, "best_score": selection.best_score,
            "best_state": selection.best_state, "bad_epochs": selection.bad_epochs}


def _restore(selection: Selection, ckpt: dict[str, Any], prefix: str = "") -> None:
    selection.best_epoch, selection.best_score = ckpt[f"{prefix}best_epoch"], ckpt[f"{prefix}best_score"]
    selection.best_state, selection.bad_epochs = ckpt[f"{prefix}best_state"], ckpt[f"{prefix}bad_epochs"]


def same_tensors(state: Any, model: nn.Module) -> bool:
    """True when ``state`` holds exactly ``model``'s parameters and buffers, by name and shape."""
    expected = {k: v.shape for k, v in model.state_dict().items()}
    return isinstance(state, dict) and {k: getattr(v, "shape", None) for k, v in state.items()} == expected


def read_run_key(path: Path) -> str | None:
    """The run key a ``last.pt`` records (None: none, or not a checkpoint)."""
    try:
        key = torch.load(path, map_location="cpu", weights_only=True).get("run_key")
    except Exception:  # whatever a damaged or foreign file makes torch.load raise
        return None
    return key if isinstance(key, str) else None


def _check(ckpt: dict[str, Any], run_key: str, model: nn.Module, epochs: int, metric: str) -> None:
    """Raise :class:`ForeignCheckpoint` unless ``ckpt`` is one this run could have written."""
    if ckpt.get("run_key") != run_key:
        found = ckpt.get("run_key")
        raise ForeignCheckpoint(f"written by another run ({found if isinstance(found, str) else 'no run key'}, "
                                f"not {run_key})")
    epoch, history = ckpt["epoch"], json.loads(ckpt["history"])
    if not (isinstance(epoch, int) and 0 <= epoch <= epochs and isinstance(history, list)
            and len(history) == epoch and same_tensors(ckpt["model"], model)
            and (ckpt["best_state"] is None or same_tensors(ckpt["best_state"], model))):
        raise ForeignCheckpoint("its fields do not belong to this run")
    best_epoch, best_score = ckpt["best_epoch"], ckpt["best_score"]
    if ckpt["best_state"] is not None:
        recorded = history[best_epoch - 1].get(f"valid_{metric}") if 1 <= best_epoch <= epoch else None
        if not (isinstance(best_score, float) and isinstance(recorded, float)
                and (recorded == best_score or math.isnan(recorded) and math.isnan(best_score))):
            raise ForeignCheckpoint(f"its best epoch {best_epoch} and score {best_score} are not its history's")


def resume(
    path: Path,
    run_key: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    selection: Selection,
    device: str,
    epochs: int,
    metric: str,
    test_selection: Selection | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """Load the checkpoint at ``path``, if there is one, into the model, optimiser, schedule
    and selection: (epochs done, history so far). One this run did not write, or whose fields
    disagree (module docstring), is a :class:`ForeignCheckpoint`; a damaged file raises what
    ``torch.load`` raises."""
    if not path.exists():
        return 0, []
    ckpt = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(ckpt, dict):
        raise ForeignCheckpoint("not a checkpoint")
    for name in ("model", "best_state", "test_best_state"):  # written before the renames of model/clcr.py
        if isinstance(ckpt.get(name), dict):
            ckpt[name] = rename_legacy(ckpt[name])
    _check(ckpt, run_key, model, epochs, metric)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    _restore(selection, ckpt)
    if test_selection is not None:
        if "test_best_epoch" not in ckpt:
            raise ForeignCheckpoint("it keeps no best test epoch (--keep-test-best)")
        _restore(test_selection, ckpt, "test_")
    return ckpt["epoch"], json.loads(ckpt["history"])
