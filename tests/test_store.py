"""The HDF5 feature store: part files, assembly and the reader, as round trips; a full
disk while writing is one line, with nothing cached lost and no temporary left."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from clcr_cli import store as store_module
from clcr_cli.errors import DataError, StorageError
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


# --- a full disk while writing ---------------------------------------------------------------

ATTRS = {"dataset": "toy", "target": "classification", "class_names": ["a", "b", "c", "d"]}


def big_part(rng: np.random.Generator, start: int, n: int) -> PartData:
    """Samples of incompressible frames: 200 kB a sample, stored."""
    part = make_part(rng, start, n)
    part.features["video"] = [rng.integers(0, 255, size=(16, 64, 64, 3), dtype=np.uint8) for _ in range(n)]
    return part


def write_parts(folder: Path, parts: list[PartData]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"part-{i}.h5" for i in range(len(parts))]
    for path, part in zip(paths, parts, strict=True):
        write_part(path, part, LAYOUTS)
    return paths


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp-" in p.name)


def disk_full_after(budget: int):
    """An ``os.pwrite`` that writes ``budget`` bytes in all, then fails as a full disk does."""
    pwrite, left = os.pwrite, [budget]

    def full(fd: int, data, offset: int) -> int:
        if len(data) > left[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        left[0] -= len(data)
        return pwrite(fd, data, offset)

    return full


@pytest.mark.parametrize("budget", [0, 4096, 300_000])
def test_a_full_disk_while_assembling_is_one_line_and_keeps_the_old_store(tmp_path: Path, monkeypatch, budget):
    """The disk fills at the start, amid the metadata, or amid the data: one StorageError
    naming the store, the store already there intact and readable, no temporary file."""
    rng = np.random.default_rng(0)
    parts = write_parts(tmp_path / "parts", [big_part(rng, 0, 10), big_part(rng, 10, 10)])
    out = tmp_path / "features.h5"
    assemble_store(parts[:1], out, LAYOUTS, ATTRS)
    before = out.read_bytes()
    inputs = {p: p.read_bytes() for p in parts}

    monkeypatch.setattr(store_module.os, "pwrite", disk_full_after(budget))
    with pytest.raises(StorageError) as raised:
        assemble_store(parts, out, LAYOUTS, ATTRS)
    monkeypatch.undo()
    assert str(raised.value) == f"{out}: No space left on device" and raised.value.errno == errno.ENOSPC
    assert out.read_bytes() == before and {p: p.read_bytes() for p in parts} == inputs
    assert temporaries(tmp_path) == []
    with FeatureStore(out) as store:
        assert len(store) == 10


def test_a_full_disk_while_writing_a_part_is_one_line(tmp_path: Path, monkeypatch):
    path = tmp_path / "part-0.h5"
    write_part(path, make_part(np.random.default_rng(0), 0, 2), LAYOUTS)
    before = path.read_bytes()
    monkeypatch.setattr(store_module.os, "pwrite", disk_full_after(2048))
    with pytest.raises(StorageError, match=rf"^{path}: No space left on device$"):
        write_part(path, big_part(np.random.default_rng(1), 0, 4), LAYOUTS)
    monkeypatch.undo()
    assert path.read_bytes() == before and temporaries(tmp_path) == []


def test_an_unwritable_folder_is_one_line(tmp_path: Path, monkeypatch):
    def read_only(path, flags, mode=0o777):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(store_module.os, "open", read_only)
    out = tmp_path / "features.h5"
    with pytest.raises(StorageError, match=rf"^{out}: Read-only file system$"):
        write_part(out, make_part(np.random.default_rng(0), 0, 2), LAYOUTS)


HDF5_FAILURE = (
    "Can't close dataset (file write failed: time = Wed Dec  2 07:32:07 2026\n, filename = '{tmp}', "
    "file descriptor = 3, errno = {code}, error message = '{message}', buf = 0x55c9, total write size = 787200)"
)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES])
def test_hdf5_failures_carrying_an_errno_are_the_one_environment_error(tmp_path: Path, code: int):
    """h5py raises RuntimeError (or OSError) with HDF5's errno in its text: under
    ``errors.writing`` the same one line as an OSError's, naming the output, not its
    temporary name."""
    from clcr_cli.errors import writing

    out = tmp_path / "features.h5"
    tmp = tmp_path / ".features.h5.tmp-123-abcdef12"
    for exc in (RuntimeError(HDF5_FAILURE.format(tmp=tmp, code=code, message=os.strerror(code))),
                OSError(code, os.strerror(code)), OSError(code, os.strerror(code), str(tmp))):
        with pytest.raises(StorageError) as raised, writing(out):
            raise exc
        assert str(raised.value) == f"{out}: {os.strerror(code)}" and raised.value.errno == code
        assert raised.value.__cause__ is exc  # the traceback that --verbose shows


def test_other_errors_pass_writing_unchanged(tmp_path: Path):
    from clcr_cli.errors import writing

    for exc in (RuntimeError("Can't decrement id ref count (no errno here)"), OSError("disk full"),
                FileNotFoundError(errno.ENOENT, "No such file or directory", "x"), ValueError("bad")):
        with pytest.raises(type(exc)) as raised, writing(tmp_path / "f.h5"):
            raise exc
        assert raised.value is exc


# The CLI's handling, in a process of its own: it must end with exit 2 and one line, not
# with a crash at exit (h5py handles left open on a full disk: a segmentation fault, 139).
ASSEMBLE = """
import hashlib, json, resource, signal, sys
from pathlib import Path

