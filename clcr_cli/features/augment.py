"""The peers' frame views: the train-time random crop and flip, and the test-time resize.

Every audio-visual peer builds its visual input with the same torchvision pipeline, applied
to each frame ON ITS OWN (the transform is called once per PIL image, so each frame draws
its own crop and its own flip):

- train: ``RandomResizedCrop(224)`` (scale (0.08, 1), ratio (3/4, 4/3), bilinear) +
  ``RandomHorizontalFlip()`` (p = 0.5) + ``ToTensor`` + ImageNet ``Normalize``;
- test: ``Resize(size=(224, 224))`` (both sides to 224, the aspect ratio NOT kept) +
  ``ToTensor`` + ``Normalize``.

Read in GeWu-Lab/OGM-GE_CVPR2022 ``dataset/CramedDataset.py`` lines 68-90 (CREMA-D: the
transform inside ``for i in range(self.args.fps)``, line 89) and ``dataset/dataset.py``
lines 80-106 (KS/AVE: 3 frames, ``transform(image[i])`` each, line 106); in
GeWu-Lab/BalanceBenchmark ``balancemm/datasets/KS_dataset.py`` lines 65-97 and
``cremad_dataset.py`` lines 49-76; in GeWu-Lab/Diagnosing_Relearning_ECCV2024
``code/dataset/av_dataset.py`` lines 85-112; in shicaiwei123/ICCV2025-ARL
``dataset/AVEDataset.py`` lines 111-151. So ``per_frame=True`` is the peers' behaviour;
``per_frame=False`` (one crop and flip for the whole clip) is the video-model convention.
Exception: BalanceBenchmark's UCF101 (``balancemm/datasets/ucf101_dataset.py`` lines
71-93) does no random crop: ``Resize((224, 224))`` + ``RandomHorizontalFlip`` in train
for RGB and for each flow image (u and v flipped independently and u not negated), plain
``Resize((224, 224))`` in test; its flow images are not normalised (``a_norm=False``), its
RGB ones are (``v_norm=True``).

:func:`random_resized_crop_box` is torchvision's ``RandomResizedCrop.get_params``
(pytorch/vision ``torchvision/transforms/transforms.py``, class ``RandomResizedCrop``):
up to 10 attempts, each drawing an area share ``U(scale)`` and a log aspect ratio
``U(log ratio)``, ``w = int(round(sqrt(area * r)))``, ``h = int(round(sqrt(area / r)))``,
accepted when ``0 < w <= W`` and ``0 < h <= H`` with a uniform position; else the
central crop of the whole image with its aspect ratio clamped into ``ratio``. The draws
come from a NumPy generator, not torch's: same algorithm, other random numbers.

Resizing: torchvision resizes PIL images with PIL's bilinear filter, which ANTIALIASES
when shrinking (its support widens with the shrink factor, averaging every source pixel);
``cv2.INTER_LINEAR`` interpolates between the 2 x 2 nearest source pixels whatever the
factor, so on a strong shrink (a 640 px frame to 224) it aliases fine texture that PIL
would blur. Both place pixel centres alike, so on enlargement (most RandomResizedCrop
boxes) they agree closely. ``interpolation=cv2.INTER_AREA`` is the nearer match to PIL
when shrinking.

:func:`eval_view` ``mode="resize"`` is the peers' test view (all of them above);
``mode="center"`` is torchvision's ImageNet evaluation convention (``Resize(256)`` then
``CenterCrop(224)``), which none of these peers uses for its frames.
"""

from __future__ import annotations

import hashlib
import math
from typing import Literal

import cv2
import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
DEFAULT_SCALE = (0.08, 1.0)
DEFAULT_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def view_rng(seed: int, epoch: int, sample_id: str) -> np.random.Generator:
    """A generator fixed by (seed, epoch, sample id), the same in every process and run.

    The three are hashed with SHA-256 (Python's ``hash()`` of a str changes per process)
    into the entropy of a NumPy ``SeedSequence``.
    """
    key = f"{int(seed)}\0{int(epoch)}\0".encode() + str(sample_id).encode("utf-8")
    digest = hashlib.sha256(b"clcr-view\0" + key).digest()
    return np.random.default_rng(np.random.SeedSequence(int.from_bytes(digest, "little")))


