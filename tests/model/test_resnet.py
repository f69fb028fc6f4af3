"""ResNet18: torchvision's key set, shapes, parameter count and init; the shapes of its
outputs; and the fitting of a checkpoint to a model (``adapt_state_dict``)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from clcr_cli.model.errors import ModelConfigError
from clcr_cli.model.resnet import (
    RESNET18_ENCODER_KEYS,
    RESNET18_KEYS,
    BasicBlock,
    ResNet,
    adapt_input_conv,
    adapt_state_dict,
    resnet18,
)

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def torchvision_resnet18_keys() -> set[str]:
    """torchvision.models.resnet18().state_dict().keys(), written out from its naming."""
    keys = {"conv1.weight", "fc.weight", "fc.bias"} | {f"bn1.{k}" for k in BN}
    for layer in (1, 2, 3, 4):
        for block in (0, 1):
            p = f"layer{layer}.{block}"
            keys |= {f"{p}.conv1.weight", f"{p}.conv2.weight"}
            keys |= {f"{p}.bn1.{k}" for k in BN} | {f"{p}.bn2.{k}" for k in BN}
    for layer in (2, 3, 4):
        keys.add(f"layer{layer}.0.downsample.0.weight")
        keys |= {f"layer{layer}.0.downsample.1.{k}" for k in BN}
    return keys


@pytest.fixture(scope="module")
def rgb() -> ResNet:
    torch.manual_seed(0)
    return resnet18(3, 1000).eval()


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- torchvision compatibility -------------------------------------------------------------


def test_parameter_count_is_torchvisions(rgb):
    assert n_params(rgb) == 11_689_512
    # the first conv has 64 * C * 49 weights; the classifier 512 * 1000 + 1000
    assert n_params(resnet18(1, 1000)) == 11_689_512 - 64 * 2 * 49
    assert n_params(resnet18(2, 1000)) == 11_689_512 - 64 * 1 * 49
    assert n_params(resnet18(3, None)) == 11_689_512 - 513_000
    assert n_params(resnet18(3, 10)) == 11_689_512 - 513_000 + 5_130


def test_state_dict_keys_are_torchvisions(rgb):
    keys = list(rgb.state_dict())
    expected = torchvision_resnet18_keys()
    assert len(expected) == 122
    assert len(keys) == 122
    assert set(keys) == expected
    assert list(RESNET18_KEYS) == keys  # the constant, in state_dict order
    assert sum(k.endswith("num_batches_tracked") for k in keys) == 20


def test_encoder_has_no_fc():
    enc = resnet18(1, None)
    assert enc.fc is None
    keys = list(enc.state_dict())
    assert len(keys) == 120
    assert set(keys) == torchvision_resnet18_keys() - {"fc.weight", "fc.bias"}
    assert list(RESNET18_ENCODER_KEYS) == keys


def test_shapes_of_named_keys(rgb):
    sd = rgb.state_dict()
    assert sd["conv1.weight"].shape == (64, 3, 7, 7)
    assert sd["layer1.0.conv1.weight"].shape == (64, 64, 3, 3)
    assert sd["layer2.0.conv1.weight"].shape == (128, 64, 3, 3)
    assert sd["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert sd["layer3.0.downsample.0.weight"].shape == (256, 128, 1, 1)
    assert sd["layer4.1.conv2.weight"].shape == (512, 512, 3, 3)
    assert sd["layer4.0.downsample.1.running_var"].shape == (512,)
    assert sd["fc.weight"].shape == (1000, 512)
    assert sd["fc.bias"].shape == (1000,)
    assert resnet18(1, None).state_dict()["conv1.weight"].shape == (64, 1, 7, 7)
    assert resnet18(2, None).state_dict()["conv1.weight"].shape == (64, 2, 7, 7)


def test_module_structure_is_torchvisions(rgb):
    c = rgb.conv1
    assert (c.kernel_size, c.stride, c.padding, c.bias) == ((7, 7), (2, 2), (3, 3), None)
    mp = rgb.maxpool
    assert (mp.kernel_size, mp.stride, mp.padding) == (3, 2, 1)
    assert isinstance(rgb.avgpool, nn.AdaptiveAvgPool2d) and rgb.avgpool.output_size == 1
    assert rgb.layer1[0].downsample is None and rgb.layer1[1].downsample is None
    for i, width in ((2, 128), (3, 256), (4, 512)):
        first = getattr(rgb, f"layer{i}")[0]
        assert isinstance(first, BasicBlock) and first.expansion == 1
        assert first.conv1.stride == (2, 2) and first.conv2.stride == (1, 1)
        ds = first.downsample
        assert isinstance(ds, nn.Sequential) and len(ds) == 2
        assert isinstance(ds[0], nn.Conv2d) and isinstance(ds[1], nn.BatchNorm2d)
        assert ds[0].stride == (2, 2) and ds[0].kernel_size == (1, 1) and ds[0].bias is None
        assert ds[1].num_features == width
        assert getattr(rgb, f"layer{i}")[1].downsample is None
    assert all(m.bias is None for m in rgb.modules() if isinstance(m, nn.Conv2d))


def test_initialisation_is_torchvisions():
    torch.manual_seed(0)
    model = resnet18(3, 1000)
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)), name
            assert torch.equal(m.bias, torch.zeros_like(m.bias)), name
    # kaiming_normal_(fan_out, relu): std = sqrt(2 / (out_channels * kH * kW))
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.weight.numel() >= 36_000:
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
            want = math.sqrt(2 / fan_out)
            assert m.weight.std().item() == pytest.approx(want, rel=0.05), name
            assert abs(m.weight.mean().item()) < 0.05 * want, name
    # fc keeps PyTorch's default Linear init: uniform within 1 / sqrt(512)
    bound = 1 / math.sqrt(512)
    assert model.fc.weight.abs().max().item() <= bound
    assert model.fc.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)


# --- forward -------------------------------------------------------------------------------


def test_forward_shapes_rgb(rgb):
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        fmap = rgb.forward_features(x)
        logits = rgb(x)
    assert fmap.shape == (2, 512, 7, 7)
    assert logits.shape == (2, 1000)
    # forward = fc(flatten(avgpool(forward_features)))
    with torch.no_grad():
        want = rgb.fc(fmap.mean(dim=(2, 3)))
    torch.testing.assert_close(logits, want)
    assert (fmap >= 0).all()  # the map ends with a ReLU


def test_forward_shapes_spectrogram():
    enc = resnet18(1, None).eval()
    x = torch.randn(2, 1, 257, 188)
    with torch.no_grad():
        fmap = enc.forward_features(x)
        pooled = enc(x)
    # five stride-2 steps, each n -> floor((n - 1) / 2) + 1: 257 -> 129 -> 65 -> 33 -> 17 -> 9,
    # 188 -> 94 -> 47 -> 24 -> 12 -> 6
    side = [257, 188]
    for _ in range(5):
        side = [(n - 1) // 2 + 1 for n in side]
    assert side == [9, 6]
    assert fmap.shape == (2, 512, 9, 6)
    assert pooled.shape == (2, 512)
    torch.testing.assert_close(pooled, fmap.mean(dim=(2, 3)))


def test_forward_flow_and_classes():
    model = resnet18(2, 101).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 2, 112, 112)).shape == (1, 101)
        assert model.forward_features(torch.randn(1, 2, 112, 112)).shape == (1, 512, 4, 4)


def test_basic_block_is_residual():
    """With conv2's BN zeroed a block is relu(shortcut(x)): identity when it has none."""
    torch.manual_seed(0)
    model = resnet18(3, None).eval()
    x = torch.randn(2, 64, 16, 16)
    block = model.layer1[0]
    nn.init.zeros_(block.bn2.weight)
    with torch.no_grad():
        torch.testing.assert_close(block(x), torch.relu(x))
        strided = model.layer2[0]
        nn.init.zeros_(strided.bn2.weight)
        out = strided(x)
        assert out.shape == (2, 128, 8, 8)
        torch.testing.assert_close(out, torch.relu(strided.downsample(x)))


