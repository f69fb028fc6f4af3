"""MOSI/MOSEI loaders on miniature MMSA pickles and an MMSA-FET raw layout."""

from __future__ import annotations

import csv
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clcr_cli.datasets import load_dataset
from clcr_cli.datasets.base import DatasetOptions
from clcr_cli.errors import DataError

SIZES = {"train": 5, "valid": 2, "test": 3}
T_AUDIO, F_AUDIO, T_VISION, F_VISION = 12, 5, 16, 20  # MOSI's feature widths, short sequences


def mmsa_split(split: str, n: int, rng: np.random.Generator, aligned: bool) -> dict:
    audio = rng.normal(size=(n, T_AUDIO, F_AUDIO)).astype(np.float32)
    audio[0, 1, 2] = -np.inf  # MMSA's audio holds -inf
    part = {
        "raw_text": [f"{split} sentence {i}" for i in range(n)],
        "audio": audio,
        "vision": rng.normal(size=(n, T_VISION, F_VISION)).astype(np.float32),
        "id": np.array([f"{split}Vid{i // 2}$_${i}" for i in range(n)], dtype=object),
        "text": np.zeros((n, 50, 8), np.float32),
        "text_bert": np.zeros((n, 3, 50), np.float32),
        "annotations": ["Positive"] * n,
        "classification_labels": np.ones(n, np.float32),
        "regression_labels": np.linspace(-3, 3, n).astype(np.float32),
    }
    if not aligned:
        part["audio_lengths"] = [T_AUDIO] + [
            int(x) for x in rng.integers(1, T_AUDIO + 1, size=n - 1)
        ]
        part["vision_lengths"] = rng.integers(0, T_VISION + 1, size=n)
        part["vision_lengths"][0] = 0
    return part


def write_pickle(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(data, f, protocol=4)
    return path


def make_mmsa(seed: int = 0, aligned: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    return {split: mmsa_split(split, n, rng, aligned) for split, n in SIZES.items()}


def test_unaligned_pickle_ids_labels_lengths_and_inf(tmp_path):
    data = make_mmsa()
    write_pickle(tmp_path / "MOSI" / "Processed" / "unaligned_50.pkl", data)
    dataset = load_dataset("mosi", DatasetOptions(root=tmp_path / "MOSI"))
    assert dataset.info.target == "regression" and dataset.info.class_names == ()
    assert dataset.info.modalities == {"text": "text", "audio": "array", "video": "array"}
    assert [s.split for s in dataset.samples] == ["train"] * 5 + ["valid"] * 2 + ["test"] * 3
    for split in SIZES:
        part = data[split]
        samples = [s for s in dataset.samples if s.split == split]
        assert [s.id for s in samples] == list(part["id"])
        assert [s.text for s in samples] == part["raw_text"]
        np.testing.assert_allclose([s.label for s in samples], part["regression_labels"])
        for i, s in enumerate(samples):
            a_len, v_len = part["audio_lengths"][i], max(1, int(part["vision_lengths"][i]))
            assert (
                s.arrays["audio"].shape == (a_len, F_AUDIO)
                and s.arrays["audio"].dtype == np.float32
            )
            assert (
                s.arrays["video"].shape == (v_len, F_VISION)
                and s.arrays["video"].dtype == np.float32
            )
            assert np.isfinite(s.arrays["audio"]).all()
            expected = np.where(np.isfinite(part["audio"][i, :a_len]), part["audio"][i, :a_len], 0)
            np.testing.assert_array_equal(s.arrays["audio"], expected)
            np.testing.assert_array_equal(s.arrays["video"], part["vision"][i, :v_len])
    assert dataset.samples[0].arrays["audio"][1, 2] == 0.0  # the -inf became 0


def test_aligned_pickle_beside_root_uses_full_length(tmp_path):
    write_pickle(tmp_path / "MOSEI" / "unaligned_50.pkl", make_mmsa(seed=1))
    write_pickle(tmp_path / "MOSEI" / "aligned_50.pkl", make_mmsa(seed=2, aligned=True))
    dataset = load_dataset("mosei", DatasetOptions(root=tmp_path / "MOSEI", aligned=True))
    assert dataset.info.name == "mosei"
    assert all(s.arrays["audio"].shape == (T_AUDIO, F_AUDIO) for s in dataset.samples)
    assert all(s.arrays["video"].shape == (T_VISION, F_VISION) for s in dataset.samples)
    unaligned = load_dataset("mosei", DatasetOptions(root=tmp_path / "MOSEI"))
    assert any(s.arrays["audio"].shape[0] < T_AUDIO for s in unaligned.samples)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (
            lambda d: d["valid"].pop("regression_labels"),
            "split 'valid' has no key 'regression_labels'",
        ),
        (lambda d: d.pop("test"), "top-level key 'test' is missing, expected a dict of arrays"),
        (
            lambda d: d["train"].update(audio=[[0.0]]),
            r"'train/audio' is a list, expected a numeric \(N, T, F\) array",
        ),
        (
            lambda d: d["train"].update(raw_text=["a"]),
            "'train/raw_text' must be 5 strings, found list",
        ),
        (
            lambda d: d["train"].update(audio_lengths=[T_AUDIO + 1] * 5),
            r"'train/audio_lengths' has values outside 0..12",
        ),
    ],
)
def test_bad_pickle_content_is_one_data_error(tmp_path, corrupt, message):
    data = make_mmsa()
    corrupt(data)
    path = write_pickle(tmp_path / "MOSI" / "Processed" / "unaligned_50.pkl", data)
    with pytest.raises(DataError, match=message) as err:
        load_dataset("mosi", DatasetOptions(root=tmp_path / "MOSI"))
    assert err.value.path == path and "\n" not in str(err.value)


class RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    data = make_mmsa()
    data["train"]["annotations"] = RunsShell(marker)
    path = write_pickle(tmp_path / "MOSI" / "Processed" / "unaligned_50.pkl", data)
    with pytest.raises(
        DataError, match=r"refused to unpickle global '(posix|os|nt)\.system'"
    ) as err:
        load_dataset("mosi", DatasetOptions(root=tmp_path / "MOSI"))
    assert err.value.path == path
    assert not marker.exists()


class HugeArray:
    """Pickles as numpy's header of an int8 array of 10^9 x 10^4 elements, without data."""

    def __reduce__(self):
        try:
            from numpy._core.multiarray import _reconstruct
        except ImportError:
            from numpy.core.multiarray import _reconstruct
        return (_reconstruct, (np.ndarray, (10**9, 10**4), b"b"))


def test_a_small_pickle_declaring_a_huge_array_is_one_line(tmp_path):
    """A few hundred bytes whose array declares 9.09 TiB (numpy: _ArrayMemoryError and a
    traceback): one line naming the file and the shape, exit 2, nothing allocated."""
    root = tmp_path / "MOSI"
    path = write_pickle(root / "Processed" / "unaligned_50.pkl", {"train": {"audio": HugeArray()}})
    size = path.stat().st_size
    expected = (f"{path}: an array declares shape (1000000000, 10000) of int8 (9.09 TiB), "
                f"more than the {size:,}-byte file holds: refused before allocating it")
    with pytest.raises(DataError) as err:
        load_dataset("mosi", DatasetOptions(root=root))
    assert str(err.value) == expected and err.value.path == path
    result = subprocess.run(
        [sys.executable, "-m", "clcr_cli", "extract", "--dataset", "mosi", "--root", str(root),
         "--workdir", str(tmp_path / "wd")], capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr == f"error: {expected}\n"


def write_label_csv(root: Path, rows: list[dict]) -> None:
    columns = [
        "video_id",
        "clip_id",
        "text",
        "label",
        "label_T",
        "label_A",
        "label_V",
        "annotation",
        "mode",
    ]
    with (root / "label.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({**{c: "" for c in columns}, **row} for row in rows)


def make_raw(root: Path) -> list[dict]:
    rows = [
        {
            "video_id": "03bSnISJMiM",
            "clip_id": "1",
            "text": "a lot of sad parts, really",
            "label": "-1.4",
            "mode": "train",
        },
        {
            "video_id": "03bSnISJMiM",
            "clip_id": "2",
            "text": "but it was good",
            "label": "2.0",
            "mode": "train",
        },
        {
            "video_id": "0h-zjBukYpk",
            "clip_id": "11",
            "text": "i loved it",
            "label": "2.8",
            "mode": "valid",
        },
        {"video_id": "1DmNV9C1hbY", "clip_id": "3", "text": "meh", "label": "0.0", "mode": "test"},
    ]
    root.mkdir(parents=True)
    write_label_csv(root, rows)
    for row in rows:
        video = root / "Raw" / row["video_id"] / f"{row['clip_id']}.mp4"
        video.parent.mkdir(parents=True, exist_ok=True)
        video.write_bytes(b"\0")
    return rows


def test_mmsa_fet_raw_layout(tmp_path):
    root = tmp_path / "MOSI"
    make_raw(root)
    dataset = load_dataset("mosi", DatasetOptions(root=root))
    assert dataset.info.modalities == {"text": "text", "audio": "audio", "video": "video"}
    by_id = {s.id: s for s in dataset.samples}
    assert list(by_id) == [
        "03bSnISJMiM$_$1",
        "03bSnISJMiM$_$2",
        "0h-zjBukYpk$_$11",
        "1DmNV9C1hbY$_$3",
    ]
    sample = by_id["03bSnISJMiM$_$1"]
    assert (
        sample.label == -1.4
        and sample.text == "a lot of sad parts, really"
        and sample.split == "train"
    )
    assert sample.audio == sample.video == root / "Raw" / "03bSnISJMiM" / "1.mp4"
    assert by_id["0h-zjBukYpk$_$11"].split == "valid" and by_id["1DmNV9C1hbY$_$3"].split == "test"
    write_pickle(
        root / "Processed" / "unaligned_50.pkl", make_mmsa()
    )  # the pickle wins when present
    assert load_dataset("mosi", DatasetOptions(root=root)).info.modalities["audio"] == "array"


def test_raw_layout_errors(tmp_path):
    root = tmp_path / "MOSI"
    make_raw(root)
    (root / "Raw" / "0h-zjBukYpk" / "11.mp4").unlink()
    with pytest.raises(
        DataError, match=r"Raw: 1 of 4 clips in label.csv are missing: Raw/0h-zjBukYpk/11.mp4"
    ):
        load_dataset("mosi", DatasetOptions(root=root))
    (root / "label.csv").write_text("video_id,clip_id,text\nx,1,hello\n")
    with pytest.raises(DataError, match="label.csv: missing column"):
        load_dataset("mosi", DatasetOptions(root=root))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        DataError,
        match="no MOSEI data: expected Processed/unaligned_50.pkl or unaligned_50.pkl, or MMSA-FET's label.csv",
    ):
        load_dataset("mosei", DatasetOptions(root=empty))


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "row 3: label 'nan' is not a finite number"),
        (b"video_id,clip_id,text,label,mode\nx,1,caf\xe9,1.0,train\n", "not a readable CSV file"),
    ],
)
def test_raw_label_csv_bad_label_or_encoding_is_one_line(tmp_path, content, problem):
    root = tmp_path / "MOSI"
    rows = make_raw(root)
    if content is None:
        rows[1]["label"] = "nan"
        write_label_csv(root, rows)
    else:
        (root / "label.csv").write_bytes(content)
    with pytest.raises(DataError) as err:
        load_dataset("mosi", DatasetOptions(root=root))
    assert err.value.path == root / "label.csv" and problem in str(err.value)
    assert "\n" not in str(err.value)


def test_nan_label_in_pickle_names_the_sample(tmp_path):
    data = make_mmsa()
    data["valid"]["regression_labels"][1] = np.nan
    path = write_pickle(tmp_path / "unaligned_50.pkl", data)
    with pytest.raises(DataError) as err:
        load_dataset("mosi", DatasetOptions(root=tmp_path))
    assert str(err.value) == (
        f"{path}: 1 label(s) are NaN or infinite (missing values?): validVid0$_$1"
    )
