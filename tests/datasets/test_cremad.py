"""CREMA-D loader on a miniature copy of the official layout (empty media files: nothing is decoded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clcr_cli.datasets import load_dataset, skipped_samples
from clcr_cli.datasets.base import DatasetOptions
from clcr_cli.errors import DataError

EMOTIONS = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
TRAIN_ACTORS = ("1001", "1002", "1003", "1004", "1005", "1011")
TEST_ACTORS = ("1010", "1020")


def clip_names() -> list[str]:
    return [
        f"{actor}_DFA_{emotion}_XX" for actor in TRAIN_ACTORS + TEST_ACTORS for emotion in EMOTIONS
    ]


def make_cremad(root: Path, clips: list[str]) -> Path:
    (root / "AudioWAV").mkdir(parents=True)
    (root / "VideoFlash").mkdir()
    for clip in clips:
        (root / "AudioWAV" / f"{clip}.wav").write_bytes(b"RIFF")
        (root / "VideoFlash" / f"{clip}.flv").write_bytes(b"FLV")
    return root


def write_crlf(path: Path, lines: list[str]) -> Path:
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return path


def test_labels_paths_and_speaker_independent_default_split(tmp_path):
    root = make_cremad(tmp_path / "CREMA-D", clip_names())
    dataset = load_dataset("cremad", DatasetOptions(root=root, seed=3))
    by_id = {s.id: s for s in dataset.samples}
    assert len(by_id) == len(clip_names())
    assert dataset.info.class_names == EMOTIONS and dataset.info.modalities == {
        "audio": "audio",
        "video": "video",
    }
    sample = by_id["1001_DFA_ANG_XX"]
    assert (
        sample.label == 5.0
        and by_id["1002_DFA_NEU_XX"].label == 0.0
        and by_id["1003_DFA_FEA_XX"].label == 3.0
    )
    assert sample.audio == root / "AudioWAV" / "1001_DFA_ANG_XX.wav"
    assert sample.video == root / "VideoFlash" / "1001_DFA_ANG_XX.flv"
    split_of_actor: dict[str, set[str]] = {}
    for s in dataset.samples:
        split_of_actor.setdefault(s.id[:4], set()).add(s.split)
    assert all(len(splits) == 1 for splits in split_of_actor.values())  # speaker-independent
    assert {a for a, s in split_of_actor.items() if s == {"test"}} == set(TEST_ACTORS)
    valid_actors = {a for a, s in split_of_actor.items() if s == {"valid"}}
    assert len(valid_actors) == 1 and valid_actors <= set(TRAIN_ACTORS)
    assert skipped_samples(dataset) == ()


def test_valid_split_is_seeded(tmp_path):
    root = make_cremad(tmp_path / "CREMA-D", clip_names())

    def valid_actors(seed: int) -> frozenset[str]:
        dataset = load_dataset("cremad", DatasetOptions(root=root, seed=seed))
        return frozenset(s.id[:4] for s in dataset.samples if s.split == "valid")

    assert valid_actors(0) == valid_actors(0)
    assert len({valid_actors(seed) for seed in range(8)}) > 1


def test_known_bad_and_unpaired_clips_are_skipped_with_reasons(tmp_path):
    root = make_cremad(tmp_path / "CREMA-D", [*clip_names(), "1076_MTI_SAD_XX"])
    (root / "AudioWAV" / "1002_IEO_HAP_HI.wav").write_bytes(b"RIFF")  # no .flv partner
    (root / "VideoFlash" / "1003_IEO_SAD_LO.flv").write_bytes(b"FLV")  # no .wav partner
    (root / "AudioWAV" / "notes.wav").write_bytes(b"RIFF")
    (root / "VideoFlash" / "notes.flv").write_bytes(b"FLV")
    dataset = load_dataset("cremad", DatasetOptions(root=root))
    reasons = dict(skipped_samples(dataset))
    assert set(reasons) == {"1076_MTI_SAD_XX", "1002_IEO_HAP_HI", "1003_IEO_SAD_LO", "notes"}
    assert "no audio" in reasons["1076_MTI_SAD_XX"]
    assert reasons["1002_IEO_HAP_HI"] == "no VideoFlash/1002_IEO_HAP_HI.flv"
    assert reasons["1003_IEO_SAD_LO"] == "no AudioWAV/1003_IEO_SAD_LO.wav"
    assert not set(reasons) & {s.id for s in dataset.samples}


def test_ogm_ge_split_files_with_and_without_header(tmp_path):
    clips = clip_names()
    root = make_cremad(tmp_path / "CREMA-D", [*clips, "1064_TIE_SAD_XX", "1005_ITS_HAP_XX"])
    test_clips = clips[:4]
    train_clips = [*clips[4:], "1064_TIE_SAD_XX"]
    split_dir = tmp_path / "splits"
    split_dir.mkdir()
    train_csv = write_crlf(split_dir / "train.csv", [f"{c},{c.split('_')[2]}" for c in train_clips])
    write_crlf(
        split_dir / "test.csv", ["name,label", *(f"{c},{c.split('_')[2]}" for c in test_clips)]
    )
    dataset = load_dataset("cremad", DatasetOptions(root=root, split_file=train_csv))
    splits = {s.id: s.split for s in dataset.samples}
    assert {c for c, s in splits.items() if s == "test"} == set(test_clips)
    assert {c for c, s in splits.items() if s != "test"} == set(clips[4:])
    assert {s for c, s in splits.items() if c[:4] in {"1001", "1002"} and c not in test_clips} <= {
        "train",
        "valid",
    }
    valid = {c[:4] for c, s in splits.items() if s == "valid"}
    assert valid and not valid & {c[:4] for c, s in splits.items() if s == "train"}
    reasons = dict(skipped_samples(dataset))
    assert "no duration" in reasons["1064_TIE_SAD_XX"]
    assert reasons["1005_ITS_HAP_XX"] == "not listed in train.csv or test.csv"


def test_split_file_naming_absent_clips_is_one_error(tmp_path):
    root = make_cremad(tmp_path / "CREMA-D", clip_names())
    train_csv = write_crlf(
        tmp_path / "train.csv",
        [f"{c},{c.split('_')[2]}" for c in clip_names()[4:]]
        + ["1090_DFA_ANG_XX,ANG", "1091_DFA_SAD_XX,SAD"],
    )
    write_crlf(tmp_path / "test.csv", [f"{c},{c.split('_')[2]}" for c in clip_names()[:4]])
    with pytest.raises(
        DataError,
        match=r"2 listed clip\(s\) are not usable on disk: 1090_DFA_ANG_XX \(no AudioWAV/1090_DFA_ANG_XX.wav\)",
    ) as err:
        load_dataset("cremad", DatasetOptions(root=root, split_file=train_csv))
    assert err.value.path == train_csv and "\n" not in str(err.value)


def test_split_file_label_mismatch_and_missing_test_csv(tmp_path):
    root = make_cremad(tmp_path / "CREMA-D", clip_names())
    train_csv = write_crlf(tmp_path / "train.csv", ["1001_DFA_ANG_XX,SAD"])
    write_crlf(tmp_path / "test.csv", ["1010_DFA_ANG_XX,ANG"])
    with pytest.raises(
        DataError, match="row 1: label SAD does not match the emotion in 1001_DFA_ANG_XX"
    ):
        load_dataset("cremad", DatasetOptions(root=root, split_file=train_csv))
    (tmp_path / "test.csv").unlink()
    write_crlf(train_csv, ["1001_DFA_ANG_XX,ANG"])
    with pytest.raises(DataError, match="test.csv: missing file"):
        load_dataset("cremad", DatasetOptions(root=root, split_file=train_csv))


def test_missing_and_empty_folders(tmp_path):
    root = tmp_path / "CREMA-D"
    root.mkdir()
    with pytest.raises(
        DataError,
        match=r"AudioWAV: missing folder: expected 7,442 CREMA-D clips as AudioWAV/<Actor>_<Sentence>_<Emotion>_<Level>\.wav",
    ):
        load_dataset("cremad", DatasetOptions(root=root))
    (root / "AudioWAV").mkdir()
    with pytest.raises(DataError, match=r"AudioWAV: no \*\.wav files \(expected 7,442"):
        load_dataset("cremad", DatasetOptions(root=root))
    with pytest.raises(DataError, match="root folder does not exist"):
        load_dataset("cremad", DatasetOptions(root=tmp_path / "absent"))


def write_dr_lists(folder: Path, clips: list[str]) -> dict[str, Path]:
    """Diagnosing & Re-learning's folder: OGM-GE's train.csv and test.csv (with a
    ``name,label`` header) and its carve of that train list, my_train.csv + val.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    test, train = clips[:6], clips[6:]
    val = train[::5]
    my_train = [c for c in train if c not in val]

    def rows(names: list[str]) -> list[str]:
        return ["name,label", *(f"{c},{c.split('_')[2]}" for c in names)]

    return {
        "train": write_crlf(folder / "train.csv", rows(train)),
        "test": write_crlf(folder / "test.csv", rows(test)),
        "my_train": write_crlf(folder / "my_train.csv", rows(my_train)),
        "val": write_crlf(folder / "val.csv", rows(val)),
        "names": {"test": set(test), "valid": set(val), "train": set(my_train)},
    }


