"""Results broken down by what each sample holds: per corruption group, the modality selection's
AUC for a ruined modality, and single-modality probes.

Pure functions of arrays and dicts (the one reader, :func:`read_groups`, reads a manifest's
column). ``clcr eval`` calls :func:`breakdown` where the run's manifest has a ``corruption``
column (the fsdd-robust task: ``none``, or the name of the ruined modality); a paired
comparison over seeds is ``metrics.paired_difference``.

- **Per group** (:func:`group_summary`): for every value of the column, the number of
  samples, the accuracy (classification; regression: MAE) and the mean of every per-sample
  column (``beta_<m>``, ``eta_<m>``, ``alpha_<m>``, ... of ``model.diagnostics``).
- **Selection AUC** (:func:`selection_auc`): for each modality m, how well a low ``beta_m``
  singles out the samples whose m is ruined. ``auc``: the ruined-m samples against those
  where another modality is ruined (1: beta_m is lower on every ruined-m sample than on every
  sample where m is the intact one; 0.5: chance); ``auc_vs_rest``: against all other samples,
  the clean ones included. Mann-Whitney, ties counted half.
- **Single-modality probes** (:func:`fit_probe`, :func:`probe_predict`): a linear readout
  of one modality's pooled encoder levels (``Predictions.encoded``), fitted on the train
  split (multinomial logistic regression, L2, full-batch L-BFGS; regression: ridge) and
  scored on the evaluated one, overall and per group: which modality is right where.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

CLEAN = "none"  # the corruption value of an untouched sample
GROUP_COLUMN = "corruption"


def read_groups(manifest: Path, column: str = GROUP_COLUMN) -> dict[str, str] | None:
    """id -> the value of ``column`` in a manifest CSV; None when it has no such column."""
    with Path(manifest).open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if column not in (reader.fieldnames or []) or "id" not in (reader.fieldnames or []):
            return None
        return {row["id"]: row[column] for row in reader}


def _score(labels: np.ndarray, predicted: np.ndarray, classification: bool) -> float:
    if len(labels) == 0:
        return math.nan
    if classification:
        return float(np.mean(labels == predicted))
    return float(np.mean(np.abs(labels - predicted)))


def group_summary(
    ids: Sequence[str],
    labels: np.ndarray,
    predicted: np.ndarray,
    groups: Mapping[str, str],
    columns: Mapping[str, np.ndarray] | None = None,
    classification: bool = True,
) -> dict[str, dict[str, float]]:
    """Per group (and ``all``): ``n``, ``acc`` (or ``mae``) and the mean of every column
    (NaNs ignored). Samples absent from ``groups`` count in ``all`` only."""
    metric = "acc" if classification else "mae"
    names = np.array([groups.get(i, "") for i in ids])
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    out: dict[str, dict[str, float]] = {}
    for group in ["all", *sorted(set(names) - {""})]:
        keep = np.ones(len(names), bool) if group == "all" else names == group
        entry: dict[str, float] = {"n": int(keep.sum()), metric: _score(labels[keep], predicted[keep], classification)}
        for name, values in (columns or {}).items():
            chosen = np.asarray(values, dtype=np.float64)[keep]
            chosen = chosen[~np.isnan(chosen)]
            entry[name] = float(chosen.mean()) if len(chosen) else math.nan
        out[group] = entry
    return out


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + P(tie) / 2; NaN if either is empty."""
    positive, negative = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if len(positive) == 0 or len(negative) == 0:
        return math.nan
    greater = (positive[:, None] > negative[None, :]).sum()
    ties = (positive[:, None] == negative[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(positive) * len(negative)))


def selection_auc(
    ids: Sequence[str], beta: Mapping[str, np.ndarray], groups: Mapping[str, str]
) -> dict[str, dict[str, float]]:
    """Per modality m with ruined samples: ``auc`` and ``auc_vs_rest`` of ``-beta_m`` for
    "m is ruined" (module docstring), and ``mean`` over those modalities of each."""
    names = np.array([groups.get(i, "") for i in ids])
    ruined_any = np.isin(names, list(beta))
    out: dict[str, dict[str, float]] = {}
    for m, values in beta.items():
        score = -np.asarray(values, np.float64)
        ruined = names == m
        if not ruined.any():
            continue
        out[m] = {
            "n": int(ruined.sum()),
            "auc": auc(score[ruined], score[ruined_any & ~ruined]),
            "auc_vs_rest": auc(score[ruined], score[~ruined & (names != "")]),
        }
    if out:
        out["mean"] = {k: float(np.nanmean([v[k] for v in out.values()])) for k in ("auc", "auc_vs_rest")}
    return out


