"""load_encoder_weights: safetensors and weights-only torch files, the usual wrappers, the
first-conv adaptation, and one-line DataErrors for everything that does not fit."""

from __future__ import annotations

import os
import pickle
import random
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from clcr_cli.errors import DataError
from clcr_cli.model.resnet import ResNet, resnet18
from clcr_cli.training.pretrained import load_encoder_weights


@pytest.fixture(scope="module")
def source() -> ResNet:
    """A ResNet18 with non-default BN statistics, so a load that skipped them would show."""
    torch.manual_seed(0)
    model = resnet18(3, 1000)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
                m.num_batches_tracked.fill_(7)
    return model.eval()


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 3, 64, 64)


def fresh(in_channels: int = 3, num_classes: int | None = 1000) -> ResNet:
    torch.manual_seed(123)  # another init than the source's
    return resnet18(in_channels, num_classes).eval()


def assert_same_state(model: ResNet, state: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert set(got) == set(state)
    for k, v in state.items():
        assert torch.equal(got[k], v), k


def one_line_error(path: Path, model: ResNet) -> str:
    with pytest.raises(DataError) as err:
        load_encoder_weights(path, model)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert err.value.path == path
    return err.value.problem


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin", ".safetensors"])
def test_roundtrip_is_exact(tmp_path, source, frames, suffix):
    path = tmp_path / f"resnet18{suffix}"
    state = source.state_dict()
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    model = fresh()
    with torch.no_grad():
        assert not torch.allclose(model(frames), source(frames))
    load_encoder_weights(path, model)
    assert_same_state(model, state)
    assert model.bn1.num_batches_tracked.item() == 7
    with torch.no_grad():
        assert torch.equal(model(frames), source(frames))
        assert torch.equal(model.forward_features(frames), source.forward_features(frames))


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model": sd, "optimizer_name": "sgd"},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {"model": {"state_dict": {f"module.{k}": v for k, v in sd.items()}}},
        lambda sd: OrderedDict(sd),
    ],
    ids=["state_dict", "model", "module-prefix", "nested", "ordered"],
)
def test_common_wrappers(tmp_path, source, wrap):
    path = tmp_path / "wrapped.pth"
    torch.save(wrap(source.state_dict()), path)
    model = fresh()
    load_encoder_weights(path, model)
    assert_same_state(model, source.state_dict())


def test_encoder_drops_fc(tmp_path, source, frames):
    path = tmp_path / "rgb.safetensors"
    save_file(source.state_dict(), str(path))
    enc = fresh(3, None)
    load_encoder_weights(path, enc)
    with torch.no_grad():
        torch.testing.assert_close(enc(frames), source.forward_features(frames).mean(dim=(2, 3)))


