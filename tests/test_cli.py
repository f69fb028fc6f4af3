"""Issue 13 through the command line, on small generated data: the extract key follows the
data's content (1), paths read from files stay in the run folder (2), a crafted model.json
is refused before anything is allocated (3), the cache checks what is on disk (7),
environment failures are one line (8), misuse fails before any work (9).

Every test asserts the one-line message, the exit code, and that the complete outputs
made before it are byte-identical afterwards.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import soundfile
import torch
from typer.testing import CliRunner, Result

from clcr_cli.cli import app

TRAIN = ["--task", "synth", "--epochs", "1", "--d", "16", "--num-heads", "2", "--batch-size", "16"]


def clcr(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def error_line(result: Result) -> str:
    """The one error line of a failed command (exit 2, no traceback)."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def kept(before: dict[str, bytes], workdir: Path) -> bool:
    """True when every file of ``before`` is still there, byte for byte (a failed stage may
    leave its own partial output beside them)."""
    return {k: v for k, v in snapshot(workdir).items() if k in before} == before


def snapshot(workdir: Path) -> dict[str, bytes]:
    """Every file of every stage output (locks aside, which name their last holder)."""
    return {
        str(p.relative_to(workdir)): p.read_bytes()
        for p in sorted(workdir.rglob("*"))
        if p.is_file() and not p.name.startswith(".lock") and p.parts[len(workdir.parts)] != "raw"
    }


