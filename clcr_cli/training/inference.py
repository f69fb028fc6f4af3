"""Running a trained model over a split: predictions, losses and metrics.

Shared by ``train`` (validation each epoch), ``eval``, ``ablate`` and ``noise``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from clcr_cli.cache import atomic_path, atomic_write_text
from clcr_cli.errors import DataError, writing
from clcr_cli.metrics import classification_metrics, regression_metrics
from clcr_cli.model import ModelConfig, build_model
from clcr_cli.model.batch import Batch, ModalitySpec
from clcr_cli.model.diagnostics import per_sample_columns
from clcr_cli.training.data import FeatureStats, FrameViews, Presence, Split, batches

WEIGHTS_FILE = "model.safetensors"
TEST_BEST_FILE = "model_test_best.safetensors"  # train --keep-test-best: the best test epoch's (optimistic)
META_FILE = "model.json"


@dataclass
class Predictions:
    ids: list[str]
    target: np.ndarray | None  # (N,); None for new data, without labels
    output: np.ndarray  # (N, C) logits or (N,) regression prediction
    loss: float  # mean total loss (NaN without labels)
    terms: dict[str, float]  # mean of each loss term
    level_weights: np.ndarray | None  # (L,) mean over samples
    modality_weights: np.ndarray | None  # (M,) mean over samples
    # with ``predict(per_sample=True)``: per-sample columns (N,) by name (``beta_<m>``, ``eta_<m>``,
    # ``alpha_<m>``, ``aux_<m>``: model.diagnostics.per_sample_columns) and each modality's pooled
    # encoder levels (N, M, F), what single-modality probes read; None otherwise
    per_sample: dict[str, np.ndarray] | None = None
    encoded: np.ndarray | None = None

    def predicted(self, target: str) -> np.ndarray:
        return self.output.argmax(1) if target == "classification" else self.output

    def probabilities(self) -> np.ndarray:
        return torch.softmax(torch.from_numpy(self.output), dim=1).numpy()

    def columns(self, target: str, class_names: list[str]) -> tuple[list[str], list[list[Any]]]:
        """The columns ``prediction`` (class index or score) and, for classification,
        ``prob_<class>`` (6 decimals): (header, one row per sample)."""
        predicted = self.predicted(target)
        if target != "classification":
            return ["prediction"], [[float(v)] for v in predicted]
        rows = [[int(v), *(f"{p:.6f}" for p in row)] for v, row in zip(predicted, self.probabilities(), strict=True)]
        return ["prediction", *(f"prob_{c}" for c in class_names)], rows


@torch.no_grad()
def predict(
    model: nn.Module,
    split: Split,
    batch_size: int,
    device: str,
    present: Presence | None = None,
    transform: Callable[[Batch], Batch] | None = None,
    workers: int = 0,
    views: FrameViews | None = None,
    per_sample: bool = False,
) -> Predictions:
    """Evaluate ``model`` on ``split`` in order; ``transform`` may perturb each batch (noise),
    ``present`` mark modalities missing (see :func:`~clcr_cli.training.data.batches`).

    ``split`` is held in memory or streamed from the store (then read by ``workers`` loader
    processes). Outputs and losses stay on ``device`` until the end: one transfer, not one
    per batch. A split without targets has no loss (NaN), only outputs. ``views``: what the
    model sees of stored frames (``data.frame_views`` of the run's options). ``per_sample``
    also keeps the per-sample mechanism columns and pooled encoder levels
    (:attr:`Predictions.per_sample`, :attr:`Predictions.encoded`).
    """
    model.eval()
    outputs, level_w, modality_w = [], [], []
    columns: dict[str, list[Tensor]] = {}
    encoded: list[Tensor] = []
    names = list(getattr(getattr(model, "config", None), "modality_names", None) or split.modalities())
    sums: dict[str, Tensor] = {}
    n = 0
    stream = batches(
        split, batch_size, present=present, workers=workers, pin_memory=device.startswith("cuda"), views=views
    )
    for batch in stream:
        if transform is not None:
            batch = transform(batch)
        out = model(batch.to(device))
        b = len(out.logits)
        n += b
        outputs.append(out.logits.float())
        terms = out.terms if out.loss is None else {"loss": out.loss, **out.terms}
        for name, value in terms.items():
            weighted = value.double() * b
            sums[name] = sums[name] + weighted if name in sums else weighted
        if out.level_weights is not None:
            level_w.append(out.level_weights.float())
        if out.modality_weights is not None:
            modality_w.append(out.modality_weights.float())
        if per_sample:
            for name, value in per_sample_columns(out, names).items():
                columns.setdefault(name, []).append(value)
            if out.encoded is not None:
                encoded.append(out.encoded.float())
    means = dict(zip(sums, (torch.stack(list(sums.values())) / n).tolist(), strict=True))
    loss = means.pop("loss", math.nan)
    return Predictions(
        ids=split.ids,
        target=None if split.target is None else split.target.numpy(),
        output=torch.cat(outputs).cpu().numpy(),
        loss=loss,
        terms=means,
        level_weights=torch.cat(level_w).mean(0).cpu().numpy() if level_w else None,
        modality_weights=torch.cat(modality_w).mean(0).cpu().numpy() if modality_w else None,
        per_sample={k: torch.cat(v).cpu().numpy() for k, v in columns.items()} if per_sample else None,
        encoded=torch.cat(encoded).cpu().numpy() if encoded else None,
    )


def compute_metrics(pred: Predictions, target: str, num_classes: int) -> dict[str, Any]:
    if target == "classification":
        return classification_metrics(pred.target, pred.predicted(target), num_classes)
    return regression_metrics(pred.target, pred.predicted(target))


def save_weights(path: Path, state: dict[str, Tensor]) -> None:
    """A state dict as safetensors (never a pickled module), atomically; a full disk is one line."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp, writing(path):
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))


