"""The identity of a dataset's content (the extract key's input): what changes it, what does not."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest

from clcr_cli.datasets import fingerprint as fp_module
from clcr_cli.datasets import load_dataset
from clcr_cli.datasets.base import DatasetOptions
from clcr_cli.datasets.fingerprint import fingerprint

CLIPS = [(f"c{k}xYz_{k:06d}_{k + 10:06d}", k % 3) for k in range(12)]


def ks_root(root: Path) -> Path:
    """A miniature Kinetics-Sounds layout: two lists and one file per clip."""
    (root / "clips").mkdir(parents=True)
    for name, pairs in (("my_train.txt", CLIPS[:9]), ("my_test.txt", CLIPS[9:])):
        (root / name).write_text("".join(f"{clip},10,{label}\n" for clip, label in pairs))
    for clip, _ in CLIPS:
        (root / "clips" / f"{clip}.mp4").write_bytes(clip.encode())
    return root


def ks_fingerprint(root: Path, verify: bool = False) -> str:
    return fingerprint(load_dataset("ks", DatasetOptions(root=root)), verify)


def test_a_moved_copy_is_the_same_data_and_every_edit_is_not(tmp_path: Path):
    root = ks_root(tmp_path / "ks")
    original = ks_fingerprint(root)
    assert ks_fingerprint(root) == original  # stable
    moved = shutil.copytree(root, tmp_path / "elsewhere" / "ks")  # copy2 keeps modification times
    assert ks_fingerprint(moved) == original
    # a split list edited to the same size and time: its content is keyed
    test_list = moved / "my_test.txt"
    stat = test_list.stat()
    test_list.write_text(test_list.read_text().replace(",10,0", ",10,1"))
    os.utime(test_list, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert test_list.stat().st_size == stat.st_size and ks_fingerprint(moved) != original
    shutil.copy2(root / "my_test.txt", test_list)
    assert ks_fingerprint(moved) == original
    # a clip rewritten (same size, new time): media are keyed by size and modification time
    clip = moved / "clips" / f"{CLIPS[0][0]}.mp4"
    clip.write_bytes(clip.read_bytes()[::-1])
    assert ks_fingerprint(moved) != original


def test_verify_inputs_keys_content_so_a_copy_without_times_is_the_same(tmp_path: Path):
    root = ks_root(tmp_path / "ks")
    copy = shutil.copytree(root, tmp_path / "copy", copy_function=shutil.copy)  # new times
    for path in copy.rglob("*.mp4"):
        os.utime(path, ns=(1, 1))
    assert ks_fingerprint(copy) != ks_fingerprint(root)
    assert ks_fingerprint(copy, verify=True) == ks_fingerprint(root, verify=True)
    assert ks_fingerprint(root, verify=True) != ks_fingerprint(root)
    clip = copy / "clips" / f"{CLIPS[3][0]}.mp4"
    stat, by_stat = clip.stat(), ks_fingerprint(copy)
    clip.write_bytes(clip.read_bytes().upper())  # same size, same time, other content
    os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert ks_fingerprint(copy) == by_stat  # a stat cannot see it ...
    assert ks_fingerprint(copy, verify=True) != ks_fingerprint(root, verify=True)  # ... a hash does


def test_big_sources_are_keyed_by_size_and_time(tmp_path: Path, monkeypatch):
    root = ks_root(tmp_path / "ks")
    monkeypatch.setattr(fp_module, "HASHED_BYTES", 0)  # every list counts as big
    before = ks_fingerprint(root)
    train_list = root / "my_train.txt"
    os.utime(train_list, ns=(1, 1))
    assert ks_fingerprint(root) != before


def write_manifest(folder: Path) -> Path:
    rows = []
    for i in range(8):
        (folder / f"t{i}.txt").write_text(f"sample number {i}")
        (folder / f"a{i}.wav").write_bytes(b"RIFF")  # never decoded here
        rows.append([f"s{i}", ["train", "train", "valid", "test"][i % 4], i % 2, f"t{i}.txt", f"a{i}.wav"])
    with open(folder / "data.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["id", "split", "label", "text", "audio"], *rows])
    return folder / "data.csv"


def manifest_fingerprint(manifest: Path) -> str:
    return fingerprint(load_dataset("mine", DatasetOptions(manifest=manifest)))


def test_manifest_and_transcripts_are_keyed_by_content(tmp_path: Path):
    manifest = write_manifest(tmp_path)
    original = manifest_fingerprint(manifest)
    transcript = tmp_path / "t5.txt"
    stat = transcript.stat()
    transcript.write_text("sample number 9")  # same size, time put back
    os.utime(transcript, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert manifest_fingerprint(manifest) != original
    transcript.write_text("sample number 5")
    assert manifest_fingerprint(manifest) == original  # content, not time
    manifest.write_text(manifest.read_text().replace("s7,test,1", "s7,test,0"))
    assert manifest_fingerprint(manifest) != original


@pytest.mark.parametrize("name", ["synth", "synth-reg"])
def test_generated_synth_ignores_modification_times_not_sizes(tmp_path: Path, name: str):
    options = DatasetOptions(root=tmp_path / "raw" / "synth", n_samples=12, seed=3)
    dataset = load_dataset(name, options)
    original = fingerprint(dataset)
    wav = dataset.samples[0].audio
    os.utime(wav, ns=(1, 1))
    assert fingerprint(load_dataset(name, options)) == original
    with open(wav, "ab") as fh:
        fh.write(b"\0")
    assert fingerprint(load_dataset(name, options)) != original
