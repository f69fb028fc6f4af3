"""Task loss and CLCR's regularisers: Eq. (10), ``L_all = L_task + lambda_intra L_Intra +
lambda_inter L_Inter``, assembled by :func:`total_loss`.

The paper names the regularisers but gives no formula; the readings chosen here:

*Whitened cross-correlation* ``rho(X, Y)`` between two streams observed on the same N
samples (rows). Two whitenings, switchable (``whitening`` in ModelConfig):

- ``"standardise"`` (default): z-score every column over the N rows (Barlow-Twins-style
  batch whitening), ``C = X^T Y / N``, ``rho = mean_ij C_ij^2``;
- ``"full"``: whiten each stream with its own (ridge-regularised) covariance,
  ``rho = ||Sigma_xx^-1/2 Sigma_xy Sigma_yy^-1/2||_F^2 / min(a, b)``, the mean squared
  canonical correlation (invariant to any invertible re-mixing of either stream; computed
  with Cholesky factors, which give the same Frobenius norm as ZCA and stable gradients).

Both lie in [0, 1], are 0 for uncorrelated streams and 1 for identical standardised ones.

*L_Intra* (per level, mean over all pairs): private vs private of every two modalities,
on per-sample pooled private streams over the samples where both are present (the
modalities' time axes are not aligned, samples are); and private vs shared of one modality,
on its valid tokens (the two streams are two views of the same tokens).

*L_Inter* = ``L_pr + L_sp + L_mix``:

- ``L_pr``: rho between the private streams of every two levels of one modality (tokens:
  all levels of a modality share its time axis), averaged;
- ``L_sp``: rho between the shared stream of level l and the private stream of level l' != l
  of one modality (the same-level pair is L_Intra's), averaged;
- ``L_mix``: co-activation of incompatible level pairs in InterCAD's level weights,
  ``mean_b sum_{|l - l'| >= 2} w_l w_l'``: levels more than one step apart (shallow with
  deep) are the semantically incompatible pairs; adjacent levels may co-activate freely.

Each is exactly 0 where it has no pair to compare (e.g. L = 1, a single present modality).
Token-level terms look at most at ``max_tokens`` (sample, step) positions of each modality,
evenly spaced, to bound cost. The correlations of one kind are batched over levels (or level
pairs); :func:`cross_correlation`'s row weights select each call's rows (a modality's valid
tokens, the samples where two modalities are present).
"""

from __future__ import annotations

from itertools import combinations, permutations
from typing import Literal

import torch
from torch import Tensor, nn

from clcr_cli.model.intraced import LevelStreams
from clcr_cli.model.tokens import pool_by_modality

Whitening = Literal["standardise", "full"]


def task_loss(prediction: Tensor, target: Tensor, task: str, regression_loss: str) -> Tensor:
    """Cross-entropy for classification; L1 or MSE for regression."""
    if task == "classification":
        return nn.functional.cross_entropy(prediction, target.long())
    target = target.to(prediction.dtype)
    if regression_loss == "l1":
        return nn.functional.l1_loss(prediction, target)
    return nn.functional.mse_loss(prediction, target)


def total_loss(task: Tensor, weighted: dict[str, tuple[float, Tensor]]) -> Tensor:
    """Eq. (10): ``L_all = L_task + lambda_intra L_Intra + lambda_inter L_Inter``, for CLCR and
    every baseline alike: ``weighted`` maps each regulariser's name to (lambda, value)
    (CLCR: ``intra`` and ``inter = L_pr + L_sp + L_mix``; MISA: its three losses as ``intra``)."""
    return task + sum((weight * value for weight, value in weighted.values()), task.new_zeros(()))


