"""Video: a few RGB frames per clip, sampled in time and resized, as uint8 (T, S, S, 3).

Two samplings, as in the audio-visual literature (OGM-GE and successors):

- ``fps=None``: ``num_frames`` frames evenly spaced over the (windowed) clip, first and
  last frame included; a clip shorter than ``num_frames`` repeats frames, so T is
  always ``num_frames``;
- ``fps=r``: one frame every ``1/r`` seconds from the window's start, at most
  ``num_frames`` (T may be smaller for a short clip).

Frame ``i`` is taken to start at ``i / native_fps``. Decoding is sequential
(``grab`` every frame, ``retrieve`` only the chosen ones) instead of seeking: seeking
in OpenCV lands on key frames or drifts for .flv/.avi/VBR files, while sequential
grabbing is exact and costs little for clips of seconds. The frame count in a file's
header is only a plan: when it is missing or wrong (.flv often) the true count
learnt while decoding replaces it, and a second pass fetches the corrected frames.

Still images (.png/.jpg/.jpeg/.bmp) give a single frame. Resizing uses
``cv2.INTER_AREA`` straight to ``size x size`` (no crop). ``perturb(frame, index)``, when
given, changes each kept frame as decoded (BGR, native size) before it is resized: the
raw-signal noise of ``features/perturb.py``.

Decompression bombs: a picture of more than :data:`MAX_PIXELS` pixels is refused, as a
:class:`~clcr_cli.errors.DataError` naming the file, before anything is decoded. An
image's size comes from its header (PNG, JPEG or BMP, recognised by content as OpenCV
does; any other content is refused); a video's from the container as FFmpeg opens it
(opening may probe the first packets, but no frame is grabbed above the limit).
"""

from __future__ import annotations

import math
import struct
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from clcr_cli.errors import ConfigError, DataError
from clcr_cli.features.window import check_window

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
# pixels per image or video frame: 100 MP decodes to 300 MB of BGR (a 30000 x 30000 PNG of
# under 1 MB would take 2.7 GB); 8K video frames (33 MP) and most camera photos fit
MAX_PIXELS = 100_000_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (SOF0-SOF15 but DHT, JPG and DAC), which give the frame size
JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
Perturb = Callable[[np.ndarray, int], np.ndarray]  # (decoded BGR frame, its index) -> frame


def _to_rgb(frame_bgr: np.ndarray, size: int, index: int, perturb: Perturb | None) -> np.ndarray:
    if perturb is not None:
        frame_bgr = perturb(frame_bgr, index)
    resized = cv2.resize(frame_bgr, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)


def _check_pixels(path: Path, width: int, height: int) -> None:
    """A DataError naming ``path`` when a ``width x height`` picture exceeds MAX_PIXELS."""
    if width * height > MAX_PIXELS:
        raise DataError(
            path,
            f"{width}x{height} pixels is more than the {MAX_PIXELS:,} allowed; refused before decoding",
        )


def _jpeg_marker(f: BinaryIO) -> int:
    """The next JPEG marker code, skipping any bytes before its 0xFF and fill 0xFFs."""
    byte = f.read(1)
    while byte != b"\xff":
        if not byte:
            raise EOFError
        byte = f.read(1)
    while byte == b"\xff":
        byte = f.read(1)
    if not byte:
        raise EOFError
    return byte[0]


def _jpeg_size(f: BinaryIO) -> tuple[int, int] | None:
    """(width, height) from the first frame header, the file positioned after SOI."""
    while True:
        marker = _jpeg_marker(f)
        if marker in JPEG_FRAME_MARKERS:
            _length, _precision, height, width = struct.unpack(">HBHH", f.read(7))
            return width, height
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            continue
        (length,) = struct.unpack(">H", f.read(2))
        if length < 2:
            return None
        f.seek(length - 2, 1)


