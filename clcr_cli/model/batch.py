"""The contract between the feature store and every model: inputs in, outputs out.

A modality's tensor has one of three *kinds*, fixed by how it was extracted:

- ``"levels"``:   (B, K, T, D) float  -- K stored BERT hidden-state levels of width D;
- ``"sequence"``: (B, T, F)    float  -- a feature sequence (log-mel, MFCC, COVAREP, Facet);
- ``"frames"``:   (B, T, H, W, C)     -- uint8 frames, or float on the same 0..255 scale.

``lengths[m]`` (B,) counts the valid steps of each sample (padded steps follow them);
``present[m]`` (B,) is False where modality m is missing for that sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

Kind = Literal["levels", "sequence", "frames"]


def step_mask(lengths: Tensor, steps: int) -> Tensor:
    """(B, steps) bool: True on the first ``lengths[b]`` steps of each sample (the valid ones)."""
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


@dataclass(frozen=True)
class ModalitySpec:
    name: str
    kind: Kind
    dim: int  # D for levels, F for sequence, C (channels) for frames
    num_levels_in: int = 1  # K: stored levels (kind "levels" only)
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