def row_weights(weights: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(each selected row's share ``w / sum(w)`` as (..., N, 1), whether two or more rows are
    selected (...)) for 0/1 row weights (..., N)."""
    w = weights.to(dtype)[..., None]
    n = w.sum(-2, keepdim=True)
    return w / n.clamp(min=1), n[..., 0, 0] >= 2


def whiten(x: Tensor, share: Tensor, whitening: Whitening, eps: float = 1e-5) -> Tensor:
    """Centre X (..., N, a) over its selected rows (``share``, see :func:`row_weights`) and
    whiten it: ``standardise`` scales every column to unit variance; ``full`` multiplies by
    ``L^-T``, the inverse transposed Cholesky factor of its (ridge-regularised) covariance,
    so that the whitened columns have identity covariance."""
    x = x - (x * share).sum(-2, keepdim=True)
    if whitening == "standardise":
        # eps inside the root: a constant column (zero variance) must not give an inf gradient
        return x / ((x.pow(2) * share).sum(-2, keepdim=True) + eps * eps).sqrt()
    cov = (x * share).transpose(-1, -2) @ x
    ridge = eps * (cov.diagonal(dim1=-2, dim2=-1).mean(-1) + eps)[..., None, None]
    eye = torch.eye(cov.shape[-1], dtype=x.dtype, device=x.device)
    factor = torch.linalg.cholesky(cov + ridge * eye)
    return torch.linalg.solve_triangular(factor.transpose(-1, -2), x, upper=True, left=False)


def correlation_from_cross(cross: Tensor, whitening: Whitening) -> Tensor:
    """rho from the cross-covariance (..., a, b) of two whitened streams: its mean squared
    entry (the mean squared canonical correlation, ``sum / min(a, b)``, for ``full``)."""
    if whitening == "standardise":
        return cross.pow(2).mean((-1, -2))
    return cross.pow(2).sum((-1, -2)) / min(cross.shape[-2:])


def whitened_correlation(x: Tensor, y: Tensor, share: Tensor, whitening: Whitening) -> Tensor:
    """rho of two whitened streams (..., N, a) and (..., N, b) on the same rows."""
    return correlation_from_cross((x * share).transpose(-1, -2) @ y, whitening)


def level_pair_correlations(x: Tensor, y: Tensor, share: Tensor, whitening: Whitening) -> Tensor:
    """rho(x_i, y_j) for every pair of levels of whitened streams x (L, N, a), y (L, N, b):
    (L, L), from one (L a) x (L b) product."""
    levels, rows, a = x.shape
    b = y.shape[-1]
    flat_x = (x * share).transpose(0, 1).reshape(rows, levels * a)
    flat_y = y.transpose(0, 1).reshape(rows, levels * b)
    cross = (flat_x.T @ flat_y).view(levels, a, levels, b).transpose(1, 2)
    return correlation_from_cross(cross, whitening)


def cross_correlation(
    x: Tensor,
    y: Tensor,
    whitening: Whitening = "standardise",
    weights: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """rho(X, Y) in [0, 1] for X (..., N, a) and Y (..., N, b) observed on the same N rows.

    Batched over the leading dimensions (broadcast). ``weights`` (..., N), 0 or 1, selects the
    rows that count (default: all): the statistics are those of the selected rows alone, so
    one call serves many row sets. Fewer than two selected rows give 0.
    """
    if weights is None:
        weights = x.new_ones(x.shape[-2])
    share, enough = row_weights(weights, x.dtype)
    rho = whitened_correlation(
        whiten(x, share, whitening, eps), whiten(y, share, whitening, eps), share, whitening
    )
    return torch.where(enough, rho, torch.zeros_like(rho))


def modality_rows(streams: LevelStreams, max_tokens: int) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per modality, its token rows for the token-level regularisers: (shared (L, N, k_sh),
    private (L, N, k_pr), weights (N,)) over the flattened (sample, step) positions of its
    slice of the joint axis (at most ``max_tokens`` of them, evenly spaced); ``weights`` is 1
    on its valid tokens."""
    rows = []
    for span in streams.layout.slices:
        shared = streams.shared[:, :, span].transpose(0, 1).flatten(1, 2)  # (L, B T_m, k)
        private = streams.private[:, :, span].transpose(0, 1).flatten(1, 2)
        weights = streams.layout.mask[:, span].flatten()
        if weights.shape[0] > max_tokens:
            keep = torch.linspace(0, weights.shape[0] - 1, max_tokens, device=weights.device).long()
            shared, private, weights = shared[:, keep], private[:, keep], weights[keep]
        rows.append((shared, private, weights))
    return rows


def level_pairs(levels: int, ordered: bool, device: torch.device) -> tuple[Tensor, Tensor]:
    """Index vectors (i, j) of every pair of distinct levels: i < j, or every order."""
    pairs = permutations(range(levels), 2) if ordered else combinations(range(levels), 2)
    i, j = torch.tensor(list(pairs), dtype=torch.long, device=device).view(-1, 2).T
    return i, j


def token_correlations(
    streams: LevelStreams, whitening: Whitening, max_tokens: int
) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """Per modality, on its valid tokens: rho(private_l, shared_l) per level (L_Intra's
    part), rho(private_i, private_j) per level pair i < j (L_pr's) and rho(shared_i,
    private_j) per ordered pair i != j (L_sp's).

    Each stream is whitened once; one product gives the cross-covariances of every pair of
    levels (L x L blocks), whose diagonal and off-diagonal entries are the terms above.
    """
    levels = streams.shared.shape[1]
    upper = torch.ones(levels, levels, dtype=torch.bool, device=streams.shared.device)
    off_diagonal = ~torch.eye(levels, dtype=torch.bool, device=upper.device)
    upper = upper.triu(1)
    within, redundancy, leakage = [], [], []
    for shared, private, weights in modality_rows(streams, max_tokens):
        share, enough = row_weights(weights, shared.dtype)
        shared, private = whiten(shared, share, whitening), whiten(private, share, whitening)
        shared_private = level_pair_correlations(shared, private, share, whitening)
        private_private = level_pair_correlations(private, private, share, whitening)
        within.append(shared_private.diagonal() * enough)
        redundancy.append(private_private[upper] * enough)
        leakage.append(shared_private[off_diagonal] * enough)
    return within, redundancy, leakage


def stream_regularisers(
    streams: LevelStreams, whitening: Whitening, max_tokens: int
) -> tuple[Tensor, Tensor, Tensor]:
    """(L_Intra, L_pr, L_sp) of the exchange's streams (module docstring); all 0 without a
    shared/private split, L_pr and L_sp 0 with a single level.

    L_Intra is the mean over levels of (every pair of modalities, on the per-sample pooled
    private streams of the samples where both are present) and (every modality, its private
    against its shared stream on its valid tokens); L_pr and L_sp are means over modalities
    and level pairs.
    """
    zero = streams.shared.new_zeros(())
    if streams.private is None:
        return zero, zero, zero
    layout = streams.layout
    pooled = pool_by_modality(streams.private, layout).permute(1, 2, 0, 3)  # (L, M, B, k)
    a, b = level_pairs(len(layout.names), False, pooled.device)  # pairs of modalities
    both = layout.present.index_select(1, a) & layout.present.index_select(1, b)  # (B, P)
    across = cross_correlation(
        pooled.index_select(1, a), pooled.index_select(1, b), whitening, weights=both.T
    )
    within, redundancy, leakage = token_correlations(streams, whitening, max_tokens)
    intra = torch.cat([across.flatten(), *within]).mean()
    if streams.shared.shape[1] < 2:
        return intra, zero, zero
    return intra, torch.cat(redundancy).mean(), torch.cat(leakage).mean()


def level_mix_penalty(level_weights: Tensor) -> Tensor:
    """L_mix = mean_b sum_{|l - l'| >= 2} w_l w_l' (0 for L <= 2)."""
    levels = level_weights.shape[1]
    index = torch.arange(levels, device=level_weights.device)
    incompatible = ((index[:, None] - index[None, :]).abs() >= 2).triu().to(level_weights.dtype)
    return torch.einsum("bi,ij,bj->b", level_weights, incompatible, level_weights).mean()
