"""AVE loader on a miniature AVE_Dataset layout (header in Annotations.txt, '&' fields, repeats)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clcr_cli.datasets import load_dataset, skipped_samples
from clcr_cli.datasets.base import DatasetOptions
from clcr_cli.errors import ConfigError, DataError

HEADER = "Category&VideoID&Quality&StartTime&EndTime"
TRAIN = [
    "Church bell&RUhOCu3LNXM&good&0&10",
    "Male speech, man speaking&MdGwwgmYVHk&good&3&9",
    "Bark&-SpHw8-cyJM&good&0&4",
    "Bark&-SpHw8-cyJM&good&6&10",  # a second event in the same video
    "Church bell&9Jm3ZgPs3dA&good&1&7",
    "Church bell&9Jm3ZgPs3dA&good&1&7",  # an exact repeat
]
VALID = ["Male speech, man speaking&h4HnuVGfqAU&good&2&8"]
TEST = ["Bark&zT0jXyjvO1g&good&0&10", "Church bell&b2MT2NwDKRc&good&5&10"]


def make_ave(root: Path, video_ids: set[str] | None = None) -> Path:
    root.mkdir(parents=True)
    annotations = [HEADER, *TRAIN, *VALID, *TEST]
    (root / "Annotations.txt").write_bytes("\r\n".join(annotations).encode())
    for name, lines in (("trainSet.txt", TRAIN), ("valSet.txt", VALID), ("testSet.txt", TEST)):
        (root / name).write_bytes(("\r\n".join(lines) + "\r\n").encode())
    (root / "AVE").mkdir()
    all_ids = {line.split("&")[1] for line in TRAIN + VALID + TEST}
    for video_id in all_ids if video_ids is None else video_ids:
        (root / "AVE" / f"{video_id}.mp4").write_bytes(b"\0")
    return root


def test_events_windows_classes_and_repeats(tmp_path):
    root = make_ave(tmp_path / "AVE_Dataset")
    dataset = load_dataset("ave", DatasetOptions(root=root))
    assert dataset.info.class_names == ("Church bell", "Male speech, man speaking", "Bark")
    by_id = {s.id: s for s in dataset.samples}
    assert set(by_id) == {
        "RUhOCu3LNXM",
        "MdGwwgmYVHk",
        "-SpHw8-cyJM_0_4",
        "-SpHw8-cyJM_6_10",
        "9Jm3ZgPs3dA",
        "h4HnuVGfqAU",
        "zT0jXyjvO1g",
        "b2MT2NwDKRc",
    }
    speech = by_id["MdGwwgmYVHk"]
    assert speech.label == 1.0 and speech.window == (3.0, 9.0) and speech.split == "train"
    assert speech.audio == speech.video == root / "AVE" / "MdGwwgmYVHk.mp4"
    assert (
        by_id["-SpHw8-cyJM_6_10"].window == (6.0, 10.0) and by_id["-SpHw8-cyJM_6_10"].label == 2.0
    )
    assert by_id["h4HnuVGfqAU"].split == "valid" and by_id["b2MT2NwDKRc"].split == "test"
    assert skipped_samples(dataset) == (
        ("9Jm3ZgPs3dA", "trainSet.txt line 6 repeats trainSet.txt line 5"),
    )


def test_missing_videos_and_unknown_category(tmp_path):
    root = make_ave(tmp_path / "AVE_Dataset", video_ids={"RUhOCu3LNXM"})
    with pytest.raises(
        DataError,
        match=r"AVE: 6 of the listed videos are missing: -SpHw8-cyJM.mp4, 9Jm3ZgPs3dA.mp4",
    ):
        load_dataset("ave", DatasetOptions(root=root))
    (root / "testSet.txt").write_text("Goat&zT0jXyjvO1g&good&0&10\n")
    with pytest.raises(
        DataError, match="testSet.txt: line 1: category 'Goat' is not in Annotations.txt"
    ):
        load_dataset("ave", DatasetOptions(root=root))


def test_layout_errors(tmp_path):
    root = make_ave(tmp_path / "AVE_Dataset")
    (root / "valSet.txt").write_text("Bark&abc&good&zero&10\n")
    with pytest.raises(
        DataError, match="valSet.txt: line 1 is not 'Category&VideoID&Quality&StartTime&EndTime'"
    ):
        load_dataset("ave", DatasetOptions(root=root))
    (root / "valSet.txt").write_text("Bark&abc&good&2&inf\n")
    with pytest.raises(
        DataError,
        match=r"valSet.txt: line 1 has an empty field or a window that is not 0 <= start < end \(finite\)",
    ):
        load_dataset("ave", DatasetOptions(root=root))
    (root / "Annotations.txt").unlink()
    with pytest.raises(DataError, match="Annotations.txt: missing file"):
        load_dataset("ave", DatasetOptions(root=root))


def test_the_peers_reading_one_sample_per_whole_video(tmp_path):
    """PMR's and ARL's AVEDataset.py: a whole video per sample, the first listing of a
    video in a split kept, classes in order of first appearance in testSet.txt."""
    root = make_ave(tmp_path / "AVE_Dataset")
    # a video listed again with another category (as 27 official train ids are), and a
    # train video that is in test too (as 8 official ids are)
    with (root / "trainSet.txt").open("ab") as f:
        f.write(b"Church bell&-SpHw8-cyJM&good&2&5\r\nBark&b2MT2NwDKRc&good&0&10\r\n")
    dataset = load_dataset("ave", DatasetOptions(root=root, ave_reading="video"))
    # testSet.txt names Bark first, then Church bell; Male speech only in train and val
    assert dataset.info.class_names == ("Bark", "Church bell", "Male speech, man speaking")
    by_id = {s.id: s for s in dataset.samples}
    assert set(by_id) == {
        "RUhOCu3LNXM",
        "MdGwwgmYVHk",
        "-SpHw8-cyJM",
        "9Jm3ZgPs3dA",
        "b2MT2NwDKRc",
        "h4HnuVGfqAU",
        "zT0jXyjvO1g",
        "b2MT2NwDKRc_test",
    }
    assert all(s.window is None for s in dataset.samples)  # the whole clip
    bark = by_id[
        "-SpHw8-cyJM"
    ]  # first listing: Bark 0-4; its Bark 6-10 and Church bell lines dropped
    assert bark.label == 0.0 and bark.split == "train"
    assert bark.audio == bark.video == root / "AVE" / "-SpHw8-cyJM.mp4"
    assert by_id["MdGwwgmYVHk"].label == 2.0 and by_id["h4HnuVGfqAU"].split == "valid"
    assert by_id["b2MT2NwDKRc"].split == "train" and by_id["b2MT2NwDKRc"].label == 0.0
    leaked = by_id["b2MT2NwDKRc_test"]
    assert (
        leaked.split == "test"
        and leaked.label == 1.0
        and leaked.video == by_id["b2MT2NwDKRc"].video
    )
    reasons = skipped_samples(dataset)
    assert [video for video, _ in reasons] == ["-SpHw8-cyJM", "9Jm3ZgPs3dA", "-SpHw8-cyJM"]
    assert reasons[0][1] == (
        "trainSet.txt line 4 lists the video again (line 3 gives its label, as the peers keep the first)"
    )
    # the default reading is clcr's, one sample per event
    assert load_dataset("ave", DatasetOptions(root=root)).samples[0].window == (0.0, 10.0)


def test_unknown_reading(tmp_path):
    root = make_ave(tmp_path / "AVE_Dataset")
    with pytest.raises(ConfigError, match="AVE readings are event and video, not 'clip'"):
        load_dataset("ave", DatasetOptions(root=root, ave_reading="clip"))
