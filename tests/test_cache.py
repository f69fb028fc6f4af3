"""The staged cache: keys, reuse, invalidation, force, atomic completion and the lock; the
stages do the work once for concurrent callers; the damaged outputs of a workspace are
found, on reuse or with --verify, and redone from what is intact."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from rich.console import Console
from workspace import (
    QUICK,
    TRAIN,
    clcr,
    error_line,
    extract_cfg,
    extract_dir,
    kept,
    snapshot,
    train_dir,
)

from clcr_cli.cache import MANIFEST, StageDir, StageKey, atomic_write_text, list_outputs
from clcr_cli.config import AblateConfig, EvalConfig, NoiseConfig, train_config
from clcr_cli.errors import ClcrError
from clcr_cli.pipeline import ablate as run_ablate
from clcr_cli.pipeline import noise as run_noise
from clcr_cli.stages.evaluate import run_eval


def key(**params) -> StageKey:
    return StageKey("extract", 1, "synth", {"n": 4, **params})


def test_digest_is_stable_and_sensitive_to_every_part():
    base = key()
    assert base.digest == key().digest
    assert len(base.digest) == 12
    assert key(n=5).digest != base.digest
    assert StageKey("extract", 2, "synth", {"n": 4}).digest != base.digest
    assert StageKey("train", 1, "synth", {"n": 4}).digest != base.digest
    assert StageKey("extract", 1, "mosi", {"n": 4}).digest != base.digest
    assert StageKey("extract", 1, "synth", {"n": 4}, {"up": "abc"}).digest != base.digest
    # key order does not matter
    assert StageKey("s", 1, "d", {"a": 1, "b": 2}).digest == StageKey("s", 1, "d", {"b": 2, "a": 1}).digest


def test_complete_only_after_manifest(tmp_path: Path):
    stage = StageDir(tmp_path, key())
    assert stage.path == tmp_path / "extract" / f"synth-{key().digest}"
    with stage.lock():
        stage.begin()
        (stage.path / "out.txt").write_text("hello")
        assert not stage.is_complete()
        stage.complete({"samples": 3})
    assert stage.is_complete()
    manifest = stage.manifest()
    params = stage.path / "params.json"
    assert manifest["files"] == {
        "out.txt": {"size": 5, "sha256": hashlib.sha256(b"hello").hexdigest()},
        "params.json": {"size": params.stat().st_size, "sha256": hashlib.sha256(params.read_bytes()).hexdigest()},
    }
    assert manifest["summary"] == {"samples": 3}
    assert manifest["params"] == {"n": 4}


def test_force_clears_outputs_and_marks_partial(tmp_path: Path):
    stage = StageDir(tmp_path, key())
    with stage.lock():
        stage.begin()
        (stage.path / "old.txt").write_text("old")
        stage.complete()
    with stage.lock():
        stage.begin(force=True)
        assert not stage.is_complete()
        assert not (stage.path / "old.txt").exists()
        assert (stage.path / "params.json").exists()


def test_begin_without_force_keeps_partial_work(tmp_path: Path):
    stage = StageDir(tmp_path, key())
    with stage.lock():
        stage.begin()
        (stage.path / "part-0").write_text("done")
    with stage.lock():
        stage.begin()
        assert (stage.path / "part-0").read_text() == "done"


def test_atomic_write_leaves_no_temp(tmp_path: Path):
    target = tmp_path / "m.json"
    atomic_write_text(target, json.dumps({"a": 1}))
    atomic_write_text(target, json.dumps({"a": 2}))
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def _hold_lock(workdir: str, ready, release) -> None:
    stage = StageDir(Path(workdir), key())
    with stage.lock():
        ready.set()
        release.wait(10)


def test_lock_excludes_a_second_process(tmp_path: Path):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        stage = StageDir(tmp_path, key())
        with pytest.raises(ClcrError, match=f"being written by pid {holder.pid}"), stage.lock(timeout=0.3):
            pass
        # once released, the waiting side gets it
        release.set()
        t0 = time.monotonic()
        with stage.lock(timeout=20):
            pass
        assert time.monotonic() - t0 < 20
    finally:
        release.set()
        holder.join(10)


def test_a_waiter_is_told_once_who_holds_the_lock(tmp_path: Path):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        stage = StageDir(tmp_path, key())
        said: list[str] = []
        with pytest.raises(ClcrError) as info, stage.lock(timeout=0.5, on_wait=said.append):
            pass
        assert str(info.value) == f"{stage.path}: being written by pid {holder.pid}; wait for it or try again later"
        assert said == [f"waiting for pid {holder.pid} to finish {stage.path}"]
        said.clear()
        with pytest.raises(ClcrError), stage.lock(timeout=0, on_wait=said.append):
            pass
        assert said == []  # no wait, no message
        # another lock name (an extract shard's) is not held by the holder of .lock
        with stage.lock(timeout=0, name=".lock-shard-0-of-2"):
            assert (stage.path / ".lock-shard-0-of-2.pid").read_text() == f"pid {os.getpid()}"
        assert not (stage.path / ".lock-shard-0-of-2.pid").exists()
    finally:
        release.set()
        holder.join(10)


def test_shard_locks_exclude_their_own_name_only(tmp_path: Path):
    stage = StageDir(tmp_path, key())
    with (
        stage.lock(name=".lock-shard-0-of-2"),
        stage.lock(timeout=0, name=".lock-shard-1-of-2"),
        pytest.raises(ClcrError, match="being written by pid"),
        stage.lock(timeout=0, name=".lock-shard-0-of-2"),
    ):
        pass
    with stage.lock(timeout=0, name=".lock-shard-0-of-2"):  # released
        pass


def test_the_cache_imports_where_fcntl_does_not_exist():
    import subprocess
    import sys

    code = "import sys; sys.modules['fcntl'] = None; import clcr_cli.cache; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_sha256_file_and_human_size(tmp_path: Path):
    from clcr_cli.cache import human_size, sha256_file

    data = bytes(range(256)) * 9000  # over one read block
    (tmp_path / "x.bin").write_bytes(data)
    assert sha256_file(tmp_path / "x.bin") == hashlib.sha256(data).hexdigest()
    assert [human_size(n) for n in (0, 1, 999, 1000, 1_234_567, 16 << 20, 3 * 10**9)] == [
        "0 bytes", "1 byte", "999 bytes", "1.0 kB", "1.2 MB", "16.8 MB", "3.0 GB",
    ]


def test_list_outputs_reports_state_and_params(tmp_path: Path):
    done, partial = StageDir(tmp_path, key()), StageDir(tmp_path, key(n=9))
    for stage in (done, partial):
        with stage.lock():
            stage.begin()
            (stage.path / "x.bin").write_bytes(b"0" * 100)
    done.complete()
    rows = {r.key: r for r in list_outputs(tmp_path)}
    assert rows[done.key.digest].complete and not rows[partial.key.digest].complete
    assert rows[partial.key.digest].params == {"n": 9}
    assert rows[done.key.digest].size >= 100
    assert (done.path / MANIFEST).exists()


def test_status_shows_only_options_that_differ_from_defaults():
    from clcr_cli.config import key_options as train_params
    from clcr_cli.config import non_default_options, train_config

    params = train_params(train_config({}, {"task": "cremad", "epochs": 5, "variant": "full-mix"}))
    assert non_default_options("train", params) == {"epochs": 5, "variant": "full-mix"}
    # a task outside the paper's six trains with the short-budget recipe: that is its default
    assert non_default_options("train", train_params(train_config({}, {"task": "synth"}))) == {}
    shared = train_params(train_config({}, {"task": "synth", "model.shared_dim": 16}))
    assert non_default_options("train", shared) == {"shared_dim": 16}
    # the dataset's own defaults count as defaults
    extract = {"dataset": "synth", "num_frames": 16, "n_mels": 32, "root": "/x"}
    assert non_default_options("extract", extract) == {"n_mels": 32, "root": "/x"}
    nested = {"base": params, "noise": {"sigmas": [0.0, 0.5], "models": ["clcr", "late-fusion"]}}
    assert non_default_options("noise", nested) == {
        "base.epochs": 5, "base.variant": "full-mix", "noise.sigmas": [0.0, 0.5],
    }


def test_list_outputs_includes_evaluations_inside_train_outputs(tmp_path: Path):
    train = StageDir(tmp_path, StageKey("train", 1, "synth", {"a": 1}))
    with train.lock():
        train.begin()
        train.complete()
    size = {r.stage: r.size for r in list_outputs(tmp_path)}["train"]
    evaluation = StageDir(train.path, StageKey("eval", 1, "synth", {"split": "test"}))
    with evaluation.lock():
        evaluation.begin()
        (evaluation.path / "predictions.csv").write_text("x" * 10_000)
        evaluation.complete()
    rows = {r.stage: r for r in list_outputs(tmp_path)}
    assert sorted(rows) == ["eval", "train"]
    # each row counts its own files: the train run's size is not its evaluation's
    assert rows["train"].size == size and rows["eval"].size > 10_000


def test_unknown_options_are_errors_not_ignored(tmp_path: Path):
    from clcr_cli.config import load_toml, train_config
    from clcr_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown train option.*nosuch"):
        train_config({}, {"nosuch": 1})
    bad = tmp_path / "c.toml"
    bad.write_text("[train]\nepochz = 3\n")
    with pytest.raises(ConfigError, match=r"c.toml: \[train\]: unknown train option\(s\): epochz \(did you mean epochs\?\)"):
        train_config(load_toml(bad), {}, str(bad))
    assert train_config({"train": {"epochs": 3}}, {"epochs": 5}).epochs == 5  # CLI wins over TOML


def _slow_work(calls: list[int]) -> dict[str, int]:
    calls.append(1)
    time.sleep(0.5)
    return {"calls": len(calls)}


def test_produce_does_the_work_once_for_concurrent_callers(tmp_path: Path):
    """The second caller waits on the lock, then finds the output complete and reuses it."""
    from concurrent.futures import ThreadPoolExecutor

    from rich.console import Console

    from clcr_cli.cache import produce

    calls: list[int] = []
    quiet = Console(quiet=True)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(
            lambda _: produce(StageDir(tmp_path, key()), lambda: _slow_work(calls), console=quiet), range(2)
        ))
    assert len(calls) == 1 and sorted(r is None for r in results) == [False, True]
    assert StageDir(tmp_path, key()).manifest()["summary"] == {"calls": 1}
    assert produce(StageDir(tmp_path, key()), lambda: _slow_work(calls), console=quiet) is None
    assert produce(StageDir(tmp_path, key()), lambda: _slow_work(calls), force=True, console=quiet) == {"calls": 2}


def test_atomic_path_removes_a_failed_write_and_stale_temps_of_dead_writers(tmp_path: Path):
    import subprocess

    from clcr_cli.cache import atomic_path, remove_stale_temps

    with pytest.raises(RuntimeError), atomic_path(tmp_path / "out.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []
    finished = subprocess.Popen(["true"])
    finished.wait()
    dead = tmp_path / f".data.tmp-{finished.pid}-deadbeef"
    (dead / "audio").mkdir(parents=True)
    live = tmp_path / f".other.tmp-{__import__('os').getpid()}-0000beef"
    live.write_text("being written")
    remove_stale_temps(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [live.name]


def _completed(workdir: Path, files: dict[str, bytes]) -> StageDir:
    stage = StageDir(workdir, key())
    with stage.lock():
        stage.begin()
        for name, content in files.items():
            (stage.path / name).write_bytes(content)
        stage.complete()
    return stage


def test_reuse_checks_sizes_and_small_hashes_and_verify_checks_every_hash(tmp_path: Path, monkeypatch):
    from clcr_cli import cache

    stage = _completed(tmp_path, {"small.txt": b"abc", "big.bin": b"x" * 100})
    monkeypatch.setattr(cache, "HASHED_ON_REUSE", 50)
    (stage.path / "big.bin").write_bytes(b"y" * 100)  # same size, other content: only --verify sees it
    assert stage.check().state == "complete"
    assert stage.check(full=True).problems == {"big.bin": "content differs from its recorded sha256"}
    (stage.path / "small.txt").write_bytes(b"abd")
    assert stage.check().problems == {"small.txt": "content differs from its recorded sha256"}
    (stage.path / "small.txt").write_bytes(b"ab")
    assert stage.check().describe() == "small.txt: 2 bytes, the manifest says 3"
    (stage.path / "small.txt").unlink()
    assert stage.check().describe() == "small.txt: missing" and not stage.is_complete()
    rows = list_outputs(tmp_path, verify=True)
    assert [(r.state, r.problem) for r in rows] == [
        ("corrupt", "big.bin: content differs from its recorded sha256; small.txt: missing")
    ]


def test_a_corrupt_output_is_redone_from_what_is_intact(tmp_path: Path):
    from rich.console import Console

    from clcr_cli.cache import produce

    stage = _completed(tmp_path, {"kept.txt": b"intact", "bad.txt": b"good"})
    nested = stage.path / "eval" / "x-1" / "metrics.json"
    nested.parent.mkdir(parents=True)
    nested.write_text("{}")
    (stage.path / "bad.txt").write_bytes(b"evil")
    seen: dict[str, bool] = {}

    def work() -> dict[str, int]:
        seen.update(kept=(stage.path / "kept.txt").exists(), bad=(stage.path / "bad.txt").exists(),
                    nested=nested.exists())
        (stage.path / "bad.txt").write_bytes(b"good")
        return {"redone": 1}

    console = Console(record=True, width=200)
    assert produce(stage, work, console=console) == {"redone": 1}
    said = console.export_text()
    assert "redoing extract synth" in said and "bad.txt: content differs from its recorded sha256" in said
    assert seen == {"kept": True, "bad": False, "nested": False}  # damaged and nested outputs removed
    assert stage.is_complete() and "eval/x-1/metrics.json" not in stage.manifest()["files"]


@pytest.mark.parametrize("name", ["../../precious.txt", "ABS", "", "."])
def test_a_manifest_naming_files_outside_the_output_is_unreadable(tmp_path: Path, name: str):
    from rich.console import Console

    from clcr_cli.cache import produce

    stage = _completed(tmp_path, {"out.txt": b"x"})
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    manifest = stage.manifest()
    manifest["files"][str(outside) if name == "ABS" else name] = {"size": 1, "sha256": "0" * 64}
    (stage.path / MANIFEST).write_text(json.dumps(manifest))
    check = stage.check()
    assert check.state == "corrupt" and list(check.problems) == [MANIFEST]
    assert "outside the output" in check.describe()
    produce(stage, lambda: {"again": 1}, console=Console(quiet=True))
    assert outside.read_text() == "keep me" and stage.is_complete()


def test_manifests_of_earlier_versions_record_sizes_only(tmp_path: Path):
    stage = _completed(tmp_path, {"out.txt": b"hello"})
    manifest = stage.manifest()
    manifest["files"] = {name: entry["size"] for name, entry in manifest["files"].items()}
    (stage.path / MANIFEST).write_text(json.dumps(manifest))
    assert stage.check(full=True).state == "complete"
    (stage.path / "out.txt").write_bytes(b"hell")
    assert stage.check().describe() == "out.txt: 4 bytes, the manifest says 5"


def test_stage_folders_are_named_by_plain_names_only(tmp_path: Path):
    from clcr_cli.cache import is_folder_name

    for bad in ("..", "../x", "/abs", "a/b", ".hidden", "", 3, None):
        assert not is_folder_name(bad)
        with pytest.raises(ClcrError, match="cannot name a extract output folder"):
            StageDir(tmp_path, StageKey("extract", 1, bad, {}))
    assert is_folder_name("synth-reg") and is_folder_name("my_data.v2")


# --- the stages do the work once for concurrent callers ----------------------------------------


def _slowed(monkeypatch, module, name: str) -> list[int]:
    """Replace ``module.name`` by a slower version that counts its calls."""
    calls: list[int] = []
    original = getattr(module, name)

    def slow(*args, **kwargs):
        calls.append(1)
        time.sleep(2)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, slow)
    return calls


def _twice_at_once(run):
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda _: run(), range(2)))


def test_concurrent_eval_ablate_and_noise_do_the_work_once(workdir: Path, trained: Path, monkeypatch):
    from clcr_cli.stages import ablate, evaluate, noise

    quiet = Console(quiet=True)
    calls = _slowed(monkeypatch, evaluate, "evaluate")
    first, second = _twice_at_once(lambda: run_eval(trained, EvalConfig(split="valid"), console=quiet))
    assert len(calls) == 1 and first == second
    base = train_config({}, {"task": "synth", **QUICK})
    calls = _slowed(monkeypatch, ablate, "write_tables")
    cfg = AblateConfig(variants=("full",), split="valid")
    first, second = _twice_at_once(lambda: run_ablate(base, extract_cfg(), cfg, workdir, console=quiet))
    assert len(calls) == 1 and first == second
    calls = _slowed(monkeypatch, noise, "sweep")
    cfg = NoiseConfig(sigmas=(0.0, 1.0), noise_seeds=(7,), models=("clcr",), modality="all", split="valid")
    first, second = _twice_at_once(lambda: run_noise(base, extract_cfg(), cfg, workdir, console=quiet))
    assert len(calls) == 1 and first == second


# --- the damaged outputs of a workspace, through the command line -------------------------------


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