def random_resized_crop_box(
    height: int,
    width: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = DEFAULT_SCALE,
    ratio: tuple[float, float] = DEFAULT_RATIO,
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop, by torchvision's ``RandomResizedCrop.get_params``."""
    if height < 1 or width < 1:
        raise ValueError(f"cannot crop a {height} x {width} image")
    if scale[0] > scale[1] or ratio[0] > ratio[1]:
        raise ValueError(f"scale {scale} and ratio {ratio} must be (min, max)")
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect_ratio = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    # fallback: the central crop, the whole image with its aspect ratio clamped
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _check_frames(frames: np.ndarray) -> None:
    if frames.ndim != 4 or frames.dtype != np.uint8 or min(frames.shape[1:3]) < 1:
        raise ValueError(
            f"expected (T, H, W, C) uint8 frames, got {frames.dtype} array of shape {frames.shape}"
        )


def _resize(image: np.ndarray, width: int, height: int, interpolation: int) -> np.ndarray:
    """cv2.resize keeping a channel axis of size 1 (cv2 drops it)."""
    out = cv2.resize(image, (width, height), interpolation=interpolation)
    return out.reshape(height, width, image.shape[2])


def train_view(
    frames: np.ndarray,
    rng: np.random.Generator,
    size: int = 224,
    per_frame: bool = True,
    *,
    scale: tuple[float, float] = DEFAULT_SCALE,
    ratio: tuple[float, float] = DEFAULT_RATIO,
    interpolation: int = cv2.INTER_LINEAR,
) -> np.ndarray:
    """RandomResizedCrop(size) + RandomHorizontalFlip(0.5): ``(T, H, W, C)`` uint8 ->
    ``(T, size, size, C)`` uint8.

    ``per_frame=True`` (the peers'): each frame draws its crop then its flip, in frame
    order; ``False``: one crop and one flip for the clip.
    """
    _check_frames(frames)
    _, height, width, channels = frames.shape
    out = np.empty((len(frames), size, size, channels), dtype=np.uint8)
    params = None
    for t, frame in enumerate(frames):
        if per_frame or params is None:
            params = random_resized_crop_box(height, width, rng, scale, ratio), rng.random() < 0.5
        (top, left, h, w), flip = params
        view = _resize(frame[top : top + h, left : left + w], size, size, interpolation)
        out[t] = view[:, ::-1] if flip else view
    return out


def eval_view(
    frames: np.ndarray,
    size: int = 224,
    mode: Literal["resize", "center"] = "resize",
    *,
    interpolation: int = cv2.INTER_LINEAR,
) -> np.ndarray:
    """The deterministic test view, ``(T, H, W, C)`` uint8 -> ``(T, size, size, C)`` uint8.

    ``"resize"``: ``Resize((size, size))``, the peers' test transform. ``"center"``: the
    short side resized to ``int(size * 256 / 224)`` (the long side to
    ``int(short * long / short_side)``, as torchvision), then ``CenterCrop(size)`` with
    torchvision's rounding of the offsets.
    """
    _check_frames(frames)
    if mode not in ("resize", "center"):
        raise ValueError(f"unknown eval view {mode!r}; expected 'resize' or 'center'")
    _, height, width, channels = frames.shape
    if mode == "resize":
        return np.stack([_resize(f, size, size, interpolation) for f in frames])
    short = int(size * 256 / 224)
    if width <= height:
        new_w, new_h = short, int(short * height / width)
    else:
        new_w, new_h = int(short * width / height), short
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return np.stack(
        [
            _resize(f, new_w, new_h, interpolation)[top : top + size, left : left + size]
            for f in frames
        ]
    )


def normalize_imagenet(frames: np.ndarray) -> np.ndarray:
    """``ToTensor`` + ``Normalize(IMAGENET_MEAN, IMAGENET_STD)`` of uint8 RGB ``(..., 3)``
    frames, channels kept last: float32 ``(x / 255 - mean) / std``."""
    return ((frames.astype(np.float32) / 255.0) - IMAGENET_MEAN) / IMAGENET_STD
