"""ResNet18 with torchvision's parameter names, shapes and initialisation.

The audio-visual peers of CLCR (OGM-GE, PMR, BalanceBenchmark) train two ResNet18s:
one on a 1-channel spectrogram, one on 224-px RGB frames (UCF101's optical flow uses a
2-channel first conv). torchvision cannot be installed next to this CPU torch, so the
network is written out here, module for module as ``torchvision.models.resnet18`` builds
it: a torchvision checkpoint loads into :class:`ResNet` by name, strictly.

    model = resnet18(in_channels=1, num_classes=None)   # an encoder: no ``fc``
    model.load_state_dict(adapt_state_dict(torch_state, model), strict=True)
    fmap = model.forward_features(spec)                 # (B, 512, h, w)

:func:`adapt_state_dict` fits a checkpoint to a model: it adapts the first conv to another
input-channel count (as timm's ``adapt_input_conv`` does), drops the classifier when the
model has none, and names the first key that does not fit. This module imports only torch
and does no I/O; reading a file is ``clcr_cli.training.pretrained``'s job.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from clcr_cli.model.errors import ModelConfigError

LAYERS: tuple[int, ...] = (2, 2, 2, 2)
"""BasicBlocks per stage (``layer1`` .. ``layer4``) of ResNet18."""
WIDTHS: tuple[int, ...] = (64, 128, 256, 512)
"""Output channels of each stage."""
NUM_FEATURES = 512
"""Channels of the ``layer4`` map, and the width of the pooled feature."""

STEM_CONV_KEY = "conv1.weight"
"""The first conv's weight, ``(64, in_channels, 7, 7)``: the key adapted to other inputs."""
HEAD_PREFIX = "fc."
"""Prefix of the classifier's keys, absent from an encoder (``num_classes=None``)."""
BN_KEYS: tuple[str, ...] = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
"""What each BatchNorm2d holds in a state dict, in its order."""
NUM_BATCHES_TRACKED = "num_batches_tracked"
"""The BN counter missing from checkpoints saved before torch 0.4.1 (torchvision's own)."""


def _resnet18_keys() -> tuple[str, ...]:
    """torchvision resnet18's state-dict keys, in ``state_dict()`` order."""
    keys = [STEM_CONV_KEY, *(f"bn1.{k}" for k in BN_KEYS)]
    for stage, blocks in enumerate(LAYERS, start=1):
        for block in range(blocks):
            p = f"layer{stage}.{block}"
            keys += [f"{p}.conv1.weight", *(f"{p}.bn1.{k}" for k in BN_KEYS)]
            keys += [f"{p}.conv2.weight", *(f"{p}.bn2.{k}" for k in BN_KEYS)]
            if block == 0 and stage > 1:  # the first block of a strided stage
                keys += [f"{p}.downsample.0.weight", *(f"{p}.downsample.1.{k}" for k in BN_KEYS)]
    return (*keys, f"{HEAD_PREFIX}weight", f"{HEAD_PREFIX}bias")


