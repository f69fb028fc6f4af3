"""Pre-extracted TV-L1 optical flow, read as BalanceBenchmark reads UCF101's.

Layout and sampling, from GeWu-Lab/BalanceBenchmark ``balancemm/datasets/ucf101_dataset.py``:

- two trees, ``flow_path_u`` and ``flow_path_v`` (lines 37-38), with one folder per video
  named like the video (``v_ApplyEyeMakeup_g01_c01``; line 53 keeps a video only when its
  RGB, u and v folders all exist): the u (horizontal) and the v (vertical) component of
  each frame pair, as 8-bit grey JPEGs ``frame000001.jpg``, ``frame000002.jpg``, ...
  (line 134: ``'frame00' + str(k).zfill(4) + '.jpg'``, numbered from 1). This is the
  layout of the widely shared UCF101 TV-L1 set (``tvl1_flow/{u,v}/<video>/frame%06d.jpg``),
  127-128 meaning no motion;
- 3 flow frames per video (line 124): with ``n`` = the number of files in the video's u
  folder (line 123) and ``seg = n // 3``, test frame ``i`` is number
  ``i * seg + max(seg // 2, 1)`` and a train frame is drawn uniformly from
  ``i * seg + 1 .. i * seg + seg`` (lines 128-132);
- u and v are opened as PIL grey images, each ``Resize((224, 224))``-ed, and concatenated
  as 2 channels, u first (lines 136-138); ``ToTensor`` makes them [0, 1] floats and no
  normalisation follows by default (``a_norm=False``, lines 26, 98-99). In train both
  get ``RandomHorizontalFlip`` independently (lines 79-83), u not negated: not done here.
  The flow encoder is a ResNet18 whose first conv takes 2 channels
  (``balancemm/encoders/resnet18_encoder.py`` lines 81-82), applied to each of the T
  flow frames (lines 137-139).
- Its RGB frames, for the record (lines 106-119): 3 of ``frame_0000{k}.jpg`` assuming 6
  per video (``file_num = 6``): test k = 1, 3, 5, train k drawn from {1, 2}, {3, 4}, {5, 6};
  ``Resize((224, 224))`` (+ flip in train), ImageNet-normalised.

We count only the ``.jpg`` files of the u folder (BalanceBenchmark's ``os.listdir``
counts everything; the same on a clean tree). With fewer files than frames asked
(``seg = 0``) the test formula still names frame 1 for each, and a train draw would
fail in BalanceBenchmark (``random.randint(1, 0)``): we use the test frames then.
Resizing: ``cv2.INTER_AREA`` when shrinking, ``cv2.INTER_LINEAR`` when enlarging, the
nearest OpenCV match to PIL's antialiased bilinear ``Resize`` (UCF101's flow JPEGs are
320 x 240, shrunk to 224 x 224).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from clcr_cli.errors import ConfigError, DataError
from clcr_cli.features.video import MAX_PIXELS, image_size

FLOW_NAME = "frame{:06d}.jpg"


def flow_frame_numbers(
    n_files: int, num_frames: int, rng: np.random.Generator | None = None
) -> list[int]:
    """1-based file numbers of the sampled flow frames (BalanceBenchmark's rule).

    ``rng=None``: the test frames ``i * seg + max(seg // 2, 1)``; else train frames drawn
    uniformly from ``i * seg + 1 .. (i + 1) * seg``.
    """
    seg = n_files // num_frames
    if rng is None or seg == 0:
        return [i * seg + max(seg // 2, 1) for i in range(num_frames)]
    return [int(rng.integers(i * seg + 1, i * seg + seg + 1)) for i in range(num_frames)]


def flow_folders(folder: Path, v_folder: Path | None = None) -> tuple[Path, Path]:
    """The (u, v) folders of one video.

    ``folder`` may be a video's folder holding ``u/`` and ``v/``, or BalanceBenchmark's
    ``<root>/u/<video>`` (its v folder then being ``<root>/v/<video>``); ``v_folder``
    names the v folder explicitly.
    """
    folder = Path(folder)
    if v_folder is not None:
        return folder, Path(v_folder)
    if (folder / "u").is_dir() or (folder / "v").is_dir():
        return folder / "u", folder / "v"
    if folder.parent.name == "u":
        return folder, folder.parent.parent / "v" / folder.name
    raise DataError(
        folder, "not a flow folder: expected u/ and v/ inside it, or a <root>/u/<video> folder"
    )


def _count_jpegs(folder: Path) -> int:
    if not folder.is_dir():
        raise DataError(folder, "no such flow folder")
    try:
        n = sum(1 for p in folder.iterdir() if p.suffix.lower() == ".jpg")
    except OSError as error:
        raise DataError(folder, f"cannot list flow folder ({error.strerror})") from error
    if n == 0:
        raise DataError(folder, "flow folder holds no .jpg files")
    return n


def _read_component(path: Path, size: int) -> np.ndarray:
    if not path.is_file():
        raise DataError(path, "flow image missing")
    width, height = image_size(path)
    if width * height > MAX_PIXELS:
        raise DataError(path, f"{width}x{height} pixels is more than the {MAX_PIXELS:,} allowed")
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise DataError(path, "cannot decode flow image")
    shrink = size < image.shape[0] or size < image.shape[1]
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def read_flow_frames(
    folder: Path,
    num_frames: int = 3,
    size: int = 224,
    *,
    v_folder: Path | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """(T, size, size, 2) uint8 flow of one video: channel 0 = u, channel 1 = v, as stored.

    ``folder`` and ``v_folder``: see :func:`flow_folders`. Frames are sampled by
    :func:`flow_frame_numbers` from the count of the u folder's JPEGs (the test frames
    unless ``rng`` is given). A missing or empty folder, a missing file or an
    undecodable JPEG is a :class:`~clcr_cli.errors.DataError` naming it.
    """
    if num_frames < 1 or size < 1:
        raise ConfigError(f"bad flow sampling: num_frames={num_frames}, size={size}")
    u_dir, v_dir = flow_folders(folder, v_folder)
    n_files = _count_jpegs(u_dir)
    if not v_dir.is_dir():
        raise DataError(v_dir, "no such flow folder")
    out = np.empty((num_frames, size, size, 2), dtype=np.uint8)
    for t, k in enumerate(flow_frame_numbers(n_files, num_frames, rng)):
        name = FLOW_NAME.format(k)
        out[t, ..., 0] = _read_component(u_dir / name, size)
        out[t, ..., 1] = _read_component(v_dir / name, size)
    return out
