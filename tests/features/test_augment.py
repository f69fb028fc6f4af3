"""Frame views: torchvision's RandomResizedCrop algorithm, flips, eval resizes, seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clcr_cli.features.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    eval_view,
    normalize_imagenet,
    random_resized_crop_box,
    train_view,
    view_rng,
)


def gradient_frames(t: int = 3, h: int = 90, w: int = 120) -> np.ndarray:
    """(T, H, W, 3) uint8: x in red, y in green, the frame index in blue (asymmetric)."""
    y, x = np.mgrid[0:h, 0:w]
    frames = np.empty((t, h, w, 3), dtype=np.uint8)
    for i in range(t):
        frames[i, ..., 0] = (x * 255 // (w - 1)).astype(np.uint8)
        frames[i, ..., 1] = (y * 255 // (h - 1)).astype(np.uint8)
        frames[i, ..., 2] = 40 * i
    return frames


def test_same_seed_epoch_id_same_crop():
    a = random_resized_crop_box(240, 320, view_rng(7, 3, "clip-0001"))
    b = random_resized_crop_box(240, 320, view_rng(7, 3, "clip-0001"))
    assert a == b
    frames = gradient_frames()
    np.testing.assert_array_equal(
        train_view(frames, view_rng(7, 3, "x"), 64), train_view(frames, view_rng(7, 3, "x"), 64)
    )


def test_view_rng_is_a_stable_hash():
    # fixed across processes and runs (Python's hash() of a str is salted per process)
    assert view_rng(0, 0, "a").integers(0, 2**32) == view_rng(0, 0, "a").integers(0, 2**32)
    draws = {
        tuple(view_rng(s, e, i).integers(0, 2**32, 4))
        for s, e, i in [
            (0, 0, "a"),
            (1, 0, "a"),
            (0, 1, "a"),
            (0, 0, "b"),
            (0, 10, "a"),
            (1, 0, "0a"),
        ]
    }
    assert len(draws) == 6


def test_epochs_give_different_crops_for_most_ids():
    ids = [f"sample-{k}" for k in range(100)]
    differ = sum(
        random_resized_crop_box(240, 320, view_rng(0, 0, i))
        != random_resized_crop_box(240, 320, view_rng(0, 1, i))
        for i in ids
    )
    assert differ >= 95


def test_crop_statistics_follow_the_algorithm():
    rng = np.random.default_rng(0)
    height, width = 240, 320
    boxes = np.array([random_resized_crop_box(height, width, rng) for _ in range(4000)])
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    share = h * w / (height * width)
    aspect = w / h
    # rounding w and h to integers moves the share and aspect a little past the bounds
    assert share.min() >= 0.08 * 0.95 and share.max() <= 1.0
    assert aspect.min() >= 0.75 * 0.95 and aspect.max() <= 4 / 3 * 1.05
    # a wide image: tall crops of a large share do not fit, so the accepted ones lean wide
    assert np.log(aspect).mean() > 0
    # a position is uniform: the crop centre's mean is near the image centre
    assert abs((left + w / 2).mean() - width / 2) < 4 and abs((top + h / 2).mean() - height / 2) < 4


def test_crops_that_always_fit_are_uniform_draws():
    # with shares up to 0.5 on a square image every first attempt fits: the share is
    # uniform on [0.08, 0.5] and the log aspect uniform on [log 3/4, log 4/3]
    rng = np.random.default_rng(5)
    boxes = np.array(
        [random_resized_crop_box(400, 400, rng, scale=(0.08, 0.5)) for _ in range(4000)]
    )
    _, _, h, w = boxes.T
    share, log_aspect = h * w / 400**2, np.log(w / h)
    assert abs(share.mean() - 0.29) < 0.01 and abs(share.std() - 0.42 / math.sqrt(12)) < 0.01
    span = math.log(4 / 3) - math.log(3 / 4)
    assert abs(log_aspect.mean()) < 0.01 and abs(log_aspect.std() - span / math.sqrt(12)) < 0.01


def test_scale_one_square_crop_is_the_whole_square_image():
    rng = np.random.default_rng(1)
    for _ in range(20):
        top, left, h, w = random_resized_crop_box(100, 100, rng, scale=(1.0, 1.0), ratio=(1.0, 1.0))
        assert (top, left, h, w) == (0, 0, 100, 100)


def test_fallback_is_the_central_crop_with_clamped_ratio():
    rng = np.random.default_rng(2)
    # a 10 x 1000 strip: no draw of at least 8% of its area with aspect <= 4/3 fits
    assert random_resized_crop_box(10, 1000, rng) == (0, (1000 - 13) // 2, 10, 13)
    # a 1000 x 10 strip: w = width, h = round(w / (3/4))
    assert random_resized_crop_box(1000, 10, rng) == ((1000 - 13) // 2, 0, 13, 10)
    # an aspect inside the ratio range that can never be drawn: the whole image
    box = random_resized_crop_box(100, 100, rng, scale=(2.0, 3.0))
    assert box == (0, 0, 100, 100)


def test_train_view_shape_and_content():
    frames = gradient_frames()
    out = train_view(frames, np.random.default_rng(0), size=32, per_frame=True)
    assert out.shape == (3, 32, 32, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(
        out[..., 2], np.broadcast_to(np.array([0, 40, 80])[:, None, None], (3, 32, 32))
    )


def crop_signature(view: np.ndarray) -> tuple[int, int, int, int]:
    """(first red, last red, first green, last green) of a view of gradient_frames."""
    return int(view[0, 0, 0]), int(view[0, -1, 0]), int(view[0, 0, 1]), int(view[-1, 0, 1])


def test_per_frame_crops_differ_and_per_clip_crops_agree():
    frames = gradient_frames(t=6)
    own = train_view(frames, np.random.default_rng(3), size=32, per_frame=True)
    assert len({crop_signature(v) for v in own}) > 1
    shared = train_view(frames, np.random.default_rng(3), size=32, per_frame=False)
    assert len({crop_signature(v) for v in shared}) == 1


def test_flip_rate_is_one_half():
    frames = gradient_frames(t=1, h=20, w=20)
    rng = np.random.default_rng(4)
    flips = 0
    n = 2000
    for _ in range(n):
        v = train_view(frames, rng, size=8, scale=(1.0, 1.0), ratio=(1.0, 1.0))[0]
        flips += int(v[0, 0, 0] > v[0, -1, 0])  # red falls left to right when flipped
    assert abs(flips / n - 0.5) < 0.05


def test_eval_resize_is_deterministic_and_shaped():
    frames = gradient_frames()
    a = eval_view(frames, 64, "resize")
    assert a.shape == (3, 64, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, eval_view(frames, 64, "resize"))
    assert a[0, 0, 0, 0] < 10 and a[0, 0, -1, 0] > 245  # the whole width is kept


def test_eval_center_resizes_the_short_side_then_crops():
    frames = gradient_frames(t=2, h=90, w=180)  # 2:1
    out = eval_view(frames, 224, "center")
    assert out.shape == (2, 224, 224, 3)
    np.testing.assert_array_equal(out, eval_view(frames, 224, "center"))
    # the short side goes to 256 and the long side to 512: the centre 224 columns hold
    # red levels around the middle of the gradient only
    assert 70 < out[0, 112, 0, 0] < 110 and 150 < out[0, 112, -1, 0] < 190
    assert out[0, 0, 112, 1] < 40 and out[0, -1, 112, 1] > 215  # most of the height


def test_eval_keeps_a_single_channel():
    frames = np.zeros((2, 30, 40, 1), dtype=np.uint8)
    assert eval_view(frames, 16).shape == (2, 16, 16, 1)
    assert train_view(frames, np.random.default_rng(0), 16).shape == (2, 16, 16, 1)


def test_bad_inputs():
    with pytest.raises(ValueError, match="uint8"):
        eval_view(np.zeros((2, 8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="unknown eval view"):
        eval_view(np.zeros((1, 8, 8, 3), dtype=np.uint8), 4, "crop")  # type: ignore[arg-type]


def test_imagenet_normalisation():
    assert IMAGENET_MEAN.tolist() == pytest.approx([0.485, 0.456, 0.406])
    assert IMAGENET_STD.tolist() == pytest.approx([0.229, 0.224, 0.225])
    x = np.full((1, 2, 2, 3), 255, dtype=np.uint8)
    np.testing.assert_allclose(
        normalize_imagenet(x)[0, 0, 0], (1 - IMAGENET_MEAN) / IMAGENET_STD, rtol=1e-6
    )
    assert math.isclose(
        float(normalize_imagenet(np.zeros((1, 1, 1, 3), np.uint8))[0, 0, 0, 0]),
        -0.485 / 0.229,
        rel_tol=1e-6,
    )