RESNET18_KEYS: tuple[str, ...] = _resnet18_keys()
"""All 122 keys of ``resnet18(3, 1000).state_dict()`` (the 20 ``num_batches_tracked`` included)."""
RESNET18_ENCODER_KEYS: tuple[str, ...] = tuple(
    k for k in RESNET18_KEYS if not k.startswith(HEAD_PREFIX)
)
"""The 120 keys of an encoder, ``resnet18(num_classes=None)``."""


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (its BN has one)."""
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias: the projection of a shortcut."""
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual shortcut: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + id(x))``.

    ``downsample`` (``nn.Sequential(conv1x1(stride), BatchNorm2d)``) projects the shortcut
    when the block changes resolution or width, else it is ``None``; ``conv1`` carries the
    stride, as in torchvision.
    """

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet18 (``[2, 2, 2, 2]`` BasicBlocks, widths 64/128/256/512), torchvision's layout.

    Stem: ``conv1`` (7x7, stride 2, padding 3, no bias), ``bn1``, ``relu``, ``maxpool``
    (3, stride 2, padding 1); then ``layer1`` .. ``layer4`` (strides 1, 2, 2, 2), ``avgpool``
    (``AdaptiveAvgPool2d(1)``) and ``fc``. A 224x224 input gives a 7x7 ``layer4`` map.

    ``in_channels``: 3 for RGB frames, 1 for a spectrogram, 2 for optical flow.
    ``num_classes``: the width of ``fc``; ``None`` builds no ``fc`` (``self.fc is None``),
    so the state dict has no ``fc.*`` keys and :meth:`forward` returns the pooled
    ``(B, 512)`` feature: the encoder use.

    Initialisation is torchvision's: ``kaiming_normal_`` (fan_out, relu) for every conv,
    BN weight 1 and bias 0, PyTorch's default for ``fc``; no zero-initialised residual BN
    (torchvision's ``zero_init_residual=False``).
    """

    def __init__(self, in_channels: int = 3, num_classes: int | None = 1000) -> None:
        super().__init__()
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ModelConfigError(
                f"ResNet in_channels must be a positive int, got {in_channels!r}"
            )
        if num_classes is not None and (
            isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
        ):
            raise ModelConfigError(
                f"ResNet num_classes must be a positive int or None, got {num_classes!r}"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_features = NUM_FEATURES
        self.inplanes = WIDTHS[0]

        self.conv1 = nn.Conv2d(in_channels, self.inplanes, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(WIDTHS[0], LAYERS[0], stride=1)
        self.layer2 = self._make_layer(WIDTHS[1], LAYERS[1], stride=2)
        self.layer3 = self._make_layer(WIDTHS[2], LAYERS[2], stride=2)
        self.layer4 = self._make_layer(WIDTHS[3], LAYERS[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc: nn.Linear | None = (
            None if num_classes is None else nn.Linear(NUM_FEATURES, num_classes)
        )

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        """One stage: a first block that may stride / widen (with a projected shortcut), then
        ``blocks - 1`` blocks at constant shape."""
        downsample = None
        if stride != 1 or self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * BasicBlock.expansion, stride),
                nn.BatchNorm2d(planes * BasicBlock.expansion),
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * BasicBlock.expansion
        layers += [BasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` -> the ``layer4`` map ``(B, 512, h, w)``, before pooling.

        Each of the 5 stride-2 steps maps a side ``n`` to ``floor((n - 1) / 2) + 1``:
        224 -> 7, and a 257 x 188 spectrogram -> 9 x 6.
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ModelConfigError(
                f"ResNet expects input (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward(self, x: Tensor) -> Tensor:
        """Pooled and flattened features ``(B, 512)``, then ``fc`` when there is one:
        ``(B, num_classes)``."""
        x = torch.flatten(self.avgpool(self.forward_features(x)), 1)
        return x if self.fc is None else self.fc(x)


def resnet18(in_channels: int = 3, num_classes: int | None = 1000) -> ResNet:
    """torchvision's ``resnet18()`` (11,689,512 parameters at 3 channels and 1000 classes),
    with ``in_channels`` input planes; ``num_classes=None`` gives the encoder (no ``fc``)."""
    return ResNet(in_channels=in_channels, num_classes=num_classes)


def adapt_input_conv(in_channels: int, weight: Tensor) -> Tensor:
    """An RGB first-conv ``weight`` ``(O, 3, kH, kW)`` refitted to ``in_channels`` inputs.

    timm's ``adapt_input_conv`` rule, computed in float32 and returned in ``weight``'s dtype:

    * 1 channel: the sum of the three RGB filters (a grey input ``g`` then gives the response
      the RGB filters give to ``(g, g, g)``);
    * 3 channels: unchanged;
    * any other count ``N`` (2 included): the RGB filters repeated ``ceil(N / 3)`` times along
      the input axis, cut to the first ``N``, scaled by ``3 / N``. For ``N = 2`` (optical
      flow) that is ``(R, G) * 1.5``: the blue filter is dropped.
    """
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise ModelConfigError(
            f"cannot adapt {STEM_CONV_KEY} of shape {tuple(weight.shape)} to {in_channels} "
            "input channels: only a 3-channel (RGB) conv can be adapted"
        )
    if in_channels == 3:
        return weight
    dtype = weight.dtype
    w = weight.float()
    if in_channels == 1:
        w = w.sum(dim=1, keepdim=True)
    else:
        repeat = math.ceil(in_channels / 3)
        w = w.repeat(1, repeat, 1, 1)[:, :in_channels] * (3 / in_channels)
    return w.to(dtype)


def adapt_state_dict(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """``state`` fitted to ``model``: a new dict that ``model.load_state_dict(..., strict=True)``
    accepts, or a :class:`ModelConfigError` of one line naming the first key that does not fit.

    * ``conv1.weight`` with 3 input channels, loaded into a model with another count, is
      adapted by :func:`adapt_input_conv` (1: the RGB sum; N: repeat, cut, scale by 3/N);
    * ``fc.*`` is dropped when the model has no ``fc`` (an encoder); a classifier of
      another width than the model's is a shape mismatch, as any other key;
    * a missing ``*.num_batches_tracked`` is filled with 0, as ``BatchNorm`` itself does for
      checkpoints older than torch 0.4.1 (torchvision's published weights have 102 keys);
    * then, in the model's key order: the first missing key, else the first unexpected key
      (in ``state``'s order), else the first shape mismatch, is an error.

    ``state`` is not modified; the tensors are shared unless adapted.
    """
    if not isinstance(state, dict):
        raise ModelConfigError(f"a state dict is a dict of tensors, got a {type(state).__name__}")
    expected = model.state_dict()
    out = dict(state)
    for k, v in out.items():
        if not isinstance(k, str) or not isinstance(v, Tensor):
            raise ModelConfigError(f"state dict entry {k!r} is a {type(v).__name__}, not a tensor")
    if not any(k.startswith(HEAD_PREFIX) for k in expected):
        out = {k: v for k, v in out.items() if not k.startswith(HEAD_PREFIX)}

    for key, target in expected.items():
        if key not in out and key.rsplit(".", 1)[-1] == NUM_BATCHES_TRACKED:
            out[key] = torch.zeros_like(target)

    missing = [k for k in expected if k not in out]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ModelConfigError(f"state dict is missing key {missing[0]!r}{more}")
    unexpected = [k for k in out if k not in expected]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise ModelConfigError(f"state dict has unexpected key {unexpected[0]!r}{more}")

    stem = out.get(STEM_CONV_KEY)
    want = expected.get(STEM_CONV_KEY)
    if (
        stem is not None
        and want is not None
        and stem.dim() == 4
        and want.dim() == 4
        and stem.shape[1] == 3
        and want.shape[1] != 3
        and (stem.shape[0], *stem.shape[2:]) == (want.shape[0], *want.shape[2:])
    ):
        out[STEM_CONV_KEY] = adapt_input_conv(want.shape[1], stem)

    for key, target in expected.items():
        got = out[key]
        if got.shape != target.shape:
            raise ModelConfigError(
                f"state dict key {key!r} has shape {tuple(got.shape)}, "
                f"the model expects {tuple(target.shape)}"
            )
    return out
