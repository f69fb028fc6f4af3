"""Optical flow between CONSECUTIVE native frames, at the times the RGB frames are sampled.

:func:`clcr_cli.features.flow.optical_flow` runs on the few frames kept per clip, so its
"motion" spans the gap between two samples (often a second) at the stored resolution.
Two-stream inputs (UCF101's pre-extracted TV-L1, read by
:mod:`clcr_cli.features.flow_frames`) are instead the flow between frame t and frame
t + 1 of the video. This module computes that, with Farneback instead of TV-L1: for each
frame index t chosen by :func:`clcr_cli.features.video._frame_indices` (the sampling of
:func:`~clcr_cli.features.video.read_frames`, same ``num_frames``, ``fps`` and ``window``),
the flow from frame t to frame t + 1 of the decoded video at its native resolution (from
t - 1 to t when t is the last frame), on grey levels with
:class:`~clcr_cli.features.flow.FarnebackConfig`'s parameters, in float32.

The field is then resized to ``size x size`` (``cv2.INTER_AREA`` when shrinking,
``cv2.INTER_LINEAR`` when enlarging) and its displacements rescaled to the new pixel
grid: u by ``size / W``, v by ``size / H``. Channel 0 is u (positive to the right),
channel 1 is v (positive downwards), in pixels of the resized frame.

Decoding is sequential (``grab`` each frame, ``retrieve`` only those needed), as in
``video.py`` and for the same reasons; so is the handling of a frame count that the
header got wrong (a second pass when the corrected plan needs frames not yet decoded).
The frame t + 1 may lie past the window's end: it is the clip's next frame all the same.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import cv2
import numpy as np

from clcr_cli.errors import ConfigError, DataError
from clcr_cli.features.flow import FarnebackConfig
from clcr_cli.features.video import IMAGE_SUFFIXES, _capture, _frame_indices, _header
from clcr_cli.features.window import check_window


def _needed(wanted: list[int]) -> set[int]:
    """Each sampled frame with its neighbours (t + 1, or t - 1 when t is the last)."""
    return {i for t in wanted for i in (t - 1, t, t + 1) if i >= 0}


def _decode_grey(
    capture: cv2.VideoCapture, needed: set[int], read_to_end: bool
) -> tuple[dict[int, np.ndarray], int | None]:
    """Grey native-size frames of ``needed`` and the true frame count (when learnt: the
    stream ended before the last needed frame, or ``read_to_end``)."""
    frames: dict[int, np.ndarray] = {}
    last = max(needed, default=-1)
    index = 0
    while index <= last or read_to_end:
        if not capture.grab():
            return frames, index
        if index in needed:
            ok, frame = capture.retrieve()
            if not ok:  # an undecodable frame ends the usable stream
                return frames, index
            frames[index] = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        index += 1
    return frames, None


def _farneback(prev: np.ndarray, nxt: np.ndarray, config: FarnebackConfig) -> np.ndarray:
    return cv2.calcOpticalFlowFarneback(
        prev,
        nxt,
        None,
        config.pyr_scale,
        config.levels,
        config.winsize,
        config.iterations,
        config.poly_n,
        config.poly_sigma,
        0,
    )


def resize_flow(flow: np.ndarray, size: int) -> np.ndarray:
    """An (H, W, 2) flow field resized to (size, size, 2), displacements rescaled."""
    height, width = flow.shape[:2]
    shrink = size < height or size < width
    out = cv2.resize(
        flow, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )
    out[..., 0] *= size / width
    out[..., 1] *= size / height
    return out


def flow_at_sampled_times(
    path: Path,
    num_frames: int = 8,
    size: int = 112,
    fps: float | None = None,
    window: tuple[float, float] | None = None,
    config: FarnebackConfig | None = None,
) -> np.ndarray:
    """(T, size, size, 2) float32 flow from each sampled frame to the next native frame.

    T is what :func:`~clcr_cli.features.video.read_frames` gives for the same sampling.
    A video with a single decodable frame has no flow (a :class:`DataError`), and so has
    a still image.
    """
    path = Path(path)
    config = config or FarnebackConfig()
    if num_frames < 1 or size < 1 or (fps is not None and fps <= 0):
        raise ConfigError(f"bad frame sampling: num_frames={num_frames}, size={size}, fps={fps}")
    if not path.is_file():
        raise DataError(path, "no such file")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise DataError(path, "a still image has no optical flow")
    if window is not None:
        check_window(path, window)

    with _capture(path) as capture:
        native_fps, header_count = _header(path, capture)
        if not (math.isfinite(native_fps) and native_fps > 0):
            if fps is not None or window is not None:
                raise DataError(path, "unknown frame rate: cannot sample by time")
            native_fps = 1.0

        def plan(n_frames: int) -> list[int]:
            return _frame_indices(n_frames, native_fps, num_frames, fps, window)

        if fps is not None:  # times from the window's start: frames past the end are absent
            wanted = plan(sys.maxsize)
            frames, _ = _decode_grey(capture, _needed(wanted), False)
            true_count = None
        else:
            wanted = plan(header_count)
            reaches_end = window is None or math.ceil(window[1] * native_fps - 1e-6) >= header_count
            frames, true_count = _decode_grey(capture, _needed(wanted), reaches_end)
    if true_count is not None and true_count != header_count:  # the header was wrong
        wanted = plan(true_count)
        if not (_needed(wanted) & set(range(true_count))) <= frames.keys():
            with _capture(path) as capture:
                frames, _ = _decode_grey(capture, _needed(wanted), False)

    flows = []
    for t in wanted:
        if t not in frames:
            continue
        if t + 1 in frames:
            pair = frames[t], frames[t + 1]
        elif t - 1 in frames:
            pair = frames[t - 1], frames[t]
        else:
            raise DataError(path, f"frame {t} has no decodable neighbour: no optical flow")
        flows.append(resize_flow(_farneback(*pair, config), size))
    if not flows:
        where = "" if window is None else f" in window {window}"
        raise DataError(path, f"no decodable frames{where}")
    return np.stack(flows).astype(np.float32, copy=False)
