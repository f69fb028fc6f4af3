"""The CSV manifest loader: a user's own dataset under a new name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clcr_cli.datasets import load_dataset
from clcr_cli.datasets.base import DatasetOptions
from clcr_cli.datasets.manifest import group_fold
from clcr_cli.errors import ConfigError, DataError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", "\r\n").encode())
    return path


def media(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"\0")


def test_classification_with_image_text_and_relative_paths(tmp_path):
    folder = tmp_path / "mydata"
    media(
        folder,
        "a/1.wav",
        "a/2.wav",
        "a/3.wav",
        "a/4.wav",
        "img/1.png",
        "img/2.png",
        "img/3.png",
        "img/4.png",
    )
    write(folder / "notes" / "4.txt", "  read from a file \n")
    absolute = tmp_path / "elsewhere.wav"
    absolute.write_bytes(b"\0")
    manifest = write(
        folder / "manifest.csv",
        "ID,Split,Label,audio,image,text,speaker\n"
        's1,train,dog,a/1.wav,img/1.png,"a dog, barking",x\n'
        "s2,train,cat,a/2.wav,img/2.png,a cat,y\n"
        "s3,valid,dog,a/3.wav,img/3.png,another dog,x\n"
        f"s4,test,bird,{absolute},img/4.png,notes/4.txt,z\n",
    )
    dataset = load_dataset("pets", DatasetOptions(manifest=manifest))
    assert dataset.info.name == "pets" and dataset.info.target == "classification"
    assert dataset.info.class_names == ("bird", "cat", "dog")
    assert dataset.info.modalities == {"audio": "audio", "image": "video", "text": "text"}
    assert dataset.root == folder
    by_id = {s.id: s for s in dataset.samples}
    assert [by_id[i].label for i in ("s1", "s2", "s3", "s4")] == [2.0, 1.0, 2.0, 0.0]
    assert [by_id[i].split for i in ("s1", "s2", "s3", "s4")] == ["train", "train", "valid", "test"]
    assert (
        by_id["s1"].audio == folder / "a" / "1.wav"
        and by_id["s1"].video == folder / "img" / "1.png"
    )
    assert by_id["s1"].text == "a dog, barking" and by_id["s1"].text_file is None
    # a .txt cell is read at extract time, so that a bad file fails its sample alone
    assert by_id["s4"].text is None and by_id["s4"].text_file == folder / "notes" / "4.txt"
    assert by_id["s4"].audio == absolute


def test_integer_labels_sort_numerically_and_valid_is_carved(tmp_path):
    rows = "".join(f"r{k},{'test' if k < 3 else 'train'},{k % 12},clip{k}.mp4\n" for k in range(30))
    media(tmp_path, *(f"clip{k}.mp4" for k in range(30)))
    manifest = write(tmp_path / "m.csv", "id,split,label,video\n" + rows)
    dataset = load_dataset("counts", DatasetOptions(manifest=manifest, seed=4))
    assert dataset.info.class_names == tuple(str(k) for k in range(12))
    assert {s.id: s.label for s in dataset.samples}["r11"] == 11.0
    assert dataset.info.modalities == {"video": "video"}
    assert sum(s.split == "valid" for s in dataset.samples) == round(0.1 * 27)


def test_regression_inferred_or_requested(tmp_path):
    media(tmp_path, "1.wav", "2.wav", "3.wav")
    manifest = write(
        tmp_path / "m.csv",
        "id,split,label,audio\na,train,0.5,1.wav\nb,valid,-2,2.wav\nc,test,1,3.wav\n",
    )
    dataset = load_dataset("mood", DatasetOptions(manifest=manifest))
    assert dataset.info.target == "regression" and dataset.info.class_names == ()
    assert [s.label for s in dataset.samples] == [0.5, -2.0, 1.0]
    whole = write(
        tmp_path / "w.csv",
        "id,split,label,audio\na,train,1,1.wav\nb,valid,2,2.wav\nc,test,3,3.wav\n",
    )
    assert load_dataset("w", DatasetOptions(manifest=whole)).info.target == "classification"
    assert (
        load_dataset("w", DatasetOptions(manifest=whole, target="regression")).samples[2].label
        == 3.0
    )
    words = write(
        tmp_path / "x.csv",
        "id,split,label,audio\na,train,high,1.wav\nb,valid,2,2.wav\nc,test,3,3.wav\n",
    )
    with pytest.raises(DataError, match=r"x.csv: regression labels must be numbers: row 2 'high'"):
        load_dataset("x", DatasetOptions(manifest=words, target="regression"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,label,audio\na,1,1.wav\n", "missing column(s) split"),
        (
            "id,split,label,speaker\na,train,1,x\n",
            "no modality column; add one or more of audio, video, image, text",
        ),
        ("id,split,label,video,image\na,train,1,1.wav,1.wav\n", "has both video and image columns"),
        (
            "id,split,label,audio\na,train,1,1.wav\nb,dev,1,1.wav\n",
            "row 3: split 'dev' is not one of train, valid, test",
        ),
        ("id,split,label,audio\na,train,1,\n", "row 2: empty audio"),
        ("id,split,label,audio\n", "lists no samples"),
        (
            "id,split,label,audio\na,train,1,1.wav\na,valid,1,1.wav\nb,test,0,1.wav\nb,train,0,1.wav\n",
            "2 duplicate sample id(s): a, b",
        ),
        (
            "id,split,label,audio\n" + "".join(f"s{k},train,1,gone{k}.wav\n" for k in range(7)),
            "7 listed file(s) do not exist: gone0.wav, gone1.wav, gone2.wav, gone3.wav, gone4.wav, ...",
        ),
        ("id,split,label,audio\na,train,1,1.wav\nb,valid,0,1.wav\n", "no samples in split(s) test"),
        (  # a blank line still counts in the row numbers
            "id,split,label,audio\na,train,1,1.wav\n\nb,dev,1,1.wav\n",
            "row 4: split 'dev' is not one of train, valid, test",
        ),
        (
            "id,split,label,audio\na,train,0,1.wav\nb,train,1,1.wav\nc,valid,nan,1.wav\nd,test,1,1.wav\n",
            "row 4: label 'nan' is NaN or infinite (a missing value?); fill it in or drop the row",
        ),
        (
            "id,split,label,audio\na,train,0.5,1.wav\nb,valid,-inf,1.wav\nc,test,1,1.wav\n",
            "row 3: label '-inf' is NaN or infinite",
        ),
        (
            "id,split,label,audio\na,train,0,1.wav\nb,train,1,1.wav\nc,valid,NA,1.wav\nd,test,1,1.wav\n",
            "row 4: label 'NA' is not a number but other labels are; pass --target classification if it names a class",
        ),
        (
            "id,split,label,audio\na,train,dog,1.wav\nb,valid,dog,1.wav\nc,test,dog,1.wav\n",
            "all 3 samples have class 'dog'; classification needs at least two classes",
        ),
        (
            "id,split,label,audio\na,train,0.5,1.wav\nb,valid,0.5,1.wav\nc,test,0.5,1.wav\n",
            "all 3 samples have the label 0.5; regression needs at least two distinct values",
        ),
    ],
)
def test_manifest_errors_name_the_file(tmp_path, text, message):
    media(tmp_path, "1.wav")
    manifest = write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError) as err:
        load_dataset("mine", DatasetOptions(manifest=manifest))
    assert err.value.path == manifest and message in str(err.value) and "\n" not in str(err.value)


def test_target_option_is_checked_and_a_named_class_may_look_missing(tmp_path):
    media(tmp_path, "1.wav")
    manifest = write(
        tmp_path / "m.csv",
        "id,split,label,audio\na,train,0,1.wav\nb,valid,1,1.wav\nc,test,NA,1.wav\n",
    )
    with pytest.raises(ConfigError) as err:
        load_dataset("mine", DatasetOptions(manifest=manifest, target="clasification"))
    assert (
        str(err.value) == "--target: must be one of classification, regression, not 'clasification'"
    )
    dataset = load_dataset("mine", DatasetOptions(manifest=manifest, target="classification"))
    assert dataset.info.class_names == ("0", "1", "NA")
    with pytest.raises(ConfigError, match="--target is for --manifest datasets; 'cremad'"):
        load_dataset("cremad", DatasetOptions(root=tmp_path, target="regression"))


def grouped_manifest(folder: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    """A manifest of (id, split, label, group) rows, each with an audio file of its own."""
    media(folder, *(f"{i}.wav" for i, *_ in rows))
    lines = "".join(f"{i},{split},{label},{i}.wav,{group}\n" for i, split, label, group in rows)
    return write(folder / "m.csv", "id,split,label,audio,group\n" + lines)


def speakers_manifest(folder: Path) -> Path:
    """20 train speakers of 3 clips each, and a test speaker; no valid rows."""
    rows = [(f"{g}-{k}", "train", str(k % 2), g) for g in (f"spk{n:02d}" for n in range(20)) for k in range(3)]
    return grouped_manifest(folder, [*rows, ("t-0", "test", "0", "tst"), ("t-1", "test", "1", "tst")])


def test_group_column_carves_valid_by_group_so_no_group_is_in_train_and_valid(tmp_path):
    dataset = load_dataset("spk", DatasetOptions(manifest=speakers_manifest(tmp_path), seed=3))
    splits_of: dict[str, set[str]] = {}
    for s in dataset.samples:
        splits_of.setdefault(s.group, set()).add(s.split)
    assert all(len(splits) == 1 for splits in splits_of.values())  # a group is in one split
    valid_groups = {g for g, splits in splits_of.items() if splits == {"valid"}}
    assert len(valid_groups) == round(0.1 * 20)  # whole groups: 2 speakers, their 6 clips
    assert sum(s.split == "valid" for s in dataset.samples) == 6
    assert splits_of["tst"] == {"test"}
    # the file's order and every sample are kept; only the carved groups change split
    assert [s.id for s in dataset.samples][:3] == ["spk00-0", "spk00-1", "spk00-2"]
    assert len(dataset.samples) == 62


def test_group_column_with_valid_rows_keeps_the_given_splits(tmp_path):
    manifest = grouped_manifest(
        tmp_path,
        [("a", "train", "0", "x"), ("b", "train", "1", "x"), ("c", "valid", "0", "y"),
         ("d", "valid", "1", "y"), ("e", "test", "0", "x"), ("f", "test", "1", "z")],
    )
    dataset = load_dataset("g", DatasetOptions(manifest=manifest))
    assert [(s.id, s.split, s.group) for s in dataset.samples] == [
        ("a", "train", "x"), ("b", "train", "x"), ("c", "valid", "y"),
        ("d", "valid", "y"), ("e", "test", "x"), ("f", "test", "z"),
    ]  # the test split is the user's protocol: a train group may be tested on


def test_group_in_train_and_valid_rows_is_refused_in_one_line(tmp_path):
    manifest = grouped_manifest(
        tmp_path,
        [("a", "train", "0", "x"), ("b", "valid", "1", "y"), ("c", "train", "1", "z"),
         ("d", "valid", "0", "x"), ("e", "test", "0", "w")],
    )
    with pytest.raises(DataError) as err:
        load_dataset("g", DatasetOptions(manifest=manifest))
    assert err.value.path == manifest and "\n" not in str(err.value)
    assert (
        "row 5: group 'x' is in valid but also in train (row 2); "
        "a group must stay in one of train and valid" in str(err.value)
    )


def test_empty_group_cell_is_refused_naming_the_row(tmp_path):
    manifest = grouped_manifest(
        tmp_path, [("a", "train", "0", "x"), ("b", "train", "1", ""), ("c", "test", "0", "y")]
    )
    with pytest.raises(DataError, match=r"m.csv: row 3: empty group$"):
        load_dataset("g", DatasetOptions(manifest=manifest))


def test_group_carving_is_seeded_and_deterministic(tmp_path):
    manifest = speakers_manifest(tmp_path)

    def valid_groups(seed: int) -> set[str]:
        dataset = load_dataset("spk", DatasetOptions(manifest=manifest, seed=seed))
        return {s.group for s in dataset.samples if s.split == "valid"}

    assert valid_groups(0) == valid_groups(0) and valid_groups(7) == valid_groups(7)
    assert len({frozenset(valid_groups(seed)) for seed in range(6)}) > 1  # the seed chooses
    # the same rule as layout.carve_valid: groups sorted by name, permuted by the seed
    order = np.random.default_rng(5).permutation(20)
    assert valid_groups(5) == {f"spk{n:02d}" for n in order[:2]}


def test_without_group_column_samples_have_no_group(tmp_path):
    media(tmp_path, "1.wav")
    manifest = write(
        tmp_path / "m.csv",
        "id,split,label,audio,speaker\na,train,0,1.wav,x\nb,valid,1,1.wav,x\nc,test,1,1.wav,y\n",
    )
    assert [s.group for s in load_dataset("m", DatasetOptions(manifest=manifest)).samples] == [None] * 3


def test_group_fold_holds_out_one_group_as_valid_and_keeps_test_and_cells(tmp_path):
    manifest = grouped_manifest(
        tmp_path,
        [("a", "train", "0", "x"), ("b", "train", "1", "y"), ("c", "valid", "0", "z"),
         ("d", "valid", "1", "z"), ("e", "test", "0", "w"), ("f", "train", "1", "y")],
    )
    fold = group_fold(manifest, "y")
    assert fold == tmp_path / "m.valid-y.csv" and fold.parent == manifest.parent
    dataset = load_dataset("g", DatasetOptions(manifest=fold))
    assert [(s.id, s.split, s.group, s.label) for s in dataset.samples] == [
        ("a", "train", "x", 0), ("b", "valid", "y", 1), ("c", "train", "z", 0),
        ("d", "train", "z", 1), ("e", "test", "w", 0), ("f", "valid", "y", 1),
    ]  # y is the only valid group, the old valid group trains, test is untouched
    assert [s.audio for s in dataset.samples] == [tmp_path / f"{i}.wav" for i in "abcdef"]
    # the folds of every non-test group hold each sample out once, the test never
    valid_ids = [s.id for g in ("x", "y", "z")
                 for s in load_dataset("g", DatasetOptions(manifest=group_fold(manifest, g))).samples
                 if s.split == "valid"]
    assert sorted(valid_ids) == ["a", "b", "c", "d", "f"]


@pytest.mark.parametrize("group, message", [("w", "group 'w' is not in train or valid"),
                                            ("q", "group 'q' is not in train or valid")])
def test_group_fold_refuses_a_test_or_unknown_group_in_one_line(tmp_path, group, message):
    manifest = grouped_manifest(tmp_path, [("a", "train", "0", "x"), ("e", "test", "0", "w")])
    with pytest.raises(DataError, match=message) as err:
        group_fold(manifest, group)
    assert err.value.path == manifest and "\n" not in str(err.value)
    assert not (tmp_path / f"m.valid-{group}.csv").exists()


def test_group_fold_needs_a_group_column(tmp_path):
    media(tmp_path, "1.wav")
    manifest = write(tmp_path / "m.csv", "id,split,label,audio\n1,train,0,1.wav\n")
    with pytest.raises(DataError, match="no 'group' column"):
        group_fold(manifest, "x")