def fit_probe(
    x: np.ndarray, y: np.ndarray, classification: bool, num_classes: int, l2: float = 1e-3, steps: int = 100
) -> dict[str, np.ndarray]:
    """A linear probe on features x (N, F): standardised with the fitting rows' statistics,
    then multinomial logistic regression (mean cross-entropy + ``l2 * ||W||^2``, full-batch
    L-BFGS, ``steps`` iterations, deterministic) or, for regression, ridge (closed form)."""
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp(min=1e-6)
    z = torch.cat([(x - mean) / std, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    if not classification:
        target = torch.as_tensor(np.asarray(y), dtype=x.dtype)
        eye = torch.eye(z.shape[1], dtype=x.dtype)
        eye[-1, -1] = 0  # no penalty on the bias
        weight = torch.linalg.solve(z.T @ z + l2 * len(z) * eye, z.T @ target)[:, None]
    else:
        target = torch.as_tensor(np.asarray(y), dtype=torch.long)
        weight = torch.zeros(z.shape[1], num_classes, dtype=x.dtype, requires_grad=True)
        optimiser = torch.optim.LBFGS([weight], max_iter=steps, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(z @ weight, target) + l2 * weight[:-1].pow(2).sum()
            loss.backward()
            return loss

        optimiser.step(closure)
        weight = weight.detach()
    return {"mean": mean.numpy(), "std": std.numpy(), "weight": weight.numpy()}


def probe_predict(probe: Mapping[str, np.ndarray], x: np.ndarray, classification: bool) -> np.ndarray:
    """The probe's prediction for features x (N, F): class indices or values (N,)."""
    z = (np.asarray(x, np.float64) - probe["mean"]) / probe["std"]
    out = np.concatenate([z, np.ones((len(z), 1))], 1) @ probe["weight"]
    return out.argmax(1) if classification else out[:, 0]


def probe_columns(
    train_x: np.ndarray,
    train_y: np.ndarray,
    x: np.ndarray,
    names: Sequence[str],
    classification: bool,
    num_classes: int,
) -> dict[str, np.ndarray]:
    """``probe_<m>``: each modality's probe prediction on x (N, M, F), fitted on the
    train features (N', M, F) and targets."""
    out = {}
    for i, m in enumerate(names):
        probe = fit_probe(train_x[:, i], train_y, classification, num_classes)
        out[f"probe_{m}"] = probe_predict(probe, x[:, i], classification)
    return out


def breakdown(
    ids: Sequence[str],
    labels: np.ndarray,
    predicted: np.ndarray,
    groups: Mapping[str, str],
    columns: Mapping[str, np.ndarray],
    names: Sequence[str],
    classification: bool = True,
) -> dict[str, Any]:
    """The breakdown ``clcr eval`` writes into metrics.json: ``groups`` (:func:`group_summary`
    of the per-sample columns), ``selection_auc`` (:func:`selection_auc` of the ``beta_<m>``
    columns, where the model has them) and, per column ``probe_<m>`` or ``aux_<m>``, its
    score per group (``single_modality``: which modality is right where)."""
    mechanism = {k: v for k, v in columns.items() if not k.startswith(("probe_", "aux_"))}
    result: dict[str, Any] = {
        "groups": group_summary(ids, labels, predicted, groups, mechanism, classification)
    }
    beta = {m: columns[f"beta_{m}"] for m in names if f"beta_{m}" in columns}
    if beta:
        result["selection_auc"] = selection_auc(ids, beta, groups)
    metric = "acc" if classification else "mae"
    single = {}
    for name in sorted(k for k in columns if k.startswith(("probe_", "aux_"))):
        summary = group_summary(ids, labels, columns[name], groups, None, classification)
        single[name] = {group: entry[metric] for group, entry in summary.items()}
    if single:
        result["single_modality"] = single
    return result
