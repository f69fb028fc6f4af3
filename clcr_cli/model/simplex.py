"""Exact, batched, mask-aware Euclidean projection onto the capped simplex.

IntraCED's token budget (Eq. 4: ``alpha = Proj_{Delta(B_l)}(alpha_tilde)``) projects the
activation scores of one modality's tokens onto the capped ("truncated") simplex

    Delta(B) = { a in R^T : 0 <= a_t <= 1,  sum_t a_t = B },   0 <= B <= T_valid.

The minimiser of ``||a - y||^2`` over Delta(B) is ``a_t = clip(y_t - tau, 0, 1)`` where
``tau`` solves ``g(tau) = sum_t clip(y_t - tau, 0, 1) = B`` (Wang & Lu, 2015). ``g`` is
continuous, piecewise linear and non-increasing with breakpoints ``{y_t, y_t - 1}``. We sort
the 2T breakpoints, evaluate ``g`` at all of them in O(T log T) with prefix sums, locate the
segment that brackets ``B`` and solve the linear equation on that segment from its active
set -- exact up to floating-point rounding, ties included, no iteration count to tune.

Masked (padded or missing) steps are excluded from the problem: they receive ``a_t = 0``
and no gradient, and ``B`` is clamped to ``[0, number of valid steps]``.

Gradient: on the free set ``F = {t : 0 < a_t < 1}`` the projection is locally affine,
``da_F/dy_F = I - 11^T/|F|`` and ``da_F/dB = 1/|F|``; coordinates at 0 or 1 are locally
constant. :class:`CappedSimplexProjection` implements this analytic Jacobian-vector product.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _relu_sum(sorted_desc: Tensor, prefix: Tensor, points: Tensor) -> Tensor:
    """``S(c) = sum_t max(y_t - c, 0)`` for each row's query points ``c``.

    ``sorted_desc`` (N, T) holds each row's values in descending order, ``prefix`` (N, T+1)
    their prefix sums; ``points`` is (N, P).
    """
    # number of values strictly greater than c: searchsorted on the ascending negation
    count = torch.searchsorted((-sorted_desc).contiguous(), (-points).contiguous(), right=False)
    return prefix.gather(1, count) - count.to(points.dtype) * points


def _solve_tau(y: Tensor, budget: Tensor, mask: Tensor) -> Tensor:
    """The threshold ``tau`` (N,) of the projection of each row of ``y`` onto Delta(budget)."""
    # masked steps sit 2 below every valid step, so they never enter max(y - c, 0) for the
    # breakpoints that matter (all >= the row's lowest valid value - 1)
    low = torch.where(mask, y, torch.inf).amin().clamp(max=0) - 2
    y_filled = torch.where(mask, y, low)
    steps = y.shape[1]
    sorted_desc = y_filled.sort(1, descending=True).values
    prefix = torch.nn.functional.pad(sorted_desc.cumsum(1), (1, 0))
    breakpoints = torch.cat([y_filled, y_filled - 1], 1).sort(1).values  # ascending
    relu = _relu_sum(sorted_desc, prefix, torch.cat([breakpoints, breakpoints + 1], 1))
    g = relu[:, : 2 * steps] - relu[:, 2 * steps :]  # g(c) = sum_t clip(y_t - c, 0, 1)
    # g is non-increasing along the ascending breakpoints: last k with g(c_k) >= B
    k = ((g >= budget[:, None]).sum(1) - 1).clamp(min=0)
    ends = breakpoints.gather(1, torch.stack([k, (k + 1).clamp(max=2 * steps - 1)], 1))
    mid = ends.mean(1)
    # active set inside the segment (lo, hi): free steps have 0 < y - mid < 1
    shifted = y - mid[:, None]
    free = mask & (shifted > 0) & (shifted < 1)
    n_free = free.sum(1)
    n_upper = (mask & (shifted >= 1)).sum(1)
    tau = ((y * free).sum(1) + n_upper.to(y.dtype) - budget) / n_free.clamp(min=1)
    # an empty free set means g is flat on the segment: every tau in it is a solution
    return torch.where(n_free > 0, tau, mid)


class CappedSimplexProjection(torch.autograd.Function):
    """``a = Proj_{Delta(B)}(y)`` row-wise, with the analytic Jacobian in ``backward``."""

    @staticmethod
    def forward(ctx, y: Tensor, budget: Tensor, mask: Tensor) -> Tensor:
        n_valid = mask.sum(1).to(y.dtype)
        budget = torch.minimum(budget.clamp(min=0), n_valid)
        tau = _solve_tau(y, budget, mask)
        a = ((y - tau[:, None]).clamp(0, 1)) * mask
        free = mask & (a > 0) & (a < 1)
        ctx.save_for_backward(free)
        return a

    @staticmethod
    def backward(ctx, grad_a: Tensor):
        (free,) = ctx.saved_tensors
        n_free = free.sum(1, keepdim=True).clamp(min=1).to(grad_a.dtype)
        grad_free = grad_a * free
        mean_free = grad_free.sum(1, keepdim=True) / n_free
        grad_y = (grad_a - mean_free) * free
        grad_budget = (grad_free.sum(1, keepdim=True) / n_free).squeeze(1)
        return grad_y, grad_budget, None


def capped_simplex_projection(y: Tensor, budget: Tensor, mask: Tensor | None = None) -> Tensor:
    """Project each row of ``y`` (..., T) onto ``{a : 0 <= a <= 1, sum a = budget}``.

    ``budget`` has ``y``'s leading shape (or broadcasts to it); ``mask`` (..., T) bool marks
    the valid steps (default: all). Masked steps get 0; ``budget`` is clamped to
    ``[0, number of valid steps]``. Differentiable in ``y`` and ``budget``.
    """
    if mask is None:
        mask = torch.ones_like(y, dtype=torch.bool)
    lead, steps = y.shape[:-1], y.shape[-1]
    if y.dtype in (torch.float16, torch.bfloat16):  # under autocast: solve exactly in float32
        y = y.float()
    budget = torch.as_tensor(budget, dtype=y.dtype, device=y.device).expand(lead)
    if steps == 0:  # nothing to weigh
        return y.clone()
    rows = math.prod(lead)
    flat = CappedSimplexProjection.apply(
        y.reshape(rows, steps), budget.reshape(rows), mask.reshape(rows, steps)
    )
    return flat.reshape(y.shape)