def _bmp_size(head: bytes) -> tuple[int, int]:
    (dib_size,) = struct.unpack("<I", head[14:18])
    if dib_size == 12:  # OS/2 BITMAPCOREHEADER: unsigned 16-bit sizes
        return struct.unpack("<HH", head[18:22])
    width, height = struct.unpack("<ii", head[18:26])
    return abs(width), abs(height)  # a negative height means rows stored top-down


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG, JPEG or BMP image, read from its header without decoding."""
    try:
        with Path(path).open("rb") as f:
            head = f.read(26)
            if head.startswith(PNG_SIGNATURE) and head[12:16] == b"IHDR":
                return struct.unpack(">II", head[16:24])
            if head.startswith(b"BM"):
                return _bmp_size(head)
            if head.startswith(b"\xff\xd8"):
                f.seek(2)
                found = _jpeg_size(f)
                if found is not None:
                    return found
    except (EOFError, struct.error):
        raise DataError(path, "image header is truncated") from None
    except OSError as error:
        raise DataError(path, f"cannot read image ({error.strerror})") from error
    raise DataError(path, "not a PNG, JPEG or BMP image (no size in its header)")


def _read_image(path: Path, size: int, perturb: Perturb | None) -> np.ndarray:
    _check_pixels(path, *image_size(path))
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(path, "cannot decode image")
    return _to_rgb(image, size, 0, perturb)[None]


def _frame_indices(
    n_frames: int,
    native_fps: float,
    num_frames: int,
    fps: float | None,
    window: tuple[float, float] | None,
) -> list[int]:
    """Indices of the frames to keep, in time order, for a clip of ``n_frames`` frames."""
    lo, hi = 0, n_frames
    if window is not None:
        lo = max(0, math.ceil(window[0] * native_fps - 1e-6))
        hi = min(n_frames, math.ceil(window[1] * native_fps - 1e-6))
    if hi <= lo:
        return []
    if fps is None:
        return [int(i) for i in np.round(np.linspace(lo, hi - 1, num_frames)).astype(int)]
    step = native_fps / fps
    return [i for i in (lo + round(k * step) for k in range(num_frames)) if i < hi]


@contextmanager
def _capture(path: Path) -> Iterator[cv2.VideoCapture]:
    """The video opened by FFmpeg, released on leaving (opening and releasing cost 1-2 ms
    each: a large share of a short clip, so one capture serves the header and a pass)."""
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not capture.isOpened():
            raise DataError(path, "cannot open video")
        yield capture
    finally:
        capture.release()


def _header(path: Path, capture: cv2.VideoCapture) -> tuple[float, int]:
    """The frame rate and frame count the container claims (either may be 0 or wrong).

    Refuses frames of more than MAX_PIXELS pixels before any is grabbed.
    """
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    _check_pixels(path, width, height)
    return capture.get(cv2.CAP_PROP_FPS), max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))


def _decode(
    capture: cv2.VideoCapture, wanted: list[int], size: int, read_to_end: bool, perturb: Perturb | None
) -> tuple[dict[int, np.ndarray], int | None]:
    """Grab frames in order from a capture at its first frame, retrieving those in ``wanted``.

    Returns the retrieved frames and the true frame count, known only if the stream
    ended before the last wanted frame or ``read_to_end`` asked to count all frames.
    """
    frames: dict[int, np.ndarray] = {}
    targets = set(wanted)
    last = max(wanted, default=-1)
    index = 0
    while index <= last or read_to_end:
        if not capture.grab():
            return frames, index
        if index in targets:
            ok, frame = capture.retrieve()
            if not ok:  # an undecodable frame ends the usable stream
                return frames, index
            frames[index] = _to_rgb(frame, size, index, perturb)
        index += 1
    return frames, None


def read_frames(
    path: Path,
    num_frames: int = 8,
    size: int = 112,
    fps: float | None = None,
    window: tuple[float, float] | None = None,
    perturb: Perturb | None = None,
) -> np.ndarray:
    """(T, size, size, 3) uint8 RGB frames of a video (or one frame of an image)."""
    path = Path(path)
    if num_frames < 1 or size < 1 or (fps is not None and fps <= 0):
        raise ConfigError(f"bad frame sampling: num_frames={num_frames}, size={size}, fps={fps}")
    if not path.is_file():
        raise DataError(path, "no such file")
    if window is not None:
        check_window(path, window)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _read_image(path, size, perturb)

    with _capture(path) as capture:  # the header and the first pass
        native_fps, header_count = _header(path, capture)
        if not (math.isfinite(native_fps) and native_fps > 0):
            if fps is not None or window is not None:
                raise DataError(path, "unknown frame rate: cannot sample by time")
            native_fps = 1.0  # only frame indices matter for evenly spaced sampling

        def plan(n_frames: int) -> list[int]:
            return _frame_indices(n_frames, native_fps, num_frames, fps, window)

        if fps is not None:  # times from the window's start: frames past the end are just absent
            wanted, true_count = plan(sys.maxsize), None
            frames, _ = _decode(capture, wanted, size, False, perturb)
        else:
            wanted = plan(header_count)
            # evenly spaced frames depend on the count when the window reaches the clip's end
            reaches_end = window is None or math.ceil(window[1] * native_fps - 1e-6) >= header_count
            frames, true_count = _decode(capture, wanted, size, reaches_end, perturb)
    if true_count is not None and true_count != header_count:  # the header was wrong
        wanted = plan(true_count)
        if not set(wanted) <= frames.keys():
            with _capture(path) as capture:
                frames, _ = _decode(capture, wanted, size, False, perturb)
    kept = [frames[i] for i in wanted if i in frames]
    if not kept:
        where = "" if window is None else f" in window {window}"
        raise DataError(path, f"no decodable frames{where}")
    return np.stack(kept)
