"""The contract between the feature store and every model: inputs in, outputs out.

A modality's tensor has one of four *kinds*, fixed by how it was extracted:

- ``"levels"``:   (B, K, T, D) float  -- K stored BERT hidden-state levels of width D;
- ``"sequence"``: (B, T, F)    float  -- a feature sequence (log-mel, MFCC, COVAREP, Facet);
- ``"frames"``:   (B, T, H, W, C)     -- uint8 frames, or float on the same 0..255 scale;
- ``"tokens"``:   (B, 3, T)    int    -- token ids, attention mask, token type ids, for a
  BERT that runs inside the model (``bert.py``; ``ModelConfig.text_encoder``).

``lengths[m]`` (B,) counts the valid steps of each sample (padded steps follow them);
``present[m]`` (B,) is False where modality m is missing for that sample.

:func:`mask_sequences` is the SpecAugment-style masking (Park et al., 2019) a model may apply
to its ``sequence`` inputs in training (``ModelConfig.spec_time_mask``/``spec_freq_mask``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

Kind = Literal["levels", "sequence", "frames", "tokens"]


def step_mask(lengths: Tensor, steps: int) -> Tensor:
    """(B, steps) bool: True on the first ``lengths[b]`` steps of each sample (the valid ones)."""
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


@dataclass(frozen=True)
class ModalitySpec:
    name: str
    kind: Kind
    dim: int  # D for levels, F for sequence, C (channels) for frames
    num_levels_in: int = 1  # K: stored levels (kind "levels"), or the BERT's hidden states (kind "tokens")
    max_steps: int = 0  # T: the longest sequence the model will see (0: unknown)


@dataclass
class Batch:
    inputs: dict[str, Tensor]
    lengths: dict[str, Tensor]
    target: Tensor | None = None  # (B,) long for classification, float for regression
    present: dict[str, Tensor] | None = None

    def to(self, device) -> Batch:
        def move(d: dict[str, Tensor] | None) -> dict[str, Tensor] | None:
            return None if d is None else {k: v.to(device) for k, v in d.items()}

        return Batch(
            inputs=move(self.inputs),
            lengths=move(self.lengths),
            target=None if self.target is None else self.target.to(device),
            present=move(self.present),
        )


@dataclass
class ModelOutput:
    """What every model (CLCR, its variants and the baselines) returns."""

    logits: Tensor  # (B, C) for classification, (B,) prediction for regression
    loss: Tensor | None  # total loss; None when the batch has no target
    terms: dict[str, Tensor] = field(default_factory=dict)  # each loss term, detached-safe scalars
    level_weights: Tensor | None = None  # (B, L): InterCAD's w
    modality_weights: Tensor | None = None  # (B, M): InterCAD's shared-path attention
    streams: Any = None  # CLCR: the exchange's LevelStreams (streams, alpha, token layout)
    private_gates: Tensor | None = None  # (B, M): InterCAD's eta_m (0 for a missing modality)
    # (B, M, C) or (B, M): each modality's own prediction -- CLCR's auxiliary heads
    # (``modality_heads``), late fusion's votes; None where the model makes none
    modality_logits: Tensor | None = None
    # (B, M, F): each modality's encoder levels, pooled over its valid steps (0 where missing),
    # before any exchange: what the single-modality probes of ``clcr eval`` read
    encoded: Tensor | None = None


def _band_mask(size: Tensor, width: float, count: int, steps: int, device: torch.device) -> Tensor:
    """(B, steps) bool: ``count`` bands per sample, each of a width drawn uniformly from
    ``0 .. floor(width * size[b])`` at a uniform start inside the first ``size[b]`` steps."""
    b = size.shape[0]
    size = size.to(device=device, dtype=torch.float32)[:, None]
    band = torch.floor(torch.rand(b, count, device=device) * (torch.floor(width * size) + 1))
    start = torch.floor(torch.rand(b, count, device=device) * (size - band + 1).clamp(min=1))
    t = torch.arange(steps, device=device, dtype=torch.float32)[None, None, :]
    return ((t >= start[..., None]) & (t < (start + band)[..., None])).any(1)


def mask_sequences(
    batch: Batch, kinds: dict[str, str], time_width: float, freq_width: float, count: int = 2
) -> Batch:
    """``batch`` with every ``sequence`` modality (``kinds[m]``) masked as SpecAugment does:
    per sample, ``count`` time masks of up to ``time_width`` of its valid steps each and
    ``count`` frequency masks of up to ``freq_width`` of its features each, set to 0 (the
    training mean of standardised features). The draws come from torch's RNG, so a seeded
    epoch replays them; other kinds, lengths and targets are unchanged."""
    inputs = dict(batch.inputs)
    for m, x in batch.inputs.items():
        if kinds.get(m) != "sequence" or x.dim() != 3:
            continue
        masked = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)[..., None]
        if time_width > 0:
            masked = masked | _band_mask(batch.lengths[m], time_width, count, x.shape[1], x.device)[..., None]
        if freq_width > 0:
            features = torch.full((x.shape[0],), x.shape[2], device=x.device)
            masked = masked | _band_mask(features, freq_width, count, x.shape[2], x.device)[:, None, :]
        inputs[m] = x.masked_fill(masked, 0)
    return Batch(inputs=inputs, lengths=batch.lengths, target=batch.target, present=batch.present)
