"""Reading pre-extracted TV-L1 u/v JPEG folders as BalanceBenchmark's UCF101 loader does."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from clcr_cli.errors import DataError
from clcr_cli.features.flow_frames import flow_frame_numbers, read_flow_frames

H, W = 24, 32


def write_video_flow(root: Path, video: str, n: int) -> None:
    """<root>/u/<video>/frame%06d.jpg and <root>/v/<video>/...: flat images whose grey
    level encodes the frame number (u = 2k, v = 255 - 2k)."""
    for comp in ("u", "v"):
        folder = root / comp / video
        folder.mkdir(parents=True)
        for k in range(1, n + 1):
            level = 2 * k if comp == "u" else 255 - 2 * k
            assert cv2.imwrite(str(folder / f"frame{k:06d}.jpg"), np.full((H, W), level, np.uint8))


def levels(flow: np.ndarray) -> list[tuple[int, int]]:
    return [(round(float(f[..., 0].mean())), round(float(f[..., 1].mean()))) for f in flow]


def test_sampling_rule():
    assert flow_frame_numbers(150, 3) == [25, 75, 125]  # i * seg + max(seg // 2, 1)
    assert flow_frame_numbers(7, 3) == [1, 3, 5]
    assert flow_frame_numbers(2, 3) == [1, 1, 1]  # seg = 0
    rng = np.random.default_rng(0)
    for _ in range(50):
        ks = flow_frame_numbers(150, 3, rng)
        assert all(i * 50 + 1 <= k <= i * 50 + 50 for i, k in enumerate(ks))


def test_reads_u_and_v_at_the_sampled_frames(tmp_path):
    write_video_flow(tmp_path, "v_Test_g01_c01", 30)
    flow = read_flow_frames(tmp_path / "u" / "v_Test_g01_c01", num_frames=3, size=16)
    assert flow.shape == (3, 16, 16, 2) and flow.dtype == np.uint8
    assert levels(flow) == [(2 * k, 255 - 2 * k) for k in (5, 15, 25)]


def test_per_video_layout_and_explicit_v_folder(tmp_path):
    write_video_flow(tmp_path, "clip", 9)
    expected = levels(read_flow_frames(tmp_path / "u" / "clip", 3, 8))
    # a video folder holding u/ and v/
    video = tmp_path / "per_video"
    video.mkdir()
    (tmp_path / "u" / "clip").rename(video / "u")
    (tmp_path / "v" / "clip").rename(video / "v")
    assert levels(read_flow_frames(video, 3, 8)) == expected
    assert levels(read_flow_frames(video / "u", 3, 8, v_folder=video / "v")) == expected


def test_train_sampling_uses_the_rng(tmp_path):
    write_video_flow(tmp_path, "clip", 60)
    a = read_flow_frames(tmp_path / "u" / "clip", 3, 8, rng=np.random.default_rng(1))
    b = read_flow_frames(tmp_path / "u" / "clip", 3, 8, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    for i, (u, _) in enumerate(levels(a)):
        assert i * 20 + 1 <= u // 2 <= i * 20 + 20


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="no such flow folder"):
        read_flow_frames(tmp_path / "u" / "nothing", 3, 8)
    with pytest.raises(DataError, match="not a flow folder"):
        read_flow_frames(tmp_path, 3, 8)


def test_empty_folder(tmp_path):
    (tmp_path / "u" / "clip").mkdir(parents=True)
    (tmp_path / "v" / "clip").mkdir(parents=True)
    with pytest.raises(DataError, match="no .jpg files") as caught:
        read_flow_frames(tmp_path / "u" / "clip", 3, 8)
    assert caught.value.path == tmp_path / "u" / "clip"


def test_missing_v_folder(tmp_path):
    write_video_flow(tmp_path, "clip", 6)
    for f in (tmp_path / "v" / "clip").iterdir():
        f.unlink()
    (tmp_path / "v" / "clip").rmdir()
    with pytest.raises(DataError, match="no such flow folder"):
        read_flow_frames(tmp_path / "u" / "clip", 3, 8)


def test_undecodable_jpeg(tmp_path):
    write_video_flow(tmp_path, "clip", 6)
    bad = tmp_path / "v" / "clip" / "frame000003.jpg"  # frame 3 of 6 is sampled
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError) as caught:
        read_flow_frames(tmp_path / "u" / "clip", 3, 8)
    assert caught.value.path == bad


def test_missing_frame_file(tmp_path):
    write_video_flow(tmp_path, "clip", 6)
    (tmp_path / "v" / "clip" / "frame000005.jpg").unlink()
    with pytest.raises(DataError, match="flow image missing"):
        read_flow_frames(tmp_path / "u" / "clip", 3, 8)


def test_extract_reads_a_videos_tvl1_jpegs_with_flow_tvl1(tmp_path: Path):
    from clcr_cli.config import extract_config
    from clcr_cli.datasets.base import Sample
    from clcr_cli.errors import ClcrError
    from clcr_cli.features.featurize import Featurizer

    write_video_flow(tmp_path / "flow", "v_Jump_g01_c01", 100)
    sample = Sample("v_Jump_g01_c01", "train", 0.0, video=tmp_path / "UCF-101" / "Jump" / "v_Jump_g01_c01.avi")
    cfg = extract_config({}, {"dataset": "ucf101", "flow": "tvl1", "flow_root": str(tmp_path / "flow"),
                              "num_frames": 3, "frame_size": 16})
    part, failed = Featurizer({"flow": "flow"}, cfg, "cpu", tmp_path).part([sample])
    assert failed == [] and part.features["flow"][0].shape == (3, 16, 16, 2)
    assert levels(part.features["flow"][0]) == [(2 * k, 255 - 2 * k) for k in flow_frame_numbers(100, 3)]
    no_root = extract_config({}, {"dataset": "ucf101", "flow": "tvl1"})
    with pytest.raises(ClcrError, match="--flow tvl1 needs --flow-root"):
        Featurizer({"flow": "flow"}, no_root, "cpu", tmp_path).part([sample])
