"""Flow between consecutive native frames at the sampled times, on a synthetic .avi."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from clcr_cli.errors import DataError
from clcr_cli.features.native_flow import flow_at_sampled_times, resize_flow
from clcr_cli.features.video import read_frames

W, H, SQUARE, N_FRAMES, FPS = 160, 120, 40, 12, 10.0
START = (20, 30)  # (x, y) of the square's top-left corner in frame 0
SHIFT = (3, 2)  # (dx, dy) native pixels per frame


def square_at(t: int) -> tuple[int, int]:
    return START[0] + SHIFT[0] * t, START[1] + SHIFT[1] * t


def write_moving_square(path: Path, n_frames: int = N_FRAMES) -> Path:
    """An MJPG .avi: a smooth random texture square moving by SHIFT per frame on grey."""
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(
        rng.uniform(0, 255, (SQUARE, SQUARE)).astype(np.float32), (0, 0), 2.0
    )
    texture = cv2.normalize(texture, None, 60, 255, cv2.NORM_MINMAX).astype(np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    assert writer.isOpened()
    for t in range(n_frames):
        frame = np.full((H, W, 3), 20, dtype=np.uint8)
        x, y = square_at(t)
        frame[y : y + SQUARE, x : x + SQUARE] = texture[..., None]
        writer.write(frame)
    writer.release()
    return path


def interior(t: int, size: int, margin: int = 8) -> tuple[slice, slice]:
    """The square's interior at frame t, in the (size x size) grid."""
    x, y = square_at(t)
    sx, sy = size / W, size / H
    rows = slice(int(np.ceil((y + margin) * sy)), int((y + SQUARE - margin) * sy))
    cols = slice(int(np.ceil((x + margin) * sx)), int((x + SQUARE - margin) * sx))
    return rows, cols


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_moving_square(tmp_path_factory.mktemp("native-flow") / "square.avi")


def test_flow_is_the_native_shift_scaled_to_the_output_grid(video):
    size = 64
    flow = flow_at_sampled_times(video, num_frames=4, size=size)
    assert flow.shape == (4, size, size, 2) and flow.dtype == np.float32
    expected = (SHIFT[0] * size / W, SHIFT[1] * size / H)  # (1.2, 1.07): x and y scale differ
    # sampled frames 0, 4, 7, 11; the last has no next frame: its flow is 10 -> 11
    for k, t in enumerate([0, 4, 7, 10]):
        inside = flow[k][interior(t, size)].reshape(-1, 2)
        np.testing.assert_allclose(inside.mean(axis=0), expected, atol=0.15)
    # the static background far from the square does not move
    assert np.abs(flow[0][-6:, -6:]).max() < 0.1


def test_same_number_of_frames_as_read_frames(video):
    for kwargs in (
        {"num_frames": 3},
        {"num_frames": 20},
        {"num_frames": 8, "fps": 4.0},
        {"num_frames": 5, "fps": 2.0, "window": (0.3, 1.2)},
    ):
        frames = read_frames(video, size=16, **kwargs)
        flow = flow_at_sampled_times(video, size=16, **kwargs)
        assert flow.shape[0] == frames.shape[0] and flow.shape[1:] == (16, 16, 2)


def test_window_and_fps_sampling(video):
    # fps 5 from 0.2 s: frames 2, 4, 6, 8, 10 (one every 2 native frames)
    flow = flow_at_sampled_times(video, num_frames=5, size=80, fps=5.0, window=(0.2, 1.2))
    assert flow.shape == (5, 80, 80, 2)
    for k, t in enumerate([2, 4, 6, 8, 10]):
        u = flow[k][interior(t, 80)][..., 0].mean()
        assert u == pytest.approx(SHIFT[0] * 80 / W, abs=0.15)


def test_resize_flow_scales_the_displacements():
    flow = np.zeros((30, 60, 2), dtype=np.float32)
    flow[..., 0], flow[..., 1] = 6.0, 3.0
    out = resize_flow(flow, 20)
    assert out.shape == (20, 20, 2)
    np.testing.assert_allclose(out[..., 0], 6.0 * 20 / 60)
    np.testing.assert_allclose(out[..., 1], 3.0 * 20 / 30)
    np.testing.assert_allclose(resize_flow(flow, 90)[..., 1], 3.0 * 90 / 30, rtol=1e-6)


def test_single_frame_video_has_no_flow(tmp_path):
    one = write_moving_square(tmp_path / "one.avi", n_frames=1)
    with pytest.raises(DataError, match="no optical flow"):
        flow_at_sampled_times(one, num_frames=3, size=16)


def test_missing_file_and_still_image(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        flow_at_sampled_times(tmp_path / "nothing.avi", 3, 16)
    image = tmp_path / "still.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="still image"):
        flow_at_sampled_times(image, 3, 16)
