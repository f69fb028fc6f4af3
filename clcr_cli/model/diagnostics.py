"""What a trained CLCR does with its mechanisms, measured on data (not only that it runs).

``mechanism_diagnostics(model, batches)`` runs the model over some batches (in eval mode,
without gradients) and returns, as plain JSON-ready numbers:

- per level l: the distribution of the budget weights ``alpha`` over valid tokens (mean, share
  below 0.05 and above 0.95; overall and per modality), the learned participation rate
  ``rho_l`` and threshold ``theta_l``, and the scales ``gamma_{l,m}``;
- InterCAD's mean level weights ``w`` and modality weights ``beta``.

A budget that selects shows tokens near 0 and near 1; an inert one sits at ``alpha ~ r``.
Models without a budget (baselines, ``dense-budget``, ``no-intraced``) report what they have.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from clcr_cli.model.batch import Batch

LOW, HIGH = 0.05, 0.95


def _alpha_summary(values: list[Tensor]) -> dict[str, float]:
    alpha = torch.cat(values) if values else torch.zeros(0)
    if alpha.numel() == 0:
        return {"tokens": 0}
    return {
        "tokens": int(alpha.numel()),
        "mean": float(alpha.mean()),
        "below_0.05": float((alpha < LOW).float().mean()),
        "above_0.95": float((alpha > HIGH).float().mean()),
    }


@torch.no_grad()
def mechanism_diagnostics(model: nn.Module, batches: Iterable[Batch]) -> dict[str, Any]:
    """Budget, level-weight and modality-weight statistics of ``model`` over ``batches``."""
    model.eval()
    alphas: dict[tuple[int, str], list[Tensor]] = {}
    level_w, modality_w = [], []
    names: list[str] = []
    for batch in batches:
        out = model(batch)
        names = list(batch.inputs)
        if out.level_weights is not None:
            level_w.append(out.level_weights.float().cpu())
        if out.modality_weights is not None:
            modality_w.append(out.modality_weights.float().cpu())
        streams = out.streams
        if streams is None or streams.alpha is None:
            continue
        modality_mask = streams.layout.modality_mask  # (B, M, T)
        for level in range(streams.alpha.shape[1]):
            for i, m in enumerate(streams.layout.names):
                valid = streams.alpha[:, level][modality_mask[:, i]].float().cpu()
                alphas.setdefault((level, m), []).append(valid)
    result: dict[str, Any] = {"levels": []}
    budget = getattr(getattr(model, "intraced", None), "budget", None)
    levels = getattr(model, "num_slots", 0)
    for level in range(levels):
        entry: dict[str, Any] = {"level": level + 1}
        if budget is not None:
            entry["participation"] = float(budget.participation[level])
            entry["threshold"] = float(budget.threshold[level])
            scales = nn.functional.softplus(budget.scale[level]).tolist()
            entry["scale"] = dict(zip(names, scales, strict=True))
        per_modality = {m: alphas[(lv, m)] for lv, m in alphas if lv == level}
        if per_modality:
            entry["alpha"] = _alpha_summary([a for values in per_modality.values() for a in values])
            entry["alpha_by_modality"] = {m: _alpha_summary(v) for m, v in per_modality.items()}
        result["levels"].append(entry)
    if level_w:
        result["level_weights"] = torch.cat(level_w).mean(0).tolist()
    if modality_w:
        result["modality_weights"] = dict(
            zip(names, torch.cat(modality_w).mean(0).tolist(), strict=True)
        )
    return result
