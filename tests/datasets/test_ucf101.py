"""UCF101 loader on a miniature official layout (ucfTrainTestlist with CRLF, UCF-101/<Class>/*.avi)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clcr_cli.datasets import load_dataset
from clcr_cli.datasets.base import DatasetOptions
from clcr_cli.errors import ConfigError, DataError

CLASSES = ("ApplyEyeMakeup", "Basketball", "HandstandPushups")
FILE_CLASS = {"HandstandPushups": "HandStandPushups"}  # the release's own spelling in file names


def clip(action: str, group: int, index: int) -> str:
    return f"{action}/v_{FILE_CLASS.get(action, action)}_g{group:02d}_c{index:02d}.avi"


def crlf(path: Path, lines: list[str]) -> None:
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())


def make_ucf(root: Path, fold: int = 1) -> tuple[list[str], list[str]]:
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    crlf(lists / "classInd.txt", [f"{k + 1} {name}" for k, name in enumerate(CLASSES)])
    train = [clip(a, g, c) for a in CLASSES for g in range(8, 12) for c in (1, 2)]
    test = [clip(a, g, 1) for a in CLASSES for g in (1, 2)]
    crlf(
        lists / f"trainlist0{fold}.txt",
        [f"{p} {CLASSES.index(p.split('/')[0]) + 1}" for p in train],
    )
    crlf(lists / f"testlist0{fold}.txt", test)
    for relpath in train + test:
        path = root / "UCF-101" / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"RIFF")
    return train, test


def test_split_one_labels_groups_and_modalities(tmp_path):
    root = tmp_path / "UCF101"
    train, test = make_ucf(root)
    dataset = load_dataset("ucf101", DatasetOptions(root=root, seed=2))
    assert dataset.info.class_names == CLASSES
    assert dataset.info.modalities == {"video": "video", "flow": "flow"}
    by_id = {s.id: s for s in dataset.samples}
    assert len(by_id) == len(train) + len(test)
    sample = by_id["v_HandStandPushups_g09_c02"]
    assert sample.label == 2.0 and sample.audio is None
    assert sample.video == root / "UCF-101" / "HandstandPushups" / "v_HandStandPushups_g09_c02.avi"
    assert {i for i, s in by_id.items() if s.split == "test"} == {Path(p).stem for p in test}
    groups: dict[str, set[str]] = {}
    for s in dataset.samples:
        groups.setdefault(s.id.rsplit("_c", 1)[0], set()).add(s.split)
    assert all(len(splits) == 1 for splits in groups.values())  # a source video stays in one split
    assert (
        sum(splits == {"valid"} for splits in groups.values()) == 1
    )  # round(10% of 12 train groups)


def test_other_folds_and_bad_fold(tmp_path):
    root = tmp_path / "UCF101"
    make_ucf(root, fold=3)
    assert len(load_dataset("ucf101", DatasetOptions(root=root, fold=3)).samples) == 30
    with pytest.raises(DataError, match="trainlist01.txt: missing file"):
        load_dataset("ucf101", DatasetOptions(root=root, fold=1))
    with pytest.raises(ConfigError, match="official splits 1, 2 and 3, not --fold 4"):
        load_dataset("ucf101", DatasetOptions(root=root, fold=4))


def test_layout_errors(tmp_path):
    root = tmp_path / "UCF101"
    root.mkdir()
    with pytest.raises(DataError, match="ucfTrainTestlist: missing folder"):
        load_dataset("ucf101", DatasetOptions(root=root))
    train, test = make_ucf(tmp_path / "full")
    for relpath in test[:3]:
        (tmp_path / "full" / "UCF-101" / relpath).unlink()
    with pytest.raises(
        DataError,
        match=r"3 clip\(s\) named in the split 1 lists are missing: ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
    ):
        load_dataset("ucf101", DatasetOptions(root=tmp_path / "full"))
    crlf(tmp_path / "full" / "ucfTrainTestlist" / "trainlist01.txt", [f"{train[0]} 3"])
    with pytest.raises(DataError, match="line 1: label 3 is not ApplyEyeMakeup's index 1"):
        load_dataset("ucf101", DatasetOptions(root=tmp_path / "full"))