def test_dr_val_csv_beside_the_train_list_is_the_valid_split(tmp_path):
    clips = clip_names()
    root = make_cremad(tmp_path / "CREMA-D", clips)
    lists = write_dr_lists(tmp_path / "cremad", clips)
    expected = lists["names"]
    for train_list in (lists["my_train"], lists["train"]):  # either gives the same splits
        for seed in (0, 5):  # nothing is carved, so the seed changes nothing
            dataset = load_dataset(
                "cremad", DatasetOptions(root=root, split_file=train_list, seed=seed)
            )
            got: dict[str, set[str]] = {"train": set(), "valid": set(), "test": set()}
            for s in dataset.samples:
                got[s.split].add(s.id)
            assert got == expected
            assert lists["val"] in dataset.sources
    assert skipped_samples(dataset) == ()


def test_dr_val_csv_errors_and_skips(tmp_path):
    clips = clip_names()
    root = make_cremad(tmp_path / "CREMA-D", [*clips, "1076_MTI_SAD_XX"])
    lists = write_dr_lists(tmp_path / "cremad", clips)
    write_crlf(lists["val"], ["name,label", "1076_MTI_SAD_XX,SAD", f"{clips[9]},{clips[9][9:12]}"])
    dataset = load_dataset("cremad", DatasetOptions(root=root, split_file=lists["my_train"]))
    assert {s.id for s in dataset.samples if s.split == "valid"} == {clips[9]}
    assert "no audio" in dict(skipped_samples(dataset))["1076_MTI_SAD_XX"]
    write_crlf(lists["val"], ["name,label", f"{clips[0]},{clips[0][9:12]}"])  # a test clip
    with pytest.raises(
        DataError, match=r"val.csv: 1 clip\(s\) are also in test.csv: 1001_DFA_NEU_XX"
    ):
        load_dataset("cremad", DatasetOptions(root=root, split_file=lists["my_train"]))
