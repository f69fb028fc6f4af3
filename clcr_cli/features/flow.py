"""Dense optical flow between consecutive frames: UCF101's second modality.

Gunnar Farneback's polynomial-expansion flow (``cv2.calcOpticalFlowFarneback``) on the
grey-level frames, with the parameters of OpenCV's reference sample (pyramid scale 0.5,
3 levels, 15-pixel window, 3 iterations, 5-pixel polynomial with sigma 1.2). Channel 0
is the horizontal displacement (pixels, positive to the right), channel 1 the vertical
one (positive downwards): frame t+1 at (x + u, y + v) matches frame t at (x, y).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class FarnebackConfig:
    pyr_scale: float = 0.5
    levels: int = 3
    winsize: int = 15
    iterations: int = 3
    poly_n: int = 5
    poly_sigma: float = 1.2


def optical_flow(frames: np.ndarray, config: FarnebackConfig | None = None) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB frames -> (T-1, H, W, 2) float16 flow between frames t and t+1."""
    config = config or FarnebackConfig()
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"expected (T, H, W, 3) uint8 RGB frames, got {frames.dtype} array of shape {frames.shape}"
        )
    grey = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames]
    flow = np.empty((max(len(grey) - 1, 0), *frames.shape[1:3], 2), dtype=np.float16)
    for t in range(len(grey) - 1):
        flow[t] = cv2.calcOpticalFlowFarneback(
            grey[t],
            grey[t + 1],
            None,
            config.pyr_scale,
            config.levels,
            config.winsize,
            config.iterations,
            config.poly_n,
            config.poly_sigma,
            0,
        )
    return flow


FLOW_BOUND = 20.0  # pixels: the two-stream literature's clip before quantising flow to 8 bits


def flow_to_uint8(flow: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """Quantise flow to uint8 as the two-stream literature stores it.

    Each displacement is clipped to [-bound, bound] and mapped linearly to [0, 255]
    (0 px -> 127.5, rounded), so flow is stored and fed to the model like frames.
    """
    scaled = (np.clip(flow.astype(np.float32), -bound, bound) + bound) * (255.0 / (2 * bound))
    return np.rint(scaled).astype(np.uint8)
