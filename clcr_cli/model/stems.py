"""Stems: what turns an audio or frame input into one d-wide vector per step, before the
semantic hierarchy's TCN stages (``hierarchy.py``) build the L levels from them.

Two families, chosen per modality by ``ModelConfig.encoder``:

- ``stem`` (the default, sized for ``synth`` and small manifests): a sequence's features go
  through one linear map; frames through :class:`FrameStem`, a 3-conv strided CNN per frame;
- ``resnet18``, the audio-visual peers' encoder (OGM-GE, PMR, BalanceBenchmark train two
  ResNet18s; ``resnet.py`` has torchvision's parameter names, so its checkpoints load):

  * frames (:class:`ResNetFrameStem`): every valid frame through the ResNet18 trunk, global
    average pooling, a linear map 512 -> d: one step per frame. RGB is normalised with
    ImageNet's mean and std (as every peer does); 2-channel optical flow is scaled to [0, 1]
    only (BalanceBenchmark's ``a_norm=False``). The peers then average the frames; here the
    frames stay steps, so the TCN stages can read their order;
  * a spectrogram stored as a sequence (``--audio-features stft|fbank``, (T, F))
    (:class:`ResNetSpectrogramStem`): the whole (F, T) image through a 1-channel ResNet18
    trunk, the (512, F', T') map averaged over frequency, a linear map 512 -> d: one step
    per column of the map, T' = T / 32 rounded up (five stride-2 steps). The peers pool the
    map to one vector; here its time axis is kept as the hierarchy's steps.

So with either stem the hierarchy starts at the same place: a sequence of d-wide steps that
the L TCN stages turn into shallow, middle and deep levels (the paper's Eq. (1)).

Every stem returns ``(h, mask)``: (B, T', d), zero on padded steps, and the step mask of T'.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from clcr_cli.model.batch import step_mask
from clcr_cli.model.resnet import NUM_FEATURES, ResNet, resnet18

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESNET_STRIDES = 5  # conv1, maxpool, layer2, layer3, layer4: each halves a side, rounding up


def resnet_steps(steps: int) -> int:
    """The time steps of a ResNet18 map of an input ``steps`` wide: ``(n - 1) // 2 + 1``, five times."""
    for _ in range(RESNET_STRIDES):
        steps = (steps - 1) // 2 + 1
    return steps


class FrameStem(nn.Module):
    """Per-frame strided CNN (stride 4, 2, 2) + global average pooling + linear to d.

    GroupNorm (per frame) rather than BatchNorm keeps each frame independent of the others in
    the batch, so padded frames cannot shift statistics (every frame is computed, padded ones
    too; :meth:`forward` zeroes their outputs).
    """

    def __init__(self, in_channels: int, d: int, channels: tuple[int, int, int]) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, c1, 7, stride=4, padding=3),
            nn.GroupNorm(1, c1),
            nn.GELU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1),
            nn.GroupNorm(1, c2),
            nn.GELU(),
            nn.Conv2d(c2, c3, 3, stride=2, padding=1),
            nn.GroupNorm(1, c3),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(c3, d),
        )

    def forward(self, frames: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """frames (B, T, H, W, C) on 0..255 -> ((B, T, d), mask), zero on padded steps.

        Every frame goes through the CNN (padded ones too: one batched call, no gather and
        scatter of the valid frames); GroupNorm keeps frames independent, so padded frames
        cannot change valid ones, and their outputs are zeroed.
        """
        b, t = frames.shape[:2]
        pixels = frames.flatten(0, 1).float().div(255.0).permute(0, 3, 1, 2)  # (B T, C, H, W)
        out = self.net(pixels.contiguous()).view(b, t, -1).float()  # autocast may give bf16/fp16
        return out * mask[..., None], mask


class ResNetFrameStem(nn.Module):
    """Each valid frame through a ResNet18 trunk, pooled, then linear to d (module docstring).

    Only valid frames are computed (gathered, then scattered back): BatchNorm pools its
    statistics over the batch, so a padded frame would shift those of the valid ones.
    """

    def __init__(self, in_channels: int, d: int) -> None:
        super().__init__()
        self.trunk: ResNet = resnet18(in_channels=in_channels, num_classes=None)
        self.proj = nn.Linear(NUM_FEATURES, d)
        rgb = in_channels == 3
        mean = torch.tensor(IMAGENET_MEAN if rgb else (0.0,) * in_channels).view(1, -1, 1, 1)
        std = torch.tensor(IMAGENET_STD if rgb else (1.0,) * in_channels).view(1, -1, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, frames: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """frames (B, T, H, W, C) on 0..255 -> ((B, T, d), mask), zero on padded frames."""
        pixels = frames[mask].float().div(255.0).permute(0, 3, 1, 2)  # (N valid, C, H, W)
        features = self.trunk(((pixels - self.mean) / self.std).contiguous()).float()  # (N, 512)
        out = features.new_zeros((*mask.shape, features.shape[-1]))
        out[mask] = features
        return self.proj(out) * mask[..., None], mask


class ResNetSpectrogramStem(nn.Module):
    """A (T, F) spectrogram as one 1-channel (F, T) image through a ResNet18 trunk; the map
    averaged over frequency gives T' = :func:`resnet_steps` (T) steps, linear to d."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.trunk: ResNet = resnet18(in_channels=1, num_classes=None)
        self.proj = nn.Linear(NUM_FEATURES, d)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, T, F), zero after each sample's length -> ((B, T', d), mask of T')."""
        image = (x.float() * mask[..., None]).transpose(1, 2)[:, None]  # (B, 1, F, T)
        columns = self.trunk.forward_features(image.contiguous()).float().mean(2).transpose(1, 2)  # (B, T', 512)
        lengths = mask.sum(1)
        for _ in range(RESNET_STRIDES):
            lengths = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
        steps = step_mask(lengths.clamp(min=1), columns.shape[1])
        return self.proj(columns) * steps[..., None], steps


def build_stem(kind: str, encoder: str, dim: int, d: int, frame_channels: tuple[int, int, int]) -> nn.Module:
    """The stem of an input of ``kind`` (``sequence`` or ``frames``) and width or channel count
    ``dim`` (module docstring)."""
    if encoder == "resnet18":
        return ResNetSpectrogramStem(d) if kind == "sequence" else ResNetFrameStem(dim, d)
    return nn.Linear(dim, d) if kind == "sequence" else FrameStem(dim, d, frame_channels)


def stem_steps(stem: nn.Module, steps: int) -> int:
    """How many steps ``stem`` makes of an input of ``steps``."""
    return resnet_steps(steps) if isinstance(stem, ResNetSpectrogramStem) else steps


def resnet_trunks(model: nn.Module) -> dict[str, ResNet]:
    """Every ResNet18 trunk of a model (CLCR or a baseline), by modality: ``{"audio": ...}``."""
    trunks = {}
    for name, module in model.named_modules():
        parts = name.split(".")
        if isinstance(module, ResNetFrameStem | ResNetSpectrogramStem) and "encoders" in parts:
            trunks[parts[parts.index("encoders") + 1]] = module.trunk
    return trunks