def rewrite(path: Path, content: bytes) -> None:
    """Replace a file of a complete output and record it in the output's manifest, as a
    deliberate edit would: the checksums then pass and the content itself must be refused."""
    path.write_bytes(content)
    manifest_path = path.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][path.name] = {"size": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    manifest_path.write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """A workspace with synth (40 samples) extracted, one run trained (1 epoch) and evaluated;
    ``c.toml`` beside it pins the extraction. Tests work on copies (:func:`workspace`)."""
    root = tmp_path_factory.mktemp("made")
    (root / "c.toml").write_text('[extract]\ndataset = "synth"\nn_samples = 40\n')
    result = clcr("eval", "--config", root / "c.toml", "--workdir", root / "data", *TRAIN)
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def ws(made: Path, tmp_path: Path) -> Path:
    """A copy of the made workspace (root with data/ and c.toml)."""
    return shutil.copytree(made, tmp_path / "ws")


def train_dir(root: Path) -> Path:
    (run,) = (root / "data" / "train").iterdir()
    return run


def extract_dir(root: Path) -> Path:
    (out,) = (root / "data" / "extract").iterdir()
    return out


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp-" in p.name]


# --- 1: the extract key follows the content of the data ---------------------------------------


def write_dataset(folder: Path, n: int = 8) -> Path:
    """A manifest of ``n`` samples, each a .wav, a .png and a .txt transcript."""
    folder.mkdir()
    rows = []
    for i in range(n):
        tone = 0.3 * np.sin(2 * np.pi * (200 + 40 * i) * np.arange(4000) / 16000)
        soundfile.write(folder / f"a{i}.wav", tone, 16000)
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


# --- 2: paths read from files stay inside the run folder --------------------------------------


@pytest.mark.parametrize("name", ["../../../escape", "/ABS/evil", "..", "a/b"])
def test_eval_run_refuses_a_dataset_name_that_is_a_path(ws: Path, name: str):
    run = train_dir(ws)
    manifest = json.loads((run / "manifest.json").read_text())
    name = name.replace("/ABS", str(ws))
    manifest["dataset"] = name
    (run / "manifest.json").write_text(json.dumps(manifest))
    before = snapshot(ws)
    result = clcr("eval", "--run", run, "--workdir", ws / "data", "--eval-batch-size", "7")
    assert error_line(result) == (
        f"error: {run / 'manifest.json'}: dataset {name!r} is not a plain name (letters, digits, '_', '.', '-')"
    )
    assert snapshot(ws) == before  # nothing written anywhere, in the workspace or beside it
    assert not (ws / "escape").exists() and not (ws / "evil").exists()


# --- 3: a crafted model.json is refused before anything is allocated --------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"d": 16384}, "d: must be from 2 to 2048, got 16384"),
        ({"d": 2**20}, "d: must be from 2 to 2048, got 1048576"),
        ({"num_levels": 10**6}, "num_levels: must be from 1 to 16, got 1000000"),
        ({"num_heads": 0}, "num_heads: must be from 1 to 256, got 0"),
        ({"max_len": 10**9}, "max_len: must be from 1 to 65536, got 1000000000"),
        ({"frame_channels": [16, 32, 10**7]}, "frame_channels: must be from 1 to 1024, got 10000000"),
        ({"shared_dim": 10**6}, "shared_dim: must be from 1 to 16, got 1000000"),
        ({"d": "many"}, "d: expected an integer, got 'many'"),
        ({"audio": {"dim": 10**9}}, "modality 'audio' dim: must be from 1 to 16384, got 1000000000"),
        ({"audio": {"max_steps": 60_000}}, "modality 'audio' has up to 60000 steps but max_len is 512"),
        ({"text": {"num_levels_in": 1}}, "modality 'text' holds 1 stored hidden-state level(s) but the model needs num_levels=3"),
        ({"max_len": 65536, "d": 2048},
         "d=2048, num_levels=3 and max_len=65536 make the encoders' projections and positional tables "
         "1,235,484,672 values, more than the 268,435,456 allowed"),
    ],
)
def test_a_crafted_model_json_is_refused_before_any_allocation(ws: Path, monkeypatch, change: dict, field: str):
    from clcr_cli.training import inference

    run = train_dir(ws)
    meta = json.loads((run / "model.json").read_text())
    config, change = meta["model_config"], dict(change)
    for spec in config["modalities"]:
        spec.update(change.pop(spec["name"], {}))
    config.update(change)
    rewrite(run / "model.json", json.dumps(meta).encode())
    before = snapshot(ws)

    def allocate(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(inference, "build_model", allocate)
    result = clcr("eval", "--run", run, "--workdir", ws / "data", "--eval-batch-size", "7")
    line = error_line(result)
    assert line.startswith(f"error: {run / 'model.json'}: model_config: ModelConfigError: ") and field in line
    assert kept(before, ws)


def test_garbage_weights_are_named_when_evaluated(ws: Path):
    run = train_dir(ws)
    rewrite(run / "model.safetensors", b"\0" * 64)
    before = snapshot(ws)
    result = clcr("eval", "--run", run, "--workdir", ws / "data", "--eval-batch-size", "7")
    assert error_line(result).startswith(
        f"error: {run / 'model.safetensors'}: not the weights of the model in model.json (")
    assert kept(before, ws)


# --- 7: the cache checks what is on disk -------------------------------------------------------


def test_a_truncated_store_is_corrupt_and_redone_not_reused(ws: Path):
    out = extract_dir(ws)
    store = out / "features.h5"
    original = store.read_bytes()
    store.write_bytes(original[: len(original) // 2])
    runs = {k: v for k, v in snapshot(ws / "data").items() if k.startswith("train")}
    status = clcr("status", "--workdir", ws / "data")
    assert status.exit_code == 0
    problem = f"features.h5: {len(original) // 2:,} bytes, the manifest says {len(original):,}"
    assert f"corrupt {out}: {problem}" in status.output.replace("\n", "")
    assert clcr("status", "--workdir", ws / "data", "--verify").exit_code == 1
    result = clcr("extract", "--config", ws / "c.toml", "--workdir", ws / "data")
    assert result.exit_code == 0, result.output
    assert f"redoing extract synth ({out.name.split('-')[-1]}), its output is damaged: {problem}" in result.output
    assert store.stat().st_size > len(original) // 2
    assert clcr("status", "--workdir", ws / "data", "--verify").exit_code == 0
    assert {k: v for k, v in snapshot(ws / "data").items() if k.startswith("train")} == runs


def test_garbage_weights_are_redone_from_the_checkpoint(ws: Path):
    run = train_dir(ws)
    weights = (run / "model.safetensors").read_bytes()
    metrics = json.loads(next((run / "eval").rglob("metrics.json")).read_text())["metrics"]
    (run / "model.safetensors").write_bytes(b"garbage")
    store = snapshot(ws / "data" / "extract")
    result = clcr("eval", "--config", ws / "c.toml", "--workdir", ws / "data", *TRAIN)
    assert result.exit_code == 0, result.output
    assert "redoing train synth" in result.output and "model.safetensors: 7 bytes" in result.output
    assert (run / "model.safetensors").read_bytes() == weights  # resumed from the intact last.pt
    assert json.loads(next((run / "eval").rglob("metrics.json")).read_text())["metrics"] == metrics
    assert snapshot(ws / "data" / "extract") == store


def test_a_corrupt_extract_manifest_does_not_stop_train(ws: Path):
    out = extract_dir(ws)
    (out / "manifest.json").write_text("{not json")
    runs = {k: v for k, v in snapshot(ws / "data").items() if k.startswith("train")}
    result = clcr("train", "--config", ws / "c.toml", "--workdir", ws / "data", *TRAIN)
    assert result.exit_code == 0, result.output
    assert f"redoing extract synth ({out.name.split('-')[-1]}), its output is damaged: manifest.json: unreadable" in result.output
    assert "reusing train synth" in result.output
    assert {k: v for k, v in snapshot(ws / "data").items() if k.startswith("train")} == runs


def test_a_corrupt_params_json_keeps_the_output_in_status(ws: Path):
    run = train_dir(ws)
    (run / "params.json").write_text("garbage")
    before = snapshot(ws)
    result = clcr("status", "--workdir", ws / "data", "--stage", "train")
    assert result.exit_code == 0
    assert f"synth   │ {run.name.split('-')[-1]} │ corrupt" in result.output
    assert f"corrupt {run}: params.json:" in result.output.replace("\n", "")
    assert snapshot(ws) == before


def test_report_survives_a_corrupt_metrics_json(ws: Path):
    metrics = next((train_dir(ws) / "eval").rglob("metrics.json"))
    rewrite(metrics, b'{"task": "synth", "metrics": ')
    result = clcr("report", "--workdir", ws / "data")
    assert result.exit_code == 0, result.output
    assert "1 output(s) could not be read" in result.output
    md = (ws / "data" / "report" / "report.md").read_text()
    assert f"| {metrics.parent}: JSONDecodeError: " in md
    assert f"curves_{train_dir(ws).name}.png" in md  # the rest is reported


@pytest.mark.slow
def test_report_survives_any_single_corrupt_file(ws: Path):
    workdir = ws / "data"
    files = [p for p in sorted(workdir.rglob("*")) if p.is_file() and not p.name.startswith(".lock")
             and "raw" not in p.relative_to(workdir).parts]
    assert len(files) > 10
    for path in files:
        saved = {p: p.read_bytes() for p in (path, path.parent / "manifest.json")}
        for recorded in (False, True):  # garbage the checksums catch, and garbage they were told of
            if recorded and path.name == "manifest.json":
                continue
            (rewrite if recorded else Path.write_bytes)(path, b"\xff\x00garbage")
            result = clcr("report", "--workdir", workdir)
            assert result.exit_code == 0, (path, result.output)
            md = (workdir / "report" / "report.md").read_text()
            assert md.startswith("# clcr report") and "## Training curves" in md, path
            if not recorded or path.name in ("metrics.json", "history.csv", "diagnostics.json", "model.json"):
                assert f"| {path.parent}: " in md, path  # listed as unreadable: damaged, or read and refused
            for p, content in saved.items():
                p.write_bytes(content)


# --- 8: environment failures are one line ------------------------------------------------------


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


def test_a_full_disk_while_checkpointing_is_one_line(ws: Path, monkeypatch):
    from clcr_cli.training import loop

    before = snapshot(ws / "data")

    def full(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(loop.torch, "save", full)
    result = clcr("train", "--config", ws / "c.toml", "--workdir", ws / "data", *TRAIN, "--seed", "5")
    line = error_line(result)
    assert line.startswith(f"error: {ws / 'data' / 'train'}/synth-") and line.endswith(": No space left on device")
    assert temporaries(ws / "data") == []
    assert kept(before, ws / "data")


def test_a_read_only_workdir_is_one_line(ws: Path, monkeypatch):
    before = snapshot(ws / "data")
    mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if self.parent == ws / "data" / "train":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    result = clcr("train", "--config", ws / "c.toml", "--workdir", ws / "data", *TRAIN, "--seed", "5")
    assert error_line(result).startswith(f"error: {ws / 'data' / 'train'}/synth-")
    assert error_line(result).endswith(": Read-only file system")
    assert snapshot(ws / "data") == before


@pytest.mark.parametrize("damage", ["empty", "foreign"])
def test_a_damaged_checkpoint_restarts_the_run(ws: Path, damage: str):
    run = train_dir(ws)
    weights = (run / "model.safetensors").read_bytes()
    (run / "manifest.json").unlink()  # a killed run: partial, resumable from last.pt
    if damage == "empty":
        (run / "last.pt").write_bytes(b"")
        reason = "EOFError"
    else:
        checkpoint = torch.load(run / "last.pt", weights_only=True)
        torch.save({**checkpoint, "epoch": 10**9}, run / "last.pt")
        reason = "ValueError: its fields do not belong to this run"
    store = snapshot(ws / "data" / "extract")
    result = clcr("train", "--config", ws / "c.toml", "--workdir", ws / "data", *TRAIN)
    assert result.exit_code == 0, result.output
    assert f"{run / 'last.pt'}: unreadable checkpoint ({reason}" in result.output.replace("\n", "")
    assert "training from epoch 0" in result.output
    assert (run / "model.safetensors").read_bytes() == weights  # the same run, from the start
    assert snapshot(ws / "data" / "extract") == store


def test_a_damaged_store_is_one_line_when_read(ws: Path):
    store = extract_dir(ws) / "features.h5"
    data = bytearray(store.read_bytes())
    for start in range(len(data) // 10, len(data) - 4096, len(data) // 10):
        data[start : start + 4096] = b"\xa5" * 4096  # the size stays
    store.write_bytes(bytes(data))
    before = snapshot(ws)
    result = clcr("eval", "--run", train_dir(ws), "--workdir", ws / "data", "--split", "train")
    line = error_line(result)
    assert line.startswith(f"error: {store}: ") and "the file is damaged" in line
    assert kept(before, ws)
    verify = clcr("status", "--workdir", ws / "data", "--verify")
    assert verify.exit_code == 1
    assert f"corrupt {extract_dir(ws)}: features.h5: content differs from its recorded sha256" in verify.output


# --- 9: misuse fails before any work ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["extract", "--max-seconds", "-1"], "--max-seconds: must be at least 0.01, got -1.0"),
        (["extract", "--fps", "0"], "--fps: must be at least 0.01, got 0.0"),
        (["noise", "--sigmas", "-1,0"], "--sigmas: must be at least 0, got -1.0"),
        (["train", "--set", "lambda_intra=-5"], "lambda_intra: must be at least 0, got -5.0"),
        (["train", "--set", "lr=nan"], "--set lr: must be a finite number, got nan"),
        (["train", "--seeds", "1,-2"], "--seeds: expected seeds of 0 or more, got '1,-2'"),
        (["train", "--nproc", "0"], "Invalid value for '--nproc': Input should be greater than or equal to 1"),
        (["train", "--precision", "fp16", "--device", "cpu"],
         "--precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU"),
        (["report"], "{workdir}: no such workspace folder (nothing to report)"),
        (["status"], "{workdir}: no such workspace folder"),
        (["train", "--config", "{config}"],
         "{config}: unknown section(s) trian; sections: extract, train, eval, ablate, noise, predict"),
    ],
)
def test_misuse_is_one_line_before_any_work(tmp_path: Path, args: list[str], message: str):
    workdir, config = tmp_path / "typo", tmp_path / "c.toml"
    config.write_text("[trian]\nepochs = 3\n")
    args = [a.format(config=config) for a in args]
    result = clcr(*args, "--workdir", workdir)
    assert error_line(result) == "error: " + message.format(workdir=workdir, config=config)
    assert len(result.output.strip().splitlines()) == 1
    assert not workdir.exists()  # nothing was created: no work began


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "--missing", "text", "--missing", "audio,video"],
         "--missing text, audio, video: leaves no modality to evaluate with"),
        (["eval", "--missing", "smell"], "--missing smell: the task's modalities are "),
        (["noise", "--modality", "smell"], "--modality smell: the task's modalities are "),
        (["noise", "--models", "clcr,transformer"], "--models transformer: the models are clcr, "),
        (["ablate", "--budget-sweep", "0.5,0"], "participation must lie in (0, 1], got 0.0"),
        (["train", "--num-levels", "4"], "modality 'text' holds 3 stored hidden-state level(s) but the model needs num_levels=4"),
        (["train", "--max-len", "20"], "modality 'audio' has up to 201 steps but max_len is 20: raise max_len"),
    ],
)
def test_options_the_data_refuses_fail_before_training(ws: Path, args: list[str], message: str):
    before = snapshot(ws / "data")
    command, *rest = args
    result = clcr(command, "--config", ws / "c.toml", "--workdir", ws / "data", *TRAIN, "--epochs", "50", *rest)
    assert error_line(result).startswith("error: " + message)
    assert snapshot(ws / "data") == before  # nothing was trained