def test_bad_input_and_config():
    model = resnet18(1, None)
    with pytest.raises(ModelConfigError, match=r"\(B, 1, H, W\), got \(2, 3, 32, 32\)"):
        model.forward_features(torch.randn(2, 3, 32, 32))
    with pytest.raises(ModelConfigError, match="in_channels"):
        resnet18(0)
    with pytest.raises(ModelConfigError, match="num_classes"):
        resnet18(3, 0)


# --- adapt_state_dict ----------------------------------------------------------------------


def test_adapt_same_model_is_identity(rgb):
    sd = rgb.state_dict()
    out = adapt_state_dict(sd, rgb)
    assert list(out) == list(sd)
    assert all(out[k] is sd[k] for k in sd)
    other = resnet18(3, 1000)
    other.load_state_dict(out, strict=True)


def test_adapt_to_one_channel_sums_rgb(rgb):
    sd = rgb.state_dict()
    enc = resnet18(1, None)
    out = adapt_state_dict(sd, enc)
    assert not any(k.startswith("fc.") for k in out)
    assert "fc.weight" in sd  # the input is not modified
    assert sd["conv1.weight"].shape == (64, 3, 7, 7)
    w = out["conv1.weight"]
    assert w.shape == (64, 1, 7, 7)
    torch.testing.assert_close(w, sd["conv1.weight"].sum(dim=1, keepdim=True))
    enc.load_state_dict(out, strict=True)


