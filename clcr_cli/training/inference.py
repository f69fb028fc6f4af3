"""Running a trained model over a split: predictions, losses and metrics.

Shared by ``train`` (validation each epoch), ``eval``, ``ablate`` and ``noise``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from clcr_cli.errors import DataError
from clcr_cli.metrics import classification_metrics, regression_metrics
from clcr_cli.model import ModelConfig, build_model
from clcr_cli.model.batch import Batch
from clcr_cli.training.data import FeatureStats, Split, batches

WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"


@dataclass
class Predictions:
    ids: list[str]
    target: np.ndarray  # (N,)
    output: np.ndarray  # (N, C) logits or (N,) regression prediction
    loss: float  # mean total loss
    terms: dict[str, float]  # mean of each loss term
    level_weights: np.ndarray | None  # (L,) mean over samples
    modality_weights: np.ndarray | None  # (M,) mean over samples

    def predicted(self, target: str) -> np.ndarray:
        return self.output.argmax(1) if target == "classification" else self.output

    def probabilities(self) -> np.ndarray:
        return torch.softmax(torch.from_numpy(self.output), dim=1).numpy()


@torch.no_grad()
def predict(
    model: nn.Module,
    split: Split,
    batch_size: int,
    device: str,
    present: dict[str, bool] | None = None,
    transform: Callable[[Batch], Batch] | None = None,
    workers: int = 0,
) -> Predictions:
    """Evaluate ``model`` on ``split`` in order; ``transform`` may perturb each batch (noise).

    ``split`` is held in memory or streamed from the store (then read by ``workers`` loader
    processes). Outputs and losses stay on ``device`` until the end: one transfer, not one
    per batch.
    """
    model.eval()
    outputs, level_w, modality_w = [], [], []
    sums: dict[str, Tensor] = {}
    n = 0
    stream = batches(
        split, batch_size, present=present, workers=workers, pin_memory=device.startswith("cuda")
    )
    for batch in stream:
        if transform is not None:
            batch = transform(batch)
        out = model(batch.to(device))
        b = len(batch.target)
        n += b
        outputs.append(out.logits.float())
        for name, value in {"loss": out.loss, **out.terms}.items():
            weighted = value.double() * b
            sums[name] = sums[name] + weighted if name in sums else weighted
        if out.level_weights is not None:
            level_w.append(out.level_weights.float())
        if out.modality_weights is not None:
            modality_w.append(out.modality_weights.float())
    means = dict(zip(sums, (torch.stack(list(sums.values())) / n).tolist(), strict=True))
    loss = means.pop("loss")
    return Predictions(
        ids=split.ids,
        target=split.target.numpy(),
        output=torch.cat(outputs).cpu().numpy(),
        loss=loss,
        terms=means,
        level_weights=torch.cat(level_w).mean(0).cpu().numpy() if level_w else None,
        modality_weights=torch.cat(modality_w).mean(0).cpu().numpy() if modality_w else None,
    )


def compute_metrics(pred: Predictions, target: str, num_classes: int) -> dict[str, Any]:
    if target == "classification":
        return classification_metrics(pred.target, pred.predicted(target), num_classes)
    return regression_metrics(pred.target, pred.predicted(target))


def save_trained(folder: Path, model: nn.Module, state: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Weights as safetensors (never a pickled module) and everything else as JSON."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(folder / WEIGHTS_FILE))
    (folder / META_FILE).write_text(json.dumps(meta, indent=2))


def load_trained(folder: Path, device: str = "cpu") -> tuple[nn.Module, dict[str, Any], FeatureStats]:
    """Rebuild a trained model from its folder: (model in eval mode, meta, feature stats)."""
    meta_path, weights_path = folder / META_FILE, folder / WEIGHTS_FILE
    for p in (meta_path, weights_path):
        if not p.is_file():
            raise DataError(p, "missing: the train output is incomplete (run `clcr train` again)")
    meta = json.loads(meta_path.read_text())
    model = build_model(ModelConfig.from_dict(meta["model_config"]))
    model.load_state_dict(load_file(str(weights_path)))
    model.to(device).eval()
    return model, meta, FeatureStats.from_lists(meta["stats"])