def test_rgb_checkpoint_into_a_spectrogram_encoder(tmp_path, source):
    path = tmp_path / "rgb.pth"
    torch.save(source.state_dict(), path)
    enc = fresh(1, None)
    load_encoder_weights(path, enc)
    rgb_w = source.conv1.weight.detach()
    torch.testing.assert_close(enc.conv1.weight.detach(), rgb_w.sum(dim=1, keepdim=True))
    assert torch.equal(enc.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
    # a grey input x gives the RGB network's response to (x, x, x)
    x = torch.randn(2, 1, 257, 188)
    with torch.no_grad():
        out = enc.forward_features(x)
        assert out.shape == (2, 512, 9, 6)
        stem = enc.conv1(x)
        torch.testing.assert_close(
            stem, source.conv1(x.expand(-1, 3, -1, -1)), rtol=1e-5, atol=1e-5
        )
        want = source.forward_features(x.expand(-1, 3, -1, -1))
        torch.testing.assert_close(out, want, rtol=1e-3, atol=1e-4)  # float sums reordered


def test_rgb_checkpoint_into_a_flow_encoder(tmp_path, source):
    path = tmp_path / "rgb.safetensors"
    save_file(source.state_dict(), str(path))
    enc = fresh(2, None)
    load_encoder_weights(path, enc)
    rgb_w = source.conv1.weight.detach()
    want = torch.stack([rgb_w[:, 0], rgb_w[:, 1]], dim=1) * 1.5  # (R, G) * 3/2
    torch.testing.assert_close(enc.conv1.weight.detach(), want)
    assert enc.conv1.weight.shape == (64, 2, 7, 7)


def test_checkpoint_without_bn_counters(tmp_path, source):
    """torchvision's published weights have 102 keys: no num_batches_tracked."""
    state = {k: v for k, v in source.state_dict().items() if "num_batches_tracked" not in k}
    assert len(state) == 102
    path = tmp_path / "old.pth"
    torch.save(state, path)
    model = fresh()
    load_encoder_weights(path, model)
    assert torch.equal(model.layer1[0].bn1.running_var, source.layer1[0].bn1.running_var)
    assert model.bn1.num_batches_tracked.item() == 0


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize(
    ("change", "words"),
    [
        (
            lambda sd: sd.pop("layer2.1.bn2.running_mean"),
            ["missing", "'layer2.1.bn2.running_mean'"],
        ),
        (lambda sd: sd.update({"head.weight": torch.zeros(3)}), ["unexpected", "'head.weight'"]),
        (
            lambda sd: sd.update({"layer4.0.downsample.0.weight": torch.zeros(512, 128, 1, 1)}),
            ["'layer4.0.downsample.0.weight'", "(512, 128, 1, 1)", "(512, 256, 1, 1)"],
        ),
    ],
    ids=["missing", "extra", "shape"],
)
def test_keys_that_do_not_fit(tmp_path, source, suffix, change, words):
    state = {k: v.clone() for k, v in source.state_dict().items()}
    change(state)
    path = tmp_path / f"bad{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    model = fresh()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    problem = one_line_error(path, model)
    for w in words:
        assert w in problem
    assert_same_state(model, before)  # nothing was loaded


def test_not_a_state_dict(tmp_path):
    cases = {
        "list.pt": [1, 2, 3],
        "tensor.pt": torch.zeros(3),
        "empty.pt": {},
        "meta.pth": {"epoch": 3, "lr": 0.1},
        "mixed.pth": {"conv1.weight": torch.zeros(1), "epoch": 3},
    }
    for name, obj in cases.items():
        path = tmp_path / name
        torch.save(obj, path)
        problem = one_line_error(path, fresh())
        assert problem.startswith("not a state dict"), problem
    assert "a list" in one_line_error(tmp_path / "list.pt", fresh())
    assert "'epoch' is a int" in one_line_error(tmp_path / "mixed.pth", fresh())


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin", ".safetensors"])
def test_random_bytes(tmp_path, suffix):
    path = tmp_path / f"noise{suffix}"
    path.write_bytes(random.Random(0).randbytes(512))
    problem = one_line_error(path, fresh())
    assert problem.startswith("not a readable"), problem


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    assert one_line_error(path, fresh()).startswith("not a readable weights-only torch file")


class _Payload:
    """Unpickling this object would create a folder: a stand-in for arbitrary code."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (str(self.target),))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_no_code_runs(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _Payload(marker)}, path, pickle_protocol=protocol)
    problem = one_line_error(path, fresh())
    assert not marker.exists()
    assert "weights-only" in problem and "weights_only" not in problem  # no advice to unlock
    if protocol == 2:  # torch's own protocol: the refusal names the global
        assert "GLOBAL posix.mkdir" in problem
    # and a plain (non-zip) pickle is refused too
    legacy = tmp_path / "evil.pt"
    with open(legacy, "wb") as fh:
        pickle.dump({"conv1.weight": _Payload(marker)}, fh, protocol=protocol)
    one_line_error(legacy, fresh())
    assert not marker.exists()


def test_missing_file_and_unknown_format(tmp_path):
    assert one_line_error(tmp_path / "absent.pth", fresh()) == "no such weights file"
    assert one_line_error(tmp_path, fresh().eval()).startswith("unknown weights format")
    path = tmp_path / "weights.ckpt"
    torch.save({}, path)
    assert "'.ckpt'" in one_line_error(path, fresh())
    folder = tmp_path / "folder.pth"
    folder.mkdir()
    assert one_line_error(folder, fresh()) == "no such weights file"
