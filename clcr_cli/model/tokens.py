"""The joint token axis: every modality's steps side by side, so one tensor holds them all.

The encoders give each modality m its levels as one tensor ``(B, L, T_m, d)``. CLCR's
per-level, per-modality work (bases, budget, exchange, summaries, regularisers) runs on
their concatenation along time, ``(B, L, T, d)`` with ``T = sum_m T_m``, as a handful of
batched operations instead of a loop over levels and modalities. :class:`TokenLayout`
records where each modality sits on that axis and which tokens are valid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class TokenLayout:
    """Where each modality's tokens sit on the joint axis, and which of them are valid."""

    names: list[str]  # the M modalities, in order
    slices: list[slice]  # positions of modality m on the joint axis (contiguous)
    segment: Tensor  # (T,) long: the modality of each position
    mask: Tensor  # (B, T) bool: valid steps of present modalities
    present: Tensor  # (B, M) bool

    @property
    def modality_mask(self) -> Tensor:
        """(B, M, T) bool: True where position t is a valid token of modality m."""
        index = torch.arange(len(self.names), device=self.segment.device)
        return (self.segment[None, None, :] == index[None, :, None]) & self.mask[:, None, :]

    def modality_counts(self) -> Tensor:
        """(B, M): valid tokens of each modality (0 where it is missing)."""
        return self.modality_mask.sum(-1)


def join_modalities(
    levels: dict[str, Tensor], masks: dict[str, Tensor], present: dict[str, Tensor]
) -> tuple[Tensor, TokenLayout]:
    """Concatenate per-modality ``(B, L, T_m, k)`` along time: ``(B, L, T, k)`` and its layout."""
    names = list(levels)
    slices, start = [], 0
    for m in names:
        steps = levels[m].shape[2]
        slices.append(slice(start, start + steps))
        start += steps
    device = levels[names[0]].device
    segment = torch.cat(
        [torch.full((levels[m].shape[2],), i, dtype=torch.long, device=device) for i, m in enumerate(names)]
    )
    layout = TokenLayout(
        names=names,
        slices=slices,
        segment=segment,
        mask=torch.cat([masks[m] for m in names], 1),
        present=torch.stack([present[m] for m in names], 1),
    )
    return torch.cat([levels[m] for m in names], 2), layout


def pool_by_modality(x: Tensor, layout: TokenLayout) -> Tensor:
    """Masked mean over each modality's valid tokens: (B, L, T, k) -> (B, L, M, k); 0 if none."""
    weights = layout.modality_mask.to(x.dtype)
    weights = weights / weights.sum(-1, keepdim=True).clamp(min=1)
    return torch.einsum("bltk,bmt->blmk", x, weights)
