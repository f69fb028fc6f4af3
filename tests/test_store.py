"""The HDF5 feature store: part files, assembly and the reader, as round trips."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from clcr_cli.errors import DataError
from clcr_cli.store import FeatureStore, ModalityLayout, PartData, assemble_store, write_part

LAYOUTS = {
    "text": ModalityLayout("levels", "text", "float32"),
    "audio": ModalityLayout("sequence", "audio", "float32"),
    "video": ModalityLayout("frames", "video", "uint8"),
}


def make_part(rng: np.random.Generator, start: int, n: int) -> PartData:
    part = PartData()
    for i in range(start, start + n):
        part.ids.append(f"s{i:03d}")
        part.splits.append(["train", "valid", "test"][i % 3])
        part.labels.append(float(i % 4))
        t_text, t_audio, t_video = rng.integers(1, 9), rng.integers(1, 20), rng.integers(1, 5)
        part.features.setdefault("text", []).append(rng.normal(size=(3, t_text, 6)).astype("f4"))
        part.features.setdefault("audio", []).append(rng.normal(size=(t_audio, 5)).astype("f4"))
        part.features.setdefault("video", []).append(
            rng.integers(0, 255, size=(t_video, 4, 4, 3), dtype=np.uint8)
        )
    return part


@pytest.fixture
def built(tmp_path: Path):
    rng = np.random.default_rng(0)
    parts = [make_part(rng, 0, 4), make_part(rng, 4, 3), make_part(rng, 7, 5)]
    paths = []
    for i, part in enumerate(parts):
        paths.append(tmp_path / f"part-{i}.h5")
        write_part(paths[-1], part, LAYOUTS)
    out = tmp_path / "features.h5"
    n = assemble_store(paths, out, LAYOUTS, {"dataset": "toy", "target": "classification",
                                              "class_names": ["a", "b", "c", "d"], "settings": {"x": 1}})
    return parts, out, n


def test_round_trip_values_lengths_and_padding(built):
    parts, out, n = built
    assert n == 12
    with FeatureStore(out) as store:
        assert store.dataset == "toy" and store.target == "classification"
        assert store.class_names == ["a", "b", "c", "d"] and store.settings == {"x": 1}
        assert list(store.ids) == [f"s{i:03d}" for i in range(12)]
        assert store.modalities["text"].kind == "levels" and store.modalities["video"].dtype == "uint8"
        originals = {m: [a for p in parts for a in p.features[m]] for m in LAYOUTS}
        for m, layout in LAYOUTS.items():
            data, lengths = store.read(m)
            axis = 1 if layout.kind == "levels" else 0
            assert data.shape[0] == 12
            assert data.shape[1 + axis] == max(a.shape[axis] for a in originals[m])
            for i, a in enumerate(originals[m]):
                assert lengths[i] == a.shape[axis]
                valid = np.take(data[i], range(lengths[i]), axis=axis)
                np.testing.assert_array_equal(valid, a)
                pad = np.take(data[i], range(lengths[i], data.shape[1 + axis]), axis=axis)
                assert not pad.any()
        np.testing.assert_array_equal(store.labels, [i % 4 for i in range(12)])


def test_split_indices_and_sorted_reads(built):
    _, out, _ = built
    with FeatureStore(out) as store:
        train = store.split_indices("train")
        np.testing.assert_array_equal(train, [0, 3, 6, 9])
        data, lengths = store.read("audio", train)
        full, full_len = store.read("audio")
        np.testing.assert_array_equal(data, full[train])
        np.testing.assert_array_equal(lengths, full_len[train])
        with pytest.raises(ValueError):
            store.read("audio", np.array([3, 0]))


def test_store_is_plain_chunked_compressed_hdf5(built):
    _, out, _ = built
    with h5py.File(out, "r") as f:
        assert f["video/data"].compression == "gzip"
        assert f["video/data"].chunks is not None
        assert f["text"].attrs["kind"] == "levels"
        assert f["meta/id"][0].decode() == "s000"


def test_part_with_only_skipped_samples(tmp_path: Path):
    rng = np.random.default_rng(1)
    empty = PartData(skipped=[("bad", "/x/bad.wav", "empty audio")])
    p0, p1 = tmp_path / "p0.h5", tmp_path / "p1.h5"
    write_part(p0, empty, LAYOUTS)
    write_part(p1, make_part(rng, 0, 2), LAYOUTS)
    out = tmp_path / "f.h5"
    assert assemble_store([p0, p1], out, LAYOUTS, {"dataset": "t", "target": "regression", "class_names": []}) == 2
    from clcr_cli.store import read_part_skipped

    assert read_part_skipped(p0) == [("bad", "/x/bad.wav", "empty audio")]
    assert read_part_skipped(p1) == []


def test_reader_rejects_missing_and_foreign_files(tmp_path: Path):
    with pytest.raises(DataError, match="not found"):
        FeatureStore(tmp_path / "nope.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="junk.h5: not a readable HDF5"):
        FeatureStore(junk)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(DataError, match="not a clcr feature store"):
        FeatureStore(other)
