"""Semantic-hierarchy encoder: L levels of uniform width d for one modality.

Paper (Sec. "Semantic-Hierarchy Encoder"): for each modality m and level l,

    H_l^(m) = LN( Z_l^(m) W_l^(m) + P_l^(m) )                                   (1)

with ``Z_l`` the level-l features, ``W_l`` a linear map to width d and ``P_l`` a learned
positional term. Where ``Z_l`` comes from depends on the input kind (see batch.py):

- ``"levels"`` (text): ``Z_l`` is one stored BERT hidden state. With K stored levels and L
  wanted, we take L evenly spaced stored levels from the shallowest to the deepest
  (``round(linspace(0, K-1, L))``); for L = 1 the deepest, because the single level of a
  hierarchy-free model should carry the most task semantics. K < L is a configuration error.
- ``"sequence"`` (log-mel, COVAREP, Facet, a spectrogram): a stem (``stems.py``: a per-step
  linear map, or a ResNet18 over the whole spectrogram whose map's columns are the steps),
  then L residual TCN stages; stage l's output is ``Z_l``.
- ``"frames"`` (raw RGB, optical flow): a stem per frame (a cheap strided 2D CNN, or a
  ResNet18), global-average-pooled to a vector per frame, then the same TCN stages.

*Receptive fields that reach the sequence* (the paper: "three-stage TCN with increasing
receptive fields -> local appearance / part structure / long-range scene context"). Stage l
averages its input over a centred window of ``D_l`` steps and then applies a kernel-k
convolution with dilation ``D_l``: its k taps read k adjacent windows, so the stage sees
``k * D_l`` contiguous steps (no aliasing gaps, unlike a bare dilated convolution). The
dilations grow geometrically from ``D_1 = 1`` and are derived from the modality's longest
sequence ``T`` (``ModalitySpec.max_steps``, the store's padded length, as the stem leaves
it: ``stems.stem_steps``): the deepest is the
smallest that makes the stack's receptive field ``1 + sum_l (k D_l - 1) >= 2T - 1``, i.e. every
step of the deepest level sees the whole clip on both sides. With an unknown ``T`` the
dilations fall back to ``1, 2, 4, ...``. :func:`receptive_fields` gives each level's field.

Padded steps are zeroed before every temporal convolution and in every output, so the valid
steps of a sample do not depend on how much padding follows them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from clcr_cli.model.batch import Batch, ModalitySpec, step_mask
from clcr_cli.model.bert import BertConfig, BertModel
from clcr_cli.model.config import ModelConfig
from clcr_cli.model.errors import ModelConfigError
from clcr_cli.model.stems import build_stem, stem_steps


def select_levels(stored: int, wanted: int) -> list[int]:
    """Indices of the stored levels used as the L hierarchy levels (see module docstring)."""
    if stored < wanted:
        raise ModelConfigError(
            f"the text input holds {stored} stored hidden-state level(s) but the model needs "
            f"num_levels={wanted}: extract more text layers or lower num_levels"
        )
    if wanted == 1:
        return [stored - 1]
    return torch.linspace(0, stored - 1, wanted).round().long().tolist()


def stage_dilations(max_steps: int, num_levels: int, kernel: int) -> list[int]:
    """``D_1 .. D_L`` (module docstring): geometric from 1, the deepest reaching ``max_steps``."""
    if max_steps <= 0:
        return [2**i for i in range(num_levels)]
    target = 2 * max_steps - 1
    growth = 1.0
    while True:
        dilations = [max(1, round(growth**i)) for i in range(num_levels)]
        covered = 1 + sum(kernel * d - 1 for d in dilations[:-1])
        needed = math.ceil((target - covered + 1) / kernel)
        if num_levels == 1 or needed <= dilations[-1]:
            dilations[-1] = max(dilations[-1], needed)
            return dilations
        growth *= 1.05


def receptive_fields(dilations: list[int], kernel: int) -> list[int]:
    """Steps seen by one output step of each level (stem and projections are per step)."""
    fields, field = [], 1
    for dilation in dilations:
        field += kernel * dilation - 1
        fields.append(field)
    return fields


def window_mean(x: Tensor, mask: Tensor, width: int) -> Tensor:
    """Mean of ``x`` (B, T, d) over a centred window of ``width`` valid steps; 0 on padded steps."""
    if width == 1:
        return x
    steps = x.shape[1]
    keep = mask[..., None].to(x.dtype)
    sums = nn.functional.pad(torch.cumsum(x * keep, 1), (0, 0, 1, 0))
    counts = nn.functional.pad(torch.cumsum(keep, 1), (0, 0, 1, 0))
    first = torch.arange(steps, device=x.device) - width // 2
    start, stop = first.clamp(0, steps), (first + width).clamp(0, steps)
    total = sums.index_select(1, stop) - sums.index_select(1, start)
    count = counts.index_select(1, stop) - counts.index_select(1, start)
    return total / count.clamp(min=1) * keep


class TemporalStage(nn.Module):
    """One TCN stage: pre-LN, window mean and dilated Conv1d (both ``D_l``), GELU, residual."""

    def __init__(self, d: int, dilation: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.dilation = dilation
        self.norm = nn.LayerNorm(d)
        self.conv = nn.Conv1d(d, d, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2)
        self.pointwise = nn.Linear(d, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        keep = mask[..., None].to(x.dtype)
        y = window_mean(self.norm(x) * keep, mask, self.dilation).transpose(1, 2)
        y = self.pointwise(nn.functional.gelu(self.conv(y).transpose(1, 2)))
        return (x + self.dropout(y)) * keep


class LevelProjections(nn.Module):
    """Eq. (1) for all L levels at once: ``H_l = LN(Z_l W_l + P_l)``, a learned positional
    table of ``max_len`` rows and a LayerNorm per level (its own gain and bias)."""

    def __init__(self, in_dim: int, d: int, num_levels: int, max_len: int) -> None:
        super().__init__()
        bound = in_dim**-0.5  # nn.Linear's default initialisation, per level
        self.weight = nn.Parameter(torch.empty(num_levels, in_dim, d).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_levels, d).uniform_(-bound, bound))
        self.position = nn.Parameter(torch.randn(num_levels, max_len, d) * 0.02)
        self.norm_weight = nn.Parameter(torch.ones(num_levels, d))
        self.norm_bias = nn.Parameter(torch.zeros(num_levels, d))

    def forward(self, z: Tensor, mask: Tensor) -> Tensor:
        """z (B, L, T, in_dim), mask (B, T) -> H (B, L, T, d), zero on padded steps."""
        steps = z.shape[2]
        if steps > self.position.shape[1]:
            raise ModelConfigError(
                f"an input has {steps} steps but the model's max_len is {self.position.shape[1]}: "
                "raise max_len in the model config or shorten the sequences"
            )
        h = torch.einsum("bltc,lcd->bltd", z, self.weight) + self.bias[:, None]
        h = h + self.position[:, :steps]
        h = nn.functional.layer_norm(h, h.shape[-1:]) * self.norm_weight[:, None] + self.norm_bias[:, None]
        return h * mask[:, None, :, None].to(h.dtype)


class SemanticHierarchyEncoder(nn.Module):
    """One modality's encoder: input tensor + lengths -> L levels (B, T, d) and the step mask."""

    def __init__(
        self,
        spec: ModalitySpec,
        d: int,
        num_levels: int,
        max_len: int,
        dropout: float,
        frame_channels: tuple[int, int, int] = (16, 32, 64),
        tcn_kernel: int = 3,
        encoder: str = "stem",
        text_encoder: dict | None = None,
        text_finetune: bool = False,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.num_levels = num_levels
        if spec.kind == "tokens":  # a BERT in the model: its hidden states are the stored levels' role
            self.bert = BertModel(BertConfig.from_hf(text_encoder["config"]))
            self.bert.requires_grad_(text_finetune)
            self.hidden_states = list(text_encoder["layers"])
            select_levels(len(self.hidden_states), num_levels)
            self.stem, self.stages, in_dim = None, nn.ModuleList(), spec.dim
        elif spec.kind == "levels":
            select_levels(spec.num_levels_in, num_levels)  # fail at build time, not mid-training
            self.stem: nn.Module | None = None
            self.stages = nn.ModuleList()
            in_dim = spec.dim
        elif spec.kind in ("sequence", "frames"):
            self.stem = build_stem(spec.kind, encoder, spec.dim, d, frame_channels)
            self.dilations = stage_dilations(stem_steps(self.stem, spec.max_steps), num_levels, tcn_kernel)
            self.stages = nn.ModuleList(
                TemporalStage(d, dilation, tcn_kernel, dropout) for dilation in self.dilations
            )
            in_dim = d
        else:
            raise ModelConfigError(f"modality {spec.name!r}: unknown input kind {spec.kind!r}")
        self.levels = LevelProjections(in_dim, d, num_levels, max_len)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Input and lengths -> (levels (B, L, T, d), step mask (B, T))."""
        kind = self.spec.kind
        steps = x.shape[2] if kind in ("levels", "tokens") else x.shape[1]
        mask = step_mask(lengths, steps)
        if kind == "tokens":  # (B, 3, T): ids, attention mask, token types
            states = self.bert(x[:, 0].long(), x[:, 1].long(), x[:, 2].long())
            chosen = [self.hidden_states[i] for i in select_levels(len(self.hidden_states), self.num_levels)]
            z = torch.stack([states[i] for i in chosen], 1).float()
        elif kind == "levels":
            if x.dim() != 4:
                raise ModelConfigError(
                    f"modality {self.spec.name!r}: expected (B, K, T, D), got {tuple(x.shape)}"
                )
            z = x[:, select_levels(x.shape[1], self.num_levels)].float()
        else:
            if isinstance(self.stem, nn.Linear):  # a sequence's features, step by step
                h = self.stem(x.float()) * mask[..., None]
            else:
                h, mask = self.stem(x, mask)
            h = self.dropout(h)
            z = []
            for stage in self.stages:
                h = stage(h, mask)
                z.append(h)
            z = torch.stack(z, 1)
        return self.levels(z, mask), mask


def present_masks(batch: Batch, names: list[str]) -> dict[str, Tensor]:
    """(B,) bool per modality: ``batch.present`` or all True; unknown or missing names fail."""
    missing = [m for m in names if m not in batch.inputs or m not in batch.lengths]
    if missing:
        raise ModelConfigError(f"the batch has no input or lengths for modality {missing[0]!r}")
    size = batch.lengths[names[0]].shape[0]
    device = batch.lengths[names[0]].device
    if batch.present is None:
        return {m: torch.ones(size, dtype=torch.bool, device=device) for m in names}
    return {
        m: batch.present[m].to(torch.bool)
        if m in batch.present
        else torch.ones(size, dtype=torch.bool, device=device)
        for m in names
    }


def encode_batch(
    encoders: nn.ModuleDict, batch: Batch
) -> tuple[dict[str, list[Tensor]], dict[str, Tensor], dict[str, Tensor]]:
    """Run every modality's encoder: levels[m] (B, L, T_m, d), token masks, presence.

    The token mask of a missing modality is all False, so nothing downstream reads it.
    """
    names = list(encoders)
    present = present_masks(batch, names)
    levels, masks = {}, {}
    for m in names:
        levels[m], steps = encoders[m](batch.inputs[m], batch.lengths[m])
        masks[m] = steps & present[m][:, None]
    return levels, masks, present


def build_encoders(config: ModelConfig) -> nn.ModuleDict:
    """One :class:`SemanticHierarchyEncoder` per modality, as the config describes."""
    return nn.ModuleDict(
        {
            spec.name: SemanticHierarchyEncoder(
                spec,
                config.d,
                config.num_levels,
                config.max_len,
                config.dropout,
                config.frame_channels,
                config.tcn_kernel,
                config.encoder_of(spec.name),
                config.text_encoder,
                config.text_finetune,
            )
            for spec in config.modalities
        }
    )