def test_adapt_to_two_channels_is_rg_times_one_and_a_half(rgb):
    sd = rgb.state_dict()
    flow = resnet18(2, None)
    out = adapt_state_dict(sd, flow)
    w, rgb_w = out["conv1.weight"], sd["conv1.weight"]
    assert w.shape == (64, 2, 7, 7)
    torch.testing.assert_close(w[:, 0], rgb_w[:, 0] * 1.5)
    torch.testing.assert_close(w[:, 1], rgb_w[:, 1] * 1.5)
    flow.load_state_dict(out, strict=True)


def test_adapt_input_conv_rules():
    w = torch.randn(4, 3, 7, 7)
    assert adapt_input_conv(3, w) is w
    torch.testing.assert_close(adapt_input_conv(1, w), w.sum(1, keepdim=True))
    five = adapt_input_conv(5, w)  # R G B R G, scaled by 3/5
    assert five.shape == (4, 5, 7, 7)
    torch.testing.assert_close(five, torch.cat([w, w[:, :2]], 1) * 0.6)
    # the response to a constant input is the RGB filters' when N is 1 or a multiple of 3
    for n in (1, 3, 6, 9):
        torch.testing.assert_close(adapt_input_conv(n, w).sum(dim=1), w.sum(dim=1))
    half = adapt_input_conv(1, w.half())
    assert half.dtype == torch.float16
    with pytest.raises(ModelConfigError, match="only a 3-channel"):
        adapt_input_conv(3, torch.randn(4, 1, 7, 7))


def test_adapt_fills_num_batches_tracked(rgb):
    """torchvision's published weights predate the BN counter: 102 keys, not 122."""
    sd = {k: v for k, v in rgb.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(sd) == 102
    out = adapt_state_dict(sd, rgb)
    assert len(out) == 122
    assert out["layer3.0.bn1.num_batches_tracked"].item() == 0
    assert out["layer3.0.bn1.num_batches_tracked"].dtype == torch.long
    resnet18(3, 1000).load_state_dict(out, strict=True)


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (lambda sd: sd.pop("layer3.1.conv2.weight"), r"missing key 'layer3\.1\.conv2\.weight'$"),
        (lambda sd: sd.pop("fc.bias"), r"missing key 'fc\.bias'$"),
        (
            lambda sd: sd.update({"layer5.0.conv1.weight": torch.zeros(1)}),
            r"unexpected key 'layer5\.0\.conv1\.weight'$",
        ),
        (
            lambda sd: sd.update({"fc.weight": torch.zeros(10, 512)}),
            r"key 'fc\.weight' has shape \(10, 512\), the model expects \(1000, 512\)",
        ),
        (
            lambda sd: sd.update({"bn1.running_mean": torch.zeros(32)}),
            r"key 'bn1\.running_mean' has shape \(32,\), the model expects \(64,\)",
        ),
        (
            lambda sd: sd.update({"layer2.0.conv1.weight": torch.zeros(1)}),
            r"'layer2\.0\.conv1\.weight' has shape \(1,\)",
        ),
    ],
)
def test_adapt_names_the_key_that_does_not_fit(rgb, change, pattern):
    sd = dict(rgb.state_dict())
    change(sd)
    with pytest.raises(ModelConfigError, match=pattern) as err:
        adapt_state_dict(sd, rgb)
    assert "\n" not in str(err.value)


def test_adapt_counts_further_missing_keys(rgb):
    sd = {k: v for k, v in rgb.state_dict().items() if not k.startswith("layer4.")}
    with pytest.raises(
        ModelConfigError, match=r"missing key 'layer4\.0\.conv1\.weight' \(and \d+ more\)"
    ):
        adapt_state_dict(sd, rgb)


def test_adapt_refuses_a_non_rgb_stem_into_another_count():
    one = resnet18(1, None).state_dict()
    with pytest.raises(
        ModelConfigError,
        match=r"'conv1\.weight' has shape \(64, 1, 7, 7\), the model expects \(64, 2, 7, 7\)",
    ):
        adapt_state_dict(one, resnet18(2, None))
    # same count: loads as is
    out = adapt_state_dict(one, resnet18(1, None))
    assert out["conv1.weight"] is one["conv1.weight"]


def test_adapt_refuses_non_tensors(rgb):
    sd = dict(rgb.state_dict())
    sd["epoch"] = 3
    with pytest.raises(ModelConfigError, match="'epoch' is a int"):
        adapt_state_dict(sd, rgb)
    with pytest.raises(ModelConfigError, match="got a list"):
        adapt_state_dict([1, 2], rgb)
