"""Farneback optical flow on a textured square translating by a known shift."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from clcr_cli.features.flow import optical_flow

SIZE, SQUARE, START = 72, 24, 16
SHIFT = (2, 1)  # (dx, dy) pixels per frame


def translating_square(n_frames: int) -> np.ndarray:
    """(T, H, W, 3) uint8 frames: a smooth random texture square moving by SHIFT each frame."""
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(
        rng.uniform(0, 255, (SQUARE, SQUARE)).astype(np.float32), (0, 0), 1.5
    )
    texture = cv2.normalize(texture, None, 60, 255, cv2.NORM_MINMAX).astype(np.uint8)
    frames = np.full((n_frames, SIZE, SIZE, 3), 20, dtype=np.uint8)
    for t in range(n_frames):
        x, y = START + SHIFT[0] * t, START + SHIFT[1] * t
        frames[t, y : y + SQUARE, x : x + SQUARE] = texture[..., None]
    return frames


def square_interior(t: int) -> tuple[slice, slice]:
    x, y = START + SHIFT[0] * t, START + SHIFT[1] * t
    return slice(y + 4, y + SQUARE - 4), slice(x + 4, x + SQUARE - 4)


def test_flow_recovers_the_shift():
    frames = translating_square(4)
    flow = optical_flow(frames)
    assert flow.shape == (3, SIZE, SIZE, 2) and flow.dtype == np.float16
    for t in range(3):
        inside = flow[t][square_interior(t)].astype(np.float32).reshape(-1, 2)
        np.testing.assert_allclose(inside.mean(axis=0), SHIFT, atol=0.1)
        corner = flow[t, :8, -8:].astype(np.float32)  # static background far from the square
        assert np.abs(corner).max() < 0.1


def test_flow_survives_a_video_codec(tmp_path):
    path = tmp_path / "square.mp4"
    frames = translating_square(4)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (SIZE, SIZE))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    capture = cv2.VideoCapture(str(path))
    decoded = []
    while (ok_frame := capture.read())[0]:
        decoded.append(cv2.cvtColor(ok_frame[1], cv2.COLOR_BGR2RGB))
    capture.release()
    assert len(decoded) == 4
    flow = optical_flow(np.stack(decoded))
    inside = flow[1][square_interior(1)].astype(np.float32).reshape(-1, 2)
    np.testing.assert_allclose(inside.mean(axis=0), SHIFT, atol=0.5)


def test_static_frames_and_input_checks():
    still = np.repeat(translating_square(1), 3, axis=0)
    assert np.abs(optical_flow(still).astype(np.float32)).max() < 1e-3
    assert optical_flow(still[:1]).shape == (0, SIZE, SIZE, 2)
    with pytest.raises(ValueError, match=r"expected \(T, H, W, 3\) uint8 RGB frames"):
        optical_flow(still.astype(np.float32))
    with pytest.raises(ValueError, match=r"expected \(T, H, W, 3\) uint8 RGB frames"):
        optical_flow(still[..., 0])


def test_flow_to_uint8_maps_the_bound_linearly():
    from clcr_cli.features.flow import FLOW_BOUND, flow_to_uint8

    flow = np.array([-100.0, -FLOW_BOUND, -10.0, 0.0, 10.0, FLOW_BOUND, 100.0], dtype=np.float16)
    q = flow_to_uint8(flow)
    assert q.dtype == np.uint8
    np.testing.assert_array_equal(q, [0, 0, 64, 128, 191, 255, 255])
