"""Frame sampling from videos and images: values, order, time windows, bad files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from clcr_cli.errors import ConfigError, DataError
from clcr_cli.features import video
from clcr_cli.features.video import read_frames

N_FRAMES, FPS = 24, 8.0


def level(i: int) -> int:
    """Brightness of frame i in the test clip: a clear, strictly increasing ramp."""
    return 10 + 10 * i


@pytest.fixture(scope="module")
def ramp_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An mp4v clip whose frame i is a flat grey of level(i) with a red top-left block."""
    path = tmp_path_factory.mktemp("video") / "ramp.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (64, 48))
    for i in range(N_FRAMES):
        frame = np.full((48, 64, 3), level(i), np.uint8)
        frame[:16, :16] = (0, 0, 255)  # BGR red
        writer.write(frame)
    writer.release()
    return path


def frame_levels(frames: np.ndarray) -> np.ndarray:
    return frames[:, -8:, -8:].reshape(len(frames), -1).mean(axis=1)


def test_evenly_spaced_frames_in_order(ramp_clip: Path) -> None:
    frames = read_frames(ramp_clip, num_frames=4, size=32)
    assert frames.shape == (4, 32, 32, 3) and frames.dtype == np.uint8
    expected = [level(i) for i in np.round(np.linspace(0, N_FRAMES - 1, 4)).astype(int)]
    np.testing.assert_allclose(frame_levels(frames), expected, atol=4)
    red = frames[:, 2, 2].astype(int)  # RGB order: red block shows up in channel 0
    assert (red[:, 0] > 200).all() and (red[:, 2] < 60).all()


def test_fps_sampling_and_window(ramp_clip: Path) -> None:
    frames = read_frames(ramp_clip, num_frames=8, size=16, fps=2.0)  # every 4th frame
    np.testing.assert_allclose(
        frame_levels(frames), [level(i) for i in (0, 4, 8, 12, 16, 20)], atol=4
    )
    frames = read_frames(ramp_clip, num_frames=3, size=16, window=(1.0, 2.0))  # frames 8..15
    np.testing.assert_allclose(frame_levels(frames), [level(8), level(12), level(15)], atol=4)
    frames = read_frames(ramp_clip, num_frames=2, size=16, fps=4.0, window=(2.0, 5.0))  # capped
    np.testing.assert_allclose(frame_levels(frames), [level(16), level(18)], atol=4)
    with pytest.raises(DataError, match="no decodable frames in window"):
        read_frames(ramp_clip, window=(10.0, 11.0))


def test_short_clip_repeats_frames_to_num_frames(ramp_clip: Path) -> None:
    frames = read_frames(ramp_clip, num_frames=5, size=16, window=(0.0, 0.25))  # frames 0, 1
    np.testing.assert_allclose(frame_levels(frames), [level(i) for i in (0, 0, 0, 1, 1)], atol=4)


def test_wrong_header_count_is_corrected(ramp_clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A header that over- or under-states the frame count (as .flv often does) still
    gives frames spread over the true clip."""
    with video._capture(ramp_clip) as capture:
        native_fps, true_count = video._header(ramp_clip, capture)
    assert (native_fps, true_count) == (FPS, N_FRAMES)
    expected = [level(i) for i in np.round(np.linspace(0, N_FRAMES - 1, 3)).astype(int)]
    for fake_count in (0, 10, 100):
        monkeypatch.setattr(video, "_header", lambda path, capture, n=fake_count: (FPS, n))
        np.testing.assert_allclose(frame_levels(read_frames(ramp_clip, 3, 16)), expected, atol=4)


def test_image_gives_one_rgb_frame(tmp_path: Path) -> None:
    image = np.zeros((40, 60, 3), np.uint8)
    image[..., 0] = 200  # BGR blue
    cv2.imwrite(str(tmp_path / "still.png"), image)
    frames = read_frames(tmp_path / "still.png", num_frames=8, size=24)
    assert frames.shape == (1, 24, 24, 3)
    assert (frames[0, ..., 2] == 200).all() and (frames[0, ..., :2] == 0).all()


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_frames(tmp_path / "missing.mp4")
    (tmp_path / "garbage.mp4").write_bytes(b"\x00garbage" * 100)
    (tmp_path / "empty.avi").write_bytes(b"")
    (tmp_path / "garbage.jpg").write_bytes(b"not a jpeg")
    for name in ("garbage.mp4", "empty.avi", "garbage.jpg"):
        with pytest.raises(DataError, match=name):
            read_frames(tmp_path / name)
    with pytest.raises(ConfigError):
        read_frames(tmp_path / "garbage.mp4", num_frames=0)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width x height`` (the pixel data is never reached)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("suffix", "params"),
    [(".png", []), (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), (".bmp", [])],
)
def test_image_size_comes_from_the_header(tmp_path: Path, suffix: str, params: list[int]) -> None:
    path = tmp_path / f"still{suffix}"
    cv2.imwrite(str(path), np.full((40, 60, 3), 90, np.uint8), params)
    assert tuple(video.image_size(path)) == (60, 40)


def test_decompression_bomb_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(30000, 30000))

    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded a refused image")

    monkeypatch.setattr(video.cv2, "imread", no_decoding)
    with pytest.raises(DataError) as err:
        read_frames(bomb)
    assert str(err.value) == (
        f"{bomb}: 30000x30000 pixels is more than the 100,000,000 allowed; refused before decoding"
    )


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".mp4"])
def test_pixel_limit_holds_for_every_image_format_and_video_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ramp_clip: Path, suffix: str
) -> None:
    if suffix == ".mp4":
        path = ramp_clip  # 64 x 48 frames
    else:
        path = tmp_path / f"still{suffix}"
        cv2.imwrite(str(path), np.zeros((48, 64, 3), np.uint8))
    monkeypatch.setattr(video, "MAX_PIXELS", 64 * 48 - 1)
    monkeypatch.setattr(video, "_decode", lambda *args: pytest.fail("decoded a refused video"))
    with pytest.raises(
        DataError, match=rf"{path.name}: 64x48 pixels is more than the 3,071 allowed"
    ):
        read_frames(path)
    monkeypatch.setattr(video, "MAX_PIXELS", 64 * 48)
    if suffix != ".mp4":
        assert read_frames(path, size=8).shape == (1, 8, 8, 3)


def test_unknown_or_truncated_image_headers(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "real.jpg"), np.zeros((8, 8, 3), np.uint8))
    cases = {
        "gif.png": (b"GIF89a" + b"\0" * 40, "not a PNG, JPEG or BMP image (no size in its header)"),
        "cut.jpg": ((tmp_path / "real.jpg").read_bytes()[:30], "image header is truncated"),
        "cut.bmp": (b"BM" + b"\0" * 10, "image header is truncated"),
    }
    for name, (content, problem) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError) as err:
            read_frames(tmp_path / name)
        assert str(err.value) == f"{tmp_path / name}: {problem}"


def test_infinite_window_is_refused(ramp_clip: Path) -> None:
    with pytest.raises(DataError, match=r"ramp.mp4: bad time window \(1.0, inf\)"):
        read_frames(ramp_clip, window=(1.0, float("inf")))
