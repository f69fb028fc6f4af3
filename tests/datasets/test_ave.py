"""AVE loader on a miniature AVE_Dataset layout (header in Annotations.txt, '&' fields, repeats)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clcr_cli.datasets import load_dataset, skipped_samples
from clcr_cli.datasets.base import DatasetOptions
from clcr_cli.errors import DataError

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
