"""Semantic-hierarchy encoder: level selection, shapes, masks and padding invariance."""

from __future__ import annotations

import pytest
import torch

from clcr_cli.model import ModalitySpec
from clcr_cli.model.errors import ModelConfigError
from clcr_cli.model.hierarchy import LevelProjections, SemanticHierarchyEncoder, select_levels


def test_level_selection_is_even_and_deepest_for_one() -> None:
    assert select_levels(3, 1) == [2]
    assert select_levels(3, 3) == [0, 1, 2]
    assert select_levels(7, 3) == [0, 3, 6]
    assert select_levels(13, 4) == [0, 4, 8, 12]
    with pytest.raises(ModelConfigError, match="extract more text layers"):
        select_levels(2, 3)


def test_build_fails_when_too_few_stored_levels() -> None:
    with pytest.raises(ModelConfigError, match="num_levels=4"):
        SemanticHierarchyEncoder(ModalitySpec("text", "levels", 8, 3), 16, 4, 32, 0.0)


@pytest.mark.parametrize(
    ("spec", "shape"),
    [
        (ModalitySpec("text", "levels", 10, 5), (2, 5, 9, 10)),
        (ModalitySpec("audio", "sequence", 6), (2, 9, 6)),
        (ModalitySpec("video", "frames", 3), (2, 9, 12, 12, 3)),
    ],
)
@pytest.mark.parametrize("levels", [1, 2, 3, 4])
def test_shapes_and_padding_invariance(spec: ModalitySpec, shape: tuple, levels: int) -> None:
    encoder = SemanticHierarchyEncoder(spec, 16, levels, 32, 0.0, (4, 4, 8)).eval()
    x = torch.randint(0, 256, shape).float() if spec.kind == "frames" else torch.randn(shape)
    lengths = torch.tensor([9, 5])
    out, mask = encoder(x, lengths)
    assert out.shape == (2, levels, 9, 16)
    assert mask.tolist()[1] == [True] * 5 + [False] * 4
    assert torch.all(out[1, :, 5:] == 0)
    # the second sample alone, cut to its length, gives the same levels
    time_axis = 2 if spec.kind == "levels" else 1
    short = x[1:2].narrow(time_axis, 0, 5)
    alone, _ = encoder(short, torch.tensor([5]))
    torch.testing.assert_close(out[1, :, :5], alone[0], atol=1e-5, rtol=1e-5)
    # the values under the padding cannot matter
    noisy = x.clone()
    noisy.narrow(time_axis, 5, 4)[1] = 77.0
    changed, _ = encoder(noisy, lengths)
    torch.testing.assert_close(changed[1], out[1])


def test_level_projections_equal_one_layer_norm_per_level() -> None:
    """The batched Eq. (1) against a loop over levels with plain torch modules."""
    proj = LevelProjections(in_dim=6, d=8, num_levels=3, max_len=10)
    with torch.no_grad():
        proj.norm_weight.uniform_(0.5, 1.5)
        proj.norm_bias.normal_()
    z, mask = torch.randn(2, 3, 7, 6), torch.arange(7)[None] < torch.tensor([[7], [4]])
    out = proj(z, mask)
    for level in range(3):
        h = z[:, level] @ proj.weight[level] + proj.bias[level] + proj.position[level, :7]
        h = torch.nn.functional.layer_norm(h, (8,), proj.norm_weight[level], proj.norm_bias[level])
        torch.testing.assert_close(out[:, level], h * mask[..., None], atol=1e-6, rtol=1e-5)


def test_frames_accept_uint8_and_float_on_the_same_scale() -> None:
    encoder = SemanticHierarchyEncoder(
        ModalitySpec("video", "frames", 3), 16, 2, 32, 0.0, (4, 4, 8)
    ).eval()
    frames = torch.randint(0, 256, (2, 4, 16, 16, 3), dtype=torch.uint8)
    lengths = torch.tensor([4, 2])
    a, _ = encoder(frames, lengths)
    b, _ = encoder(frames.float(), lengths)
    torch.testing.assert_close(a, b)


def test_too_long_input_names_max_len() -> None:
    encoder = SemanticHierarchyEncoder(ModalitySpec("audio", "sequence", 6), 16, 2, 8, 0.0)
    with pytest.raises(ModelConfigError, match="max_len"):
        encoder(torch.randn(1, 9, 6), torch.tensor([9]))
