"""Kinetics-Sounds loader on a miniature OGM-GE layout (CRLF lists, flat or per-class folders)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clcr_cli.datasets import load_dataset, skipped_samples
from clcr_cli.datasets.base import DatasetOptions
from clcr_cli.errors import DataError

CLASSES = ("playing bagpipes", "playing harmonica", "dog barking")
TRAIN = [(f"tr-{k}_Ab{k}_{10 * k:06d}_{10 * k + 10:06d}", k % 3) for k in range(12)]
TEST = [(f"te{k}xYz_{k:06d}_{k + 10:06d}", k % 3) for k in range(3)]


def write_lists(folder: Path, train=TRAIN, test=TEST) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, pairs in (("my_train.txt", train), ("my_test.txt", test)):
        (folder / name).write_bytes(
            "".join(f"{clip},10,{label}\r\n" for clip, label in pairs).encode()
        )
    return folder / "my_train.txt"


def test_flat_folder_numbers_as_class_names(tmp_path):
    root = tmp_path / "ks"
    write_lists(root)
    (root / "videos").mkdir()
    suffixes = (".mp4", ".mkv", ".webm", ".avi")
    for k, (clip, _) in enumerate(TRAIN + TEST):
        (root / "videos" / f"{clip}{suffixes[k % 4]}").write_bytes(b"\0")
    dataset = load_dataset("ks", DatasetOptions(root=root, seed=1))
    by_id = {s.id: s for s in dataset.samples}
    assert set(by_id) == {c for c, _ in TRAIN + TEST}
    assert dataset.info.class_names == ("0", "1", "2")
    assert dataset.info.modalities == {"audio": "audio", "video": "video"}
    clip, label = TRAIN[5]
    assert by_id[clip].label == float(label)
    assert by_id[clip].audio == by_id[clip].video == root / "videos" / f"{clip}.mkv"
    assert {c for c, s in by_id.items() if s.split == "test"} == {c for c, _ in TEST}
    assert sum(s.split == "valid" for s in dataset.samples) == 1  # round(10% of 12)
    assert skipped_samples(dataset) == ()


def test_class_folders_name_the_classes_and_missing_clips_are_skipped(tmp_path):
    root = tmp_path / "ks"
    train_list = write_lists(tmp_path / "lists")
    for split, pairs in (
        ("train", TRAIN[:-1]),
        ("test", TEST),
    ):  # the last train clip was never downloaded
        for clip, label in pairs:
            folder = root / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{clip}.mp4").write_bytes(b"\0")
    dataset = load_dataset("ks", DatasetOptions(root=root, split_file=train_list))
    assert dataset.info.class_names == CLASSES
    by_id = {s.id: s for s in dataset.samples}
    assert by_id[TEST[1][0]].video == root / "test" / CLASSES[1] / f"{TEST[1][0]}.mp4"
    missing = TRAIN[-1][0]
    assert missing not in by_id
    assert skipped_samples(dataset) == (
        (missing, f"no video file {missing}.mp4/.mkv/.webm/.avi under the root"),
    )


def test_layout_errors(tmp_path):
    root = tmp_path / "ks"
    root.mkdir()
    with pytest.raises(DataError, match="my_train.txt: missing file: expected an OGM-GE list"):
        load_dataset("ks", DatasetOptions(root=root))
    write_lists(root)
    with pytest.raises(DataError, match=r"none of the 12 clips of my_train.txt has a video file"):
        load_dataset("ks", DatasetOptions(root=root))
    (root / "my_test.txt").write_text("abc_000000_000010;10;1\n")
    with pytest.raises(
        DataError, match=r"my_test.txt: line 1 is not '<ytid>_<start6>_<end6>,10,<label>'"
    ):
        load_dataset("ks", DatasetOptions(root=root))


def test_ogm_ge_test_ids_of_the_ytid_n_form(tmp_path):
    """OGM-GE's real my_test.txt names its clips <ytid>_<n> (a running number, no times);
    its my_train.txt <ytid>_<start6>_<end6>. Both forms are ids, YouTube ids with '_' and
    '-' included, and the clip files are named after them."""
    train = [("a_B-c9dEfGh_000012_000022", 0), ("Zz-_-yx0Wv1_000000_000010", 1)] + [
        (f"q{k}W_e-rTyUi_{k:06d}_{k + 10:06d}", k % 2) for k in range(8)
    ]
    test = [("a_B-c9dEfGh_7", 0), ("-_Qw3rtyU1o_4008", 1), ("kLmN0pQ_sT_0", 1)]
    root = tmp_path / "ks"
    write_lists(root, train, test)
    for clip, _ in train + test:
        (root / f"{clip}.mp4").write_bytes(b"\0")
    dataset = load_dataset("ks", DatasetOptions(root=root))
    by_id = {s.id: s for s in dataset.samples}
    assert {c for c, s in by_id.items() if s.split == "test"} == {c for c, _ in test}
    assert by_id["-_Qw3rtyU1o_4008"].label == 1.0
    assert by_id["a_B-c9dEfGh_7"].video == root / "a_B-c9dEfGh_7.mp4"
    assert by_id["a_B-c9dEfGh_7"].split == "test"
    assert by_id["a_B-c9dEfGh_000012_000022"].split in ("train", "valid")
    assert skipped_samples(dataset) == ()
