"""Task loss and CLCR's regularisers: ``L_all = L_task + lambda_intra L_Intra + lambda_inter L_Inter``.

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
Token-level terms use at most ``max_tokens`` valid tokens, evenly spaced, to bound cost.
"""

from __future__ import annotations

from itertools import combinations, permutations
from typing import Literal

import torch
from torch import Tensor, nn

from clcr_cli.model.attention import masked_mean
from clcr_cli.model.intraced import LevelStreams

Whitening = Literal["standardise", "full"]


def task_loss(prediction: Tensor, target: Tensor, task: str, regression_loss: str) -> Tensor:
    """Cross-entropy for classification; L1 or MSE for regression."""
    if task == "classification":
        return nn.functional.cross_entropy(prediction, target.long())
    target = target.to(prediction.dtype)
    if regression_loss == "l1":
        return nn.functional.l1_loss(prediction, target)
    return nn.functional.mse_loss(prediction, target)


def cross_correlation(
    x: Tensor, y: Tensor, whitening: Whitening = "standardise", eps: float = 1e-5
) -> Tensor:
    """rho(X, Y) in [0, 1] for X (N, a) and Y (N, b) observed on the same N rows."""
    n = x.shape[0]
    if n < 2:
        return x.new_zeros(())
    x = x - x.mean(0)
    y = y - y.mean(0)
    if whitening == "standardise":
        # eps inside the root: a constant column (zero variance) must not give an inf gradient
        x = x / (x.pow(2).mean(0) + eps * eps).sqrt()
        y = y / (y.pow(2).mean(0) + eps * eps).sqrt()
        return (x.T @ y / n).pow(2).mean()

    def whitener(z: Tensor) -> Tensor:
        cov = z.T @ z / n
        ridge = eps * (cov.diagonal().mean() + eps)
        return torch.linalg.cholesky(
            cov + ridge * torch.eye(cov.shape[0], dtype=z.dtype, device=z.device)
        )

    lx, ly = whitener(x), whitener(y)
    cross = x.T @ y / n
    whitened = torch.linalg.solve_triangular(lx, cross, upper=False)
    whitened = torch.linalg.solve_triangular(ly, whitened.T, upper=False)
    return whitened.pow(2).sum() / min(x.shape[1], y.shape[1])


def valid_tokens(x: Tensor, mask: Tensor, max_tokens: int) -> Tensor:
    """The valid rows of x (B, T, k) as (N, k), at most ``max_tokens`` of them, evenly spaced."""
    rows = x[mask]
    if rows.shape[0] > max_tokens:
        rows = rows[torch.linspace(0, rows.shape[0] - 1, max_tokens, device=x.device).long()]
    return rows


def _mean(terms: list[Tensor], like: Tensor) -> Tensor:
    return torch.stack(terms).mean() if terms else like.new_zeros(())


def intra_regulariser(
    levels: list[LevelStreams], present: dict[str, Tensor], whitening: Whitening, max_tokens: int
) -> Tensor:
    """L_Intra: private-private across modalities, private-shared within a modality."""
    like = next(iter(present.values())).float()
    terms = []
    for level in levels:
        if level.private is None:
            continue
        names = list(level.private)
        pooled = {m: masked_mean(level.private[m], level.mask[m], 1) for m in names}
        for a, b in combinations(names, 2):
            both = present[a] & present[b]
            terms.append(cross_correlation(pooled[a][both], pooled[b][both], whitening))
        for m in names:
            mask = level.mask[m]
            terms.append(
                cross_correlation(
                    valid_tokens(level.private[m], mask, max_tokens),
                    valid_tokens(level.shared[m], mask, max_tokens),
                    whitening,
                )
            )
    return _mean(terms, like)


def inter_regularisers(
    levels: list[LevelStreams], whitening: Whitening, max_tokens: int
) -> tuple[Tensor, Tensor]:
    """(L_pr, L_sp): cross-level private redundancy and cross-level shared-private leakage."""
    like = next(iter(levels[0].mask.values())).float()
    if levels[0].private is None:
        return like.new_zeros(()), like.new_zeros(())
    redundancy, leakage = [], []
    for m, mask in levels[0].mask.items():
        private = [valid_tokens(level.private[m], mask, max_tokens) for level in levels]
        shared = [valid_tokens(level.shared[m], mask, max_tokens) for level in levels]
        for i, j in combinations(range(len(levels)), 2):
            redundancy.append(cross_correlation(private[i], private[j], whitening))
        for i, j in permutations(range(len(levels)), 2):
            leakage.append(cross_correlation(shared[i], private[j], whitening))
    return _mean(redundancy, like), _mean(leakage, like)


def level_mix_penalty(level_weights: Tensor) -> Tensor:
    """L_mix = mean_b sum_{|l - l'| >= 2} w_l w_l' (0 for L <= 2)."""
    levels = level_weights.shape[1]
    index = torch.arange(levels, device=level_weights.device)
    incompatible = ((index[:, None] - index[None, :]).abs() >= 2).triu().to(level_weights.dtype)
    return torch.einsum("bi,ij,bj->b", level_weights, incompatible, level_weights).mean()