def save_trained(folder: Path, model: nn.Module, state: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """The selected weights (model.safetensors) and everything else as JSON (model.json)."""
    save_weights(folder / WEIGHTS_FILE, state)
    atomic_write_text(folder / META_FILE, json.dumps(meta, indent=2))


def _stats_shape(spec: ModalitySpec) -> tuple[int, ...]:
    """The shape of a modality's mean and std (``FeatureStats.of``): per level and
    dimension for BERT levels, per feature for sequences, per channel for frames."""
    if spec.kind == "tokens":
        return (1,)
    return (spec.num_levels_in, spec.dim) if spec.kind == "levels" else (spec.dim,)


def read_meta(meta_path: Path) -> tuple[ModelConfig, dict[str, Any], FeatureStats]:
    """(model config, meta, feature statistics) of a ``model.json``, every field checked --
    the model's sizes against ``ModelConfig.validate``'s bounds, the statistics against
    the modalities -- before anything is allocated; a bad field is a DataError naming it."""
    try:
        meta = json.loads(meta_path.read_text())
        config = ModelConfig.from_dict(meta["model_config"])
        config.validate()
    except (ValueError, KeyError, TypeError) as exc:  # a ModelConfigError is a ValueError
        raise DataError(meta_path, f"model_config: {type(exc).__name__}: {exc}") from None
    stats = meta.get("stats")
    if not isinstance(stats, dict) or set(stats) != set(config.modality_names):
        raise DataError(meta_path, f"stats: expected the statistics of {', '.join(config.modality_names)}")
    for spec in config.modalities:
        for name in ("mean", "std"):
            try:
                shape = np.asarray(stats[spec.name][name], dtype=np.float64).shape
            except (ValueError, TypeError, KeyError):
                shape = None
            if shape != _stats_shape(spec):
                raise DataError(meta_path, f"stats.{spec.name}.{name}: expected numbers of shape {_stats_shape(spec)}")
    return config, meta, FeatureStats.from_lists(stats)


def load_trained(
    folder: Path, device: str = "cpu", weights: str = WEIGHTS_FILE
) -> tuple[nn.Module, dict[str, Any], FeatureStats]:
    """Rebuild a trained model from its folder: (model in eval mode, meta, feature stats).
    ``model.json`` is checked first (:func:`read_meta`); weights (``weights``: the run's, or
    :data:`TEST_BEST_FILE`) that are not the model's are a DataError naming the file."""
    meta_path, weights_path = folder / META_FILE, folder / weights
    for p in (meta_path, weights_path):
        if not p.is_file():
            raise DataError(p, "missing: the train output is incomplete (run `clcr train` again)")
    config, meta, stats = read_meta(meta_path)
    model = build_model(config)
    try:
        model.load_state_dict(load_file(str(weights_path)))
    except (SafetensorError, RuntimeError) as exc:
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise DataError(weights_path, f"not the weights of the model in {META_FILE} ({reason})") from None
    model.to(device).eval()
    return model, meta, stats
