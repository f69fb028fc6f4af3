"""InterCAD: the inter-level collaborative aggregation domain, and its ``no-intercad`` ablation.

Inputs are per-level, per-modality summaries (``summarise``): masked mean pooling + LN of the
shared and private streams, ``s_l^(m)`` and ``p_l^(m)``. Paper equations and readings:

*Level weights.* ``w = softmax(MLP(.))`` over the L levels, one weight vector per sample,
common to all modalities (the paper's ``s-bar^(m) = sum_l w_l s_l^(m)`` has no m on w). The
MLP scores level l from ``c_l + a_l``: ``c_l`` the mean over present modalities of
``s_l^(m) (+) p_l^(m)`` and ``a_l`` a learned level anchor (the abstract's "learned anchors"
that synchronise semantic scales), which also tells the shared MLP which level it scores.
Then ``s-bar^(m) = sum_l w_l s_l^(m)`` and ``p-bar^(m) = sum_l w_l p_l^(m)``.

*Shared path (modality selection).* Global context ``g-bar`` = mean of ``s-bar^(m)`` over
present modalities; ``beta = softmax_m( (W_q g-bar) . (W_k s-bar^(m)) / sqrt(k_sh) )`` over
present modalities (scaled dot-product); ``z_sh = sum_m beta_m s-bar^(m)``. The values are the
summaries themselves so that beta reads directly as modality importance.

*Private path.* ``eta_m = sigmoid(w_p^T LN(W_p p-bar^(m)))`` and
``u_pr = (1/|M_present|) sum_m eta_m p-bar^(m)``; the average (rather than a sum) keeps the
scale of ``u_pr`` independent of how many modalities are present.

The task head then reads ``z_sh (+) u_pr``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from clcr_cli.model.attention import masked_mean, masked_softmax


class Summaries(nn.Module):
    """``LN(masked mean over time)`` of every stream: (B, L, M, k) from L x M (B, T, k)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, streams: list[list[Tensor]], masks: list[list[Tensor]]) -> Tensor:
        pooled = [
            torch.stack([masked_mean(x, m, 1) for x, m in zip(level, level_masks, strict=True)], 1)
            for level, level_masks in zip(streams, masks, strict=True)
        ]
        return self.norm(torch.stack(pooled, 1))


class InterCAD(nn.Module):
    """Level weights, modality selection and gated private aggregation (module docstring)."""

    def __init__(self, num_levels: int, shared_dim: int, private_dim: int, hidden: int) -> None:
        super().__init__()
        both = shared_dim + private_dim
        self.level_anchor = nn.Parameter(torch.randn(num_levels, both) * 0.02)
        self.level_score = nn.Sequential(
            nn.LayerNorm(both), nn.Linear(both, hidden), nn.GELU(), nn.Linear(hidden, 1)
        )
        self.context_query = nn.Linear(shared_dim, shared_dim)
        self.modality_key = nn.Linear(shared_dim, shared_dim)
        self.private_dim = private_dim
        if private_dim:
            self.gate = nn.Sequential(
                nn.Linear(private_dim, hidden), nn.LayerNorm(hidden), nn.Linear(hidden, 1)
            )

    def forward(
        self, shared: Tensor, private: Tensor | None, present: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """shared (B, L, M, k_sh), private (B, L, M, k_pr) or None, present (B, M) bool.

        Returns the fused representation (B, k_sh [+ k_pr]), w (B, L) and beta (B, M).
        """
        streams = shared if private is None else torch.cat([shared, private], -1)
        level_mask = present[:, None, :].expand(-1, streams.shape[1], -1)
        context = masked_mean(streams, level_mask, 2)  # c_l: (B, L, k)
        level_weights = torch.softmax(self.level_score(context + self.level_anchor).squeeze(-1), 1)
        shared_bar = torch.einsum("bl,blmk->bmk", level_weights, shared)  # s-bar^(m)
        global_context = masked_mean(shared_bar, present, 1)  # g-bar
        query = self.context_query(global_context)[:, None, :]
        keys = self.modality_key(shared_bar)
        logits = (query * keys).sum(-1) / math.sqrt(shared_bar.shape[-1])
        modality_weights = masked_softmax(logits, present, 1)  # beta
        fused = torch.einsum("bm,bmk->bk", modality_weights, shared_bar)  # z_sh
        if private is not None:
            private_bar = torch.einsum("bl,blmk->bmk", level_weights, private)  # p-bar^(m)
            eta = torch.sigmoid(self.gate(private_bar))  # (B, M, 1)
            u_private = masked_mean(eta * private_bar, present, 1)
            fused = torch.cat([fused, u_private], -1)
        return fused, level_weights, modality_weights


class MeanAggregation(nn.Module):
    """The ``no-intercad`` ablation: a plain mean over levels and present modalities."""

    def forward(
        self, shared: Tensor, private: Tensor | None, present: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        b, levels = shared.shape[:2]
        parts = [shared] if private is None else [shared, private]
        fused = torch.cat([masked_mean(x.mean(1), present, 1) for x in parts], -1)
        level_weights = shared.new_full((b, levels), 1.0 / levels)
        modality_weights = present.to(shared.dtype) / present.sum(1, keepdim=True).clamp(min=1)
        return fused, level_weights, modality_weights