import typer

from clcr_cli.cli import user_errors
from clcr_cli.store import ModalityLayout, assemble_store

out, limit, earlier, parts = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
layouts = {k: ModalityLayout(*v) for k, v in json.loads(earlier.split("|")[0]).items()}
attrs = {"dataset": "toy", "target": "classification", "class_names": ["a", "b", "c", "d"]}
small = [Path(p) for p in earlier.split("|")[1:]]
if small:  # a complete store first, on the same disk
    assemble_store(small, out, layouts, attrs)


def digest():
    return hashlib.sha256(out.read_bytes()).hexdigest() if out.exists() else None


before = digest()
if limit:  # files may grow to `limit` bytes: past it a write fails (EFBIG), as on a full disk
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
code = 0
try:
    with user_errors(False):
        assemble_store([Path(p) for p in parts], out, layouts, attrs)
except typer.Exit as exc:
    code = exc.exit_code
print(json.dumps({"before": before, "after": digest(),
                  "listing": sorted(p.name for p in out.parent.iterdir())}))
sys.exit(code)
"""


def assemble_command(out: Path, parts: list[Path], *, limit: int = 0, earlier: list[Path] = ()) -> list[str]:
    layouts = json.dumps({k: [v.kind, v.source, v.dtype] for k, v in LAYOUTS.items()})
    return [sys.executable, "-c", ASSEMBLE, str(out), str(limit), "|".join([layouts, *map(str, earlier)]),
            *map(str, parts)]


def test_a_file_size_limit_mid_assembly_is_exit_2_and_one_line(tmp_path: Path):
    """RLIMIT_FSIZE makes the writes past 1 MB fail for real (EFBIG), no root needed."""
    rng = np.random.default_rng(0)
    parts = write_parts(tmp_path / "parts", [big_part(rng, 10 * i, 10) for i in range(4)])
    out = tmp_path / "extract" / "features.h5"
    out.parent.mkdir()
    assemble_store(parts[:1], out, LAYOUTS, ATTRS)
    inputs = {p: p.read_bytes() for p in parts}
    result = subprocess.run(assemble_command(out, parts, limit=1 << 20), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr == f"error: {out}: File too large\n"
    report = json.loads(result.stdout)
    assert report["after"] == report["before"] and report["listing"] == ["features.h5"]
    assert {p: p.read_bytes() for p in parts} == inputs


def tmpfs_runner(mountpoint: Path) -> list[str]:
    """A command prefix that runs its command with a tmpfs mounted on ``mountpoint``, in a
    mount namespace of its own (nothing stays mounted; no root needed where user namespaces
    are allowed); skips the test, saying why, where no tmpfs can be mounted."""
    if shutil.which("unshare") is None:
        pytest.skip("cannot mount a tmpfs: no `unshare` here")
    script = 'mount -t tmpfs -o "size=$1" tmpfs "$2" || exit 97; shift 2; exec "$@"'
    mountpoint.mkdir(parents=True, exist_ok=True)
    refusals = []
    for namespace in (["--user", "--map-root-user", "--mount"], ["--mount"]):
        runner = ["unshare", *namespace, "sh", "-c", script, "sh"]
        probe = subprocess.run([*runner, "1m", str(mountpoint), "true"], capture_output=True, text=True)
        if probe.returncode == 0:
            return runner
        refusals.append(" ".join(probe.stderr.split())[:200] or f"exit {probe.returncode}")
    pytest.skip(f"mount -t tmpfs is not permitted here ({'; '.join(refusals)})")


def test_a_full_tmpfs_mid_assembly_is_exit_2_and_one_line(tmp_path: Path):
    """A real 2 MB tmpfs: a small store fits, the next one (10 MB) does not. Exit 2 and one
    line, no crash; the small store byte-identical; the parts elsewhere untouched."""
    disk = tmp_path / "tmpfs"
    runner = tmpfs_runner(disk)
    rng = np.random.default_rng(0)
    small = write_parts(tmp_path / "small", [make_part(rng, 0, 4)])
    parts = write_parts(tmp_path / "parts", [big_part(rng, 10 * i, 10) for i in range(5)])
    inputs = {p: p.read_bytes() for p in [*small, *parts]}
    out = disk / "features.h5"
    result = subprocess.run([*runner, "2m", str(disk), *assemble_command(out, parts, earlier=small)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr == f"error: {out}: No space left on device\n"
    report = json.loads(result.stdout)
    assert report["before"] is not None and report["after"] == report["before"]
    assert report["listing"] == ["features.h5"], "no temporary left on the full disk"
    assert {p: p.read_bytes() for p in [*small, *parts]} == inputs
