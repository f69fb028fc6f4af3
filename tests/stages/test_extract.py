"""The extract stage on small generated data: caching, kill-and-resume, shards, bad input,
a key that follows the content of the data, and a full disk."""

from __future__ import annotations

import csv
import dataclasses
import errno
import multiprocessing as mp
import os
import shutil
import signal
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner, Result
from workspace import clcr, error_line, extract_dir, kept, snapshot, temporaries

from clcr_cli.cli import app
from clcr_cli.config import extract_config
from clcr_cli.errors import ClcrError, DataError
from clcr_cli.features.text import TextLevelEncoder
from clcr_cli.stages.extract import run_extract
from clcr_cli.store import FeatureStore

SMALL = {"dataset": "synth", "n_samples": 12, "part_size": 4}


def store_content(path: Path) -> dict[str, np.ndarray]:
    """Every dataset of a store (values only; attrs hold paths that differ between workdirs)."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def assert_same_content(a: Path, b: Path) -> None:
    ca, cb = store_content(a), store_content(b)
    assert ca.keys() == cb.keys()
    for k in ca:
        np.testing.assert_array_equal(ca[k], cb[k], err_msg=k)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> tuple[Path, Path]:
    workdir = tmp_path_factory.mktemp("wd")
    return workdir, run_extract(extract_config({}, SMALL), workdir)


def test_store_shapes_and_text_levels(extracted):
    _, path = extracted
    with FeatureStore(path) as store:
        assert len(store) == 12 and store.num_classes == 8
        assert set(store.modalities) == {"text", "audio", "video"}
        assert store.modalities["text"].shape[:1] == (3,) and store.modalities["text"].dim == 384
        assert store.modalities["video"].shape == (16, 32, 32, 3)
        assert store.modalities["audio"].dim == 64
        assert set(store.splits) <= {"train", "valid", "test"}
        assert store.settings["text"]["layers"] == [2, 4, 6]
        # the stored "late" level is the model's hidden state at layer 6, per sample
        texts = [s.text for s in _synth_samples(path)]
        levels, lengths = TextLevelEncoder("minilm", layers=(6,), max_len=32).encode(texts[:3])
        data, stored_len = store.read("text", np.arange(3))
        np.testing.assert_array_equal(stored_len, lengths)
        for i in range(3):
            np.testing.assert_allclose(data[i, 2, : lengths[i]], levels[i, 0, : lengths[i]], atol=1e-5)
            assert not data[i, :, lengths[i] :].any()


def _synth_samples(store_path: Path):
    from clcr_cli.datasets import load_dataset
    from clcr_cli.features.featurize import dataset_options

    workdir = store_path.parents[2]
    return load_dataset("synth", dataset_options(extract_config({}, SMALL), workdir)).samples


def test_complete_output_is_reused(extracted):
    workdir, path = extracted
    mtime = path.stat().st_mtime_ns
    t0 = time.monotonic()
    again = run_extract(extract_config({}, SMALL), workdir)
    assert again == path and path.stat().st_mtime_ns == mtime
    assert time.monotonic() - t0 < 5


def test_changed_option_gets_new_key_and_force_redoes(extracted):
    workdir, path = extracted
    other = run_extract(extract_config({}, {**SMALL, "n_mels": 32}), workdir)
    assert other.parent != path.parent
    with FeatureStore(other) as store:
        assert store.modalities["audio"].dim == 32
    mtime = other.stat().st_mtime_ns
    forced = run_extract(extract_config({}, {**SMALL, "n_mels": 32}), workdir, force=True)
    assert forced == other and forced.stat().st_mtime_ns != mtime
    assert_same_content(forced, path.parent.parent / other.parent.name / "features.h5")


def _extract_then_sigkill(workdir: str, kill_after_part: int) -> None:
    def after_part(i: int) -> None:
        if i == kill_after_part:
            os.kill(os.getpid(), signal.SIGKILL)

    run_extract(extract_config({}, SMALL), Path(workdir), after_part=after_part)


def test_sigkill_then_resume_equals_uninterrupted(extracted, tmp_path: Path):
    _, reference = extracted
    proc = mp.get_context("spawn").Process(target=_extract_then_sigkill, args=(str(tmp_path), 1))
    proc.start()
    proc.join(120)
    assert proc.exitcode == -signal.SIGKILL
    stage_dir = next((tmp_path / "extract").iterdir())
    assert not (stage_dir / "manifest.json").exists()
    assert sorted(p.name for p in (stage_dir / "parts").iterdir()) == ["part-00000.h5", "part-00001.h5"]
    done_parts = []
    resumed = run_extract(extract_config({}, SMALL), tmp_path, after_part=done_parts.append)
    assert done_parts == [2]  # only the missing part was extracted
    assert_same_content(resumed, reference)


# --- bad input, through a user's manifest -------------------------------------------------


def write_wav(path: Path, seconds: float = 0.5) -> None:
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, 0.3 * np.sin(2 * np.pi * 440 * t), 16000)


def write_mp4(path: Path, n: int = 6) -> None:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 8, (32, 32))
    for i in range(n):
        w.write(np.full((32, 32, 3), 20 * i, np.uint8))
    w.release()


@pytest.fixture
def manifest_dir(tmp_path: Path) -> Path:
    rows = []
    for i in range(6):
        write_wav(tmp_path / f"a{i}.wav")
        write_mp4(tmp_path / f"v{i}.mp4")
        rows.append({"id": f"s{i}", "split": ["train", "train", "valid", "test"][i % 4], "label": i % 2,
                     "audio": f"a{i}.wav", "video": f"v{i}.mp4", "text": f"sample number {i}"})
    with open(tmp_path / "data.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return tmp_path


def manifest_cfg(folder: Path, **extra):
    return extract_config({}, {"dataset": "mine", "manifest": str(folder / "data.csv"), "part_size": 2,
                              "num_frames": 4, "frame_size": 32, "max_seconds": 1.0, **extra})


def rewrite_manifest(folder: Path, sample: str, column: str, value: str) -> None:
    with open(folder / "data.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        if r["id"] == sample:
            r[column] = value
    with open(folder / "data.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.parametrize(
    ("column", "make_bad", "problem"),
    [
        ("audio", lambda p: p.write_bytes(b"RIFF\x00\x00junk"), "bad.wav"),
        ("video", lambda p: p.write_bytes(b""), "bad.mp4"),
        ("text", None, "row 3: empty text"),  # the loader refuses it before extraction
    ],
)
def test_bad_sample_fails_or_is_skipped_and_cache_survives(manifest_dir, tmp_path_factory, column, make_bad, problem):
    workdir = tmp_path_factory.mktemp("wd")
    good = run_extract(manifest_cfg(manifest_dir), workdir)
    good_content = store_content(good)
    if make_bad is None:
        rewrite_manifest(manifest_dir, "s1", column, "")
    else:
        bad = manifest_dir / ("bad.wav" if column == "audio" else "bad.mp4")
        make_bad(bad)
        rewrite_manifest(manifest_dir, "s1", column, bad.name)
    cfg = manifest_cfg(manifest_dir, n_mels=32)  # a new key: the old output must survive
    with pytest.raises(DataError, match=problem):
        run_extract(cfg, workdir)
    if column == "text":
        assert not any((workdir / "extract").glob("*/manifest.json.tmp*"))
        assert_unchanged(good, good_content)
        return
    skipped_run = run_extract(dataclasses.replace(cfg, on_error="skip"), workdir)
    with FeatureStore(skipped_run) as store:
        assert "s1" not in set(store.ids) and len(store) == 5
    with open(skipped_run.parent / "skipped.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == ["s1"] and problem in rows[0]["file"] + rows[0]["reason"]
    assert_unchanged(good, good_content)


def assert_unchanged(store: Path, content: dict[str, np.ndarray]) -> None:
    assert (store.parent / "manifest.json").exists()
    now = store_content(store)
    assert now.keys() == content.keys()
    for k, v in now.items():
        np.testing.assert_array_equal(v, content[k])


def test_cli_bad_root_is_one_line_and_nonzero(tmp_path: Path):
    runner = CliRunner()
    result = runner.invoke(app, ["extract", "--dataset", "cremad", "--root", str(tmp_path / "nope"),
                                 "--workdir", str(tmp_path)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "nope" in lines[0]
    assert "Traceback" not in result.output


def test_cli_unknown_dataset_and_bad_option(tmp_path: Path):
    runner = CliRunner()
    result = runner.invoke(app, ["extract", "--dataset", "nosuch", "--workdir", str(tmp_path)])
    assert result.exit_code == 2 and "unknown dataset 'nosuch'" in result.output
    result = runner.invoke(app, ["extract", "--on-error", "maybe", "--workdir", str(tmp_path)])
    assert result.exit_code == 2 and "--on-error" in result.output
    # training an unknown task with nothing extracted: one line, before any extraction
    result = runner.invoke(app, ["train", "--task", "nosuch", "--workdir", str(tmp_path)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "no extraction of 'nosuch'" in lines[0] and "--manifest FILE.csv" in lines[0]


def test_cli_status_lists_outputs(extracted):
    workdir, path = extracted
    result = CliRunner().invoke(app, ["status", "--workdir", str(workdir)])
    assert result.exit_code == 0
    assert "extract" in result.output and path.parent.name.split("-")[-1] in result.output
    assert "complete" in result.output


def test_shards_then_merge_equal_unsharded(extracted, tmp_path: Path):
    _, reference = extracted
    cfg = extract_config({}, SMALL)
    written = []
    for i in range(2):
        parts = run_extract(cfg, tmp_path, shard=(i, 2), after_part=written.append)
        assert parts.name == "parts"
    assert sorted(written) == [0, 1, 2] and written[:2] == [0, 2]
    merged = run_extract(cfg, tmp_path, merge_only=True, after_part=written.append)
    assert len(written) == 3  # the merge extracted nothing
    assert_same_content(merged, reference)


def test_merge_refuses_missing_parts_and_killed_shard_resumes(tmp_path: Path):
    cfg = extract_config({}, SMALL)
    proc = mp.get_context("spawn").Process(target=_shard_then_sigkill, args=(str(tmp_path),))
    proc.start()
    proc.join(120)
    assert proc.exitcode == -signal.SIGKILL
    with pytest.raises(ClcrError, match="cannot merge, 2 of 3 parts are missing"):
        run_extract(cfg, tmp_path, merge_only=True)
    done = []
    run_extract(cfg, tmp_path, shard=(0, 1), after_part=done.append)
    assert done == [1, 2]


def _shard_then_sigkill(workdir: str) -> None:
    def after_part(i: int) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    run_extract(extract_config({}, SMALL), Path(workdir), shard=(0, 1), after_part=after_part)


# --- the key follows the content of the data (through a user's manifest) -------------------------


def write_dataset(folder: Path, n: int = 8) -> Path:
    """A manifest of ``n`` samples, each a .wav, a .png and a .txt transcript."""
    folder.mkdir()
    rows = []
    for i in range(n):
        tone = 0.3 * np.sin(2 * np.pi * (200 + 40 * i) * np.arange(4000) / 16000)
        sf.write(folder / f"a{i}.wav", tone, 16000)
        cv2.imwrite(str(folder / f"i{i}.png"), np.full((8, 8, 3), 25 * i, np.uint8))
        (folder / f"t{i}.txt").write_text(f"sample number {i}")
        rows.append([f"s{i}", ["train", "train", "valid", "test"][i % 4], ["cat", "dog"][i % 2],
                     f"a{i}.wav", f"i{i}.png", f"t{i}.txt"])
    with open(folder / "data.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["id", "split", "label", "audio", "image", "text"], *rows])
    return folder / "data.csv"


def extract_manifest(manifest: Path, workdir: Path, *extra: str) -> Result:
    return clcr("extract", "--dataset", "pets", "--manifest", manifest, "--workdir", workdir,
                "--frame-size", "8", "--max-seconds", "0.25", *extra)


def test_an_edited_manifest_is_extracted_again_and_the_old_output_kept(tmp_path: Path):
    manifest = write_dataset(tmp_path / "pets")
    workdir = tmp_path / "data"
    first = extract_manifest(manifest, workdir)
    assert first.exit_code == 0 and "extracted pets: 8 samples" in first.output
    before = snapshot(workdir)
    rows = list(csv.reader(manifest.open()))
    header, body = rows[0], [[*r[:2], {"cat": "dog", "dog": "cat"}[r[2]], *r[3:]] for r in rows[1:-1]]
    with open(manifest, "w", newline="") as fh:  # every label flipped, the last row dropped
        csv.writer(fh).writerows([header, *body])
    second = extract_manifest(manifest, workdir)
    assert second.exit_code == 0, second.output
    assert "extracted pets: 7 samples" in second.output and "reusing" not in second.output
    new_store = Path(second.stdout.strip())
    with h5py.File(new_store) as f:
        assert [x.decode() for x in f["meta/id"][()]] == [f"s{i}" for i in range(7)]
        assert f["meta/label"][()].tolist() == [float(1 - i % 2) for i in range(7)]
    assert kept(before, workdir)
    again = extract_manifest(manifest, workdir)
    assert "reusing extract pets" in again.output and Path(again.stdout.strip()) == new_store


def test_a_transcript_edited_to_the_same_size_and_time_is_a_new_key(tmp_path: Path):
    manifest = write_dataset(tmp_path / "pets")
    workdir = tmp_path / "data"
    first = extract_manifest(manifest, workdir)
    before = snapshot(workdir)
    transcript = manifest.parent / "t3.txt"
    stat = transcript.stat()
    transcript.write_text("sample number 8")
    os.utime(transcript, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = extract_manifest(manifest, workdir)
    assert second.exit_code == 0 and "extracted pets" in second.output
    assert second.stdout.strip() != first.stdout.strip()
    assert kept(before, workdir)


def test_verify_inputs_knows_a_copy_without_modification_times(tmp_path: Path):
    manifest = write_dataset(tmp_path / "pets")
    first = extract_manifest(manifest, tmp_path / "data", "--verify-inputs")
    assert first.exit_code == 0 and "extracted pets: 8 samples" in first.output
    before = snapshot(tmp_path / "data")
    copy = shutil.copytree(manifest.parent, tmp_path / "copy", copy_function=shutil.copy)
    for path in copy.iterdir():
        os.utime(path, ns=(1, 1))
    second = extract_manifest(copy / "data.csv", tmp_path / "data", "--verify-inputs")
    assert second.exit_code == 0 and "reusing extract pets" in second.output
    assert second.stdout == first.stdout
    third = extract_manifest(copy / "data.csv", tmp_path / "data")  # by modification time: another key
    assert third.exit_code == 0 and "extracted pets" in third.output and third.stdout != first.stdout
    assert kept(before, tmp_path / "data")


def test_a_copied_workspace_reuses_its_extraction(ws: Path, tmp_path: Path):
    copy = shutil.copytree(ws, tmp_path / "copy", copy_function=shutil.copy)  # new modification times
    before = snapshot(copy / "data")
    result = clcr("extract", "--config", copy / "c.toml", "--workdir", copy / "data")
    assert result.exit_code == 0, result.output
    assert "reusing extract synth" in result.output
    assert Path(result.stdout.strip()) == extract_dir(copy) / "features.h5"
    assert snapshot(copy / "data") == before


# --- a full disk ----------------------------------------------------------------------------------


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(ws: Path, monkeypatch):
    before = snapshot(ws / "data")

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(h5py.Group, "create_dataset", full)
    result = clcr("extract", "--config", ws / "c.toml", "--workdir", ws / "data", "--n-mels", "32")
    line = error_line(result)
    assert line.startswith(f"error: {ws / 'data' / 'extract' / 'synth-'}") and line.endswith(": No space left on device")
    assert temporaries(ws / "data") == []
    assert kept(before, ws / "data")


# --- what the loaders and the stage say of odd inputs (issue 22, item 8) --------------------------


def test_a_folder_given_as_manifest_is_named_as_a_folder(tmp_path: Path):
    result = clcr("extract", "--dataset", "mine", "--manifest", tmp_path, "--workdir", tmp_path / "data")
    assert error_line(result) == f"error: {tmp_path}: is a folder, not a CSV manifest (give the manifest file itself)"


def test_when_every_sample_is_skipped_the_error_names_an_input_not_the_store(manifest_dir, tmp_path: Path):
    for i in range(6):
        (manifest_dir / f"a{i}.wav").write_bytes(b"RIFF\x00\x00junk")
    with pytest.raises(DataError) as caught:
        run_extract(manifest_cfg(manifest_dir, on_error="skip"), tmp_path / "data")
    assert caught.value.path.name.startswith("a") and caught.value.path.suffix == ".wav"
    assert "every one of the 6 samples failed and was skipped (first: s" in caught.value.problem
    assert "features.h5" not in str(caught.value)


def test_files_outside_the_manifest_folder_are_followed_and_listed(manifest_dir, tmp_path: Path):
    secret = tmp_path.parent / f"{tmp_path.name}-elsewhere.txt"
    secret.write_text("words from outside the dataset")
    (manifest_dir / "t0.txt").symlink_to(secret)
    rewrite_manifest(manifest_dir, "s0", "text", "t0.txt")
    result = clcr("extract", "--dataset", "mine", "--manifest", manifest_dir / "data.csv", "--workdir",
                  tmp_path / "data", "--num-frames", "4", "--frame-size", "32", "--max-seconds", "1.0")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"note: 1 input file(s) lie outside {manifest_dir} and are read as given" in text
    assert str(secret.resolve()) in text
    (store,) = (tmp_path / "data" / "extract").glob("*/features.h5")
    with FeatureStore(store) as s:
        assert s.settings["outside_root"] == [str(manifest_dir / "t0.txt")]
