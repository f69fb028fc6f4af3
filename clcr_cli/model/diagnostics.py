"""What a trained CLCR does with its mechanisms, measured on data (not only that it runs).

``mechanism_diagnostics(model, batches)`` runs the model over some batches (in eval mode,
without gradients) and returns, as plain JSON-ready numbers:

- per level l: the distribution of the budget weights ``alpha`` over valid tokens (mean, share
  below 0.05 and above 0.95; overall and per modality), the learned participation rate
  ``rho_l`` and threshold ``theta_l``, and the scales ``gamma_{l,m}``;
- InterCAD's mean level weights ``w`` and modality weights ``beta``.

A budget that selects shows tokens near 0 and near 1; an inert one sits at ``alpha ~ r``.
Models without a budget (baselines, ``dense-budget``, ``no-intraced``) report what they have.

``per_sample_columns(output, names)`` gives the same mechanisms per sample, for one batch:
``beta_<m>`` (modality selection, Eq. 7), ``eta_<m>`` (private gate, Eq. 8; 0 where m is
missing), ``alpha_<m>`` (the budget's mean ``alpha`` over m's valid tokens and all levels,
Eq. 4; NaN where m has none) and, where the model makes per-modality predictions (CLCR's
auxiliary heads, late fusion's votes), ``aux_<m>`` (that prediction: a class index, or the
value) and ``u_<m>`` (classification: its normalised entropy, heads.modality_uncertainty).
``clcr eval`` writes them beside predictions.csv.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from clcr_cli.model.batch import Batch, ModelOutput
from clcr_cli.model.heads import modality_uncertainty
from clcr_cli.model.intraced import LevelStreams

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


def per_sample_alpha(streams: LevelStreams | None) -> Tensor | None:
    """(B, M): the budget's mean ``alpha`` over each modality's valid tokens and all levels
    (NaN where a modality has no valid token); None without a budget."""
    if streams is None or streams.alpha is None:
        return None
    mask = streams.layout.modality_mask.to(streams.alpha.dtype)  # (B, M, T)
    total = torch.einsum("blt,bmt->bm", streams.alpha, mask)
    count = mask.sum(-1) * streams.alpha.shape[1]
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))


@torch.no_grad()
def per_sample_columns(output: ModelOutput, names: list[str]) -> dict[str, Tensor]:
    """The per-sample mechanism columns of one batch's ``output`` (module docstring), each
    (B,), for the modalities ``names`` in model order; what the model lacks is left out."""
    columns: dict[str, Tensor] = {}
    alpha = per_sample_alpha(output.streams)
    for prefix, values in (("beta", output.modality_weights), ("eta", output.private_gates), ("alpha", alpha)):
        if values is not None:
            for i, m in enumerate(names):
                columns[f"{prefix}_{m}"] = values[:, i].float()
    logits = output.modality_logits
    if logits is not None:
        classification = logits.dim() == 3
        if classification:
            present = torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device)
            uncertainty = modality_uncertainty(logits, present, regression=False)
        for i, m in enumerate(names):
            columns[f"aux_{m}"] = logits[:, i].argmax(-1).float() if classification else logits[:, i].float()
            if classification:
                columns[f"u_{m}"] = uncertainty[:, i]
    return columns
