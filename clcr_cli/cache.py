"""The staged cache: every stage output is a directory named by what determines it.

A stage output lives in ``<workdir>/<stage>/<dataset>-<key>/`` where ``key`` hashes the
stage's name and version, the options that change its result and the keys of its inputs
(:class:`StageKey`). Inside it:

- ``params.json``   written when the stage starts: what the key was computed from;
- ``manifest.json`` written last, through a temporary file and a rename: every file of
  the output with its size and sha256. The output is *complete* when this file exists
  and the files are as it records them (:func:`check_output`); *corrupt* when they are
  not (a file missing, of another size, or -- where it is hashed -- of other content);
- ``.lock``         a :class:`filelock.FileLock` (``flock`` on Unix, ``msvcrt`` on
  Windows): one process writes an output at a time; ``.lock.pid`` names the holder.

Every stage goes through :func:`produce`: reuse a complete output, else take the lock,
check again (another process may have finished it while this one waited), begin, do the
work, complete. A changed option gives another key and so another folder; ``force``
clears the folder and redoes the stage. A partial output (a run that was killed) is left
as it is, so that a stage that knows how can resume from it. A corrupt output is never
reused: its damaged files (and the outputs nested in it) are removed and the stage is
redone, resuming from what is intact (a train run from an intact ``last.pt``).

Reuse checks every file's size, and the sha256 of files up to :data:`HASHED_ON_REUSE`
bytes; ``clcr status --verify`` hashes them all. Files are written through
:func:`atomic_path` (a temporary name, then a rename); the workspace is searched through
:func:`complete_outputs` and :func:`list_outputs` only. A name read from a file that
becomes a folder name goes through :func:`is_folder_name` first.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from rich import filesize
from rich.console import Console
from rich.markup import escape

from clcr_cli.errors import ClcrError, environment_error

PARAMS = "params.json"
MANIFEST = "manifest.json"
LOCK = ".lock"
TEMP_MARK = ".tmp-"  # in the name of whatever atomic_path is writing
# evaluations and predictions sit inside the train output they used
OUTPUT_GLOBS = {"eval": "train/*/eval/*", "predict": "train/*/predict/*"}
NESTED = ("eval", "predict")  # sub-folders of an output that hold other outputs, not its own files
HASHED_ON_REUSE = 16 << 20  # files up to this size (bytes) are hashed each time an output is reused
FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def is_folder_name(name: object) -> bool:
    """True when ``name`` (a dataset or task name, possibly read from a file) can name a
    folder: letters, digits, '_', '.' and '-', starting with a letter or digit -- never a
    path, ``..`` or an absolute name."""
    return isinstance(name, str) and FOLDER_NAME.match(name) is not None


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the same options always hash the same."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def sha256_file(path: Path) -> str:
    """The sha256 of a file's content (``hashlib.file_digest`` reads it in blocks)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def human_size(n: int) -> str:
    """``n`` bytes in decimal units, labelled as such: ``999 bytes``, ``1.2 kB``, ``16.8 MB``
    (powers of 1000, ``rich.filesize.decimal``; 16 MiB is 16.8 MB)."""
    return filesize.decimal(n)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary name beside ``path`` to write a file or a folder to; when the block ends
    without error it is renamed to ``path`` (readers see the old version or the new one,
    never half of one), otherwise it is removed. The name holds this process's id, so that
    :func:`remove_stale_temps` can tell a dead writer's leftovers from a live one's."""
    tmp = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        remove(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`), synced to disk."""
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def write_csv(path: Path, header: list[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write a CSV table (``header``, then ``rows``) to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def remove(path: Path) -> None:
    """Delete a file or a folder (and what it holds), if it exists."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a live process of another user
        return True
    return True


def remove_stale_temps(folder: Path) -> None:
    """Delete what :func:`atomic_path` left in ``folder`` for writers that have died."""
    for temp in folder.glob(f".*{TEMP_MARK}*"):
        pid = temp.name.rsplit(TEMP_MARK, 1)[1].split("-")[0]
        if not (pid.isdigit() and _alive(int(pid))):
            remove(temp)


def _acquired(lock: FileLock, timeout: float) -> bool:
    """Take ``lock`` within ``timeout`` s (-1: however long it takes); False if not."""
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        return False
    return True


def _holder(pid_file: Path) -> str:
    """Who holds a lock, as its ``<name>.pid`` file says (``pid 1234``)."""
    try:
        return pid_file.read_text().strip() or "another process"
    except OSError:
        return "another process"


@dataclass(frozen=True)
class StageKey:
    """What a stage output depends on; :attr:`digest` names its folder."""

    stage: str
    version: int
    dataset: str
    params: Mapping[str, Any]
    inputs: Mapping[str, str] = field(default_factory=dict)  # upstream stage -> its digest

    @property
    def digest(self) -> str:
        payload = {
            "stage": self.stage,
            "version": self.version,
            "params": self.params,
            "inputs": self.inputs,
            "dataset": self.dataset,
        }
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:12]

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "version": self.version,
            "dataset": self.dataset,
            "key": self.digest,
            "params": dict(self.params),
            "inputs": dict(self.inputs),
        }


@dataclass(frozen=True)
class Check:
    """What :func:`check_output` found in an output folder."""

    state: str  # complete | partial (no manifest yet) | corrupt
    problems: dict[str, str] = field(default_factory=dict)  # file -> what is wrong with it
    manifest: dict[str, Any] = field(default_factory=dict)  # the manifest, when readable

    def describe(self) -> str:
        """The problems on one line, e.g. ``features.h5: 812 bytes, the manifest says 9,216``."""
        return "; ".join(f"{name}: {problem}" for name, problem in self.problems.items())


def _recorded(entry: Any) -> tuple[int, str | None]:
    """(size, sha256) of a manifest's file entry; outputs completed before checksums were
    recorded hold the size alone."""
    if isinstance(entry, int) and not isinstance(entry, bool):
        return entry, None
    size, digest = entry["size"], entry.get("sha256")
    if not isinstance(size, int) or not (digest is None or isinstance(digest, str)):
        raise TypeError(f"bad entry {entry!r}")
    return size, digest


def _inside(name: str) -> bool:
    """True when ``name`` (read from a manifest) is a path below the output folder."""
    path = Path(name)
    return bool(path.parts) and not path.is_absolute() and ".." not in path.parts


def check_output(folder: Path, full: bool = False) -> Check:
    """The state of an output folder. Every file its manifest lists must exist with the
    recorded size and, for files up to :data:`HASHED_ON_REUSE` bytes (every file with
    ``full``), the recorded sha256."""
    if not (folder / MANIFEST).is_file():
        return Check("partial")
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = {name: _recorded(entry) for name, entry in manifest["files"].items()}
        if not all(isinstance(name, str) and _inside(name) for name in files):
            raise ValueError("a listed file lies outside the output")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return Check("corrupt", {MANIFEST: f"unreadable ({type(exc).__name__}: {exc})"})
    problems = {}
    for name, (size, digest) in files.items():
        path = folder / name
        if not path.is_file():
            problems[name] = "missing"
        elif path.stat().st_size != size:
            problems[name] = f"{path.stat().st_size:,} bytes, the manifest says {size:,}"
        elif digest is not None and (full or size <= HASHED_ON_REUSE) and sha256_file(path) != digest:
            problems[name] = "content differs from its recorded sha256"
    return Check("corrupt" if problems else "complete", problems, manifest)


class StageDir:
    """One stage output folder: its state, its lock and its atomic completion.

    ``workdir`` is the folder the stage's folders sit under: the workspace, or for an
    evaluation the train output it evaluates.
    """

    def __init__(self, workdir: Path, key: StageKey) -> None:
        if not is_folder_name(key.dataset):
            raise ClcrError(f"{key.dataset!r} cannot name a {key.stage} output folder")
        self.key = key
        self.path = Path(workdir) / key.stage / f"{key.dataset}-{key.digest}"

    def check(self, full: bool = False) -> Check:
        return check_output(self.path, full)

    def is_complete(self) -> bool:
        return self.check().state == "complete"

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / MANIFEST).read_text())

    @contextmanager
    def lock(
        self,
        timeout: float | None = None,
        on_wait: Callable[[str], None] | None = None,
        name: str = LOCK,
    ) -> Iterator[None]:
        """Hold the folder's lock; wait for another writer up to ``timeout`` s (None: forever),
        saying once (``on_wait``) whom it waits for.

        ``name`` picks another lock file, for writers of disjoint parts (extract shards). The
        holder's pid is written beside the lock file (``<name>.pid``), not in it: filelock
        3.29.7 and before truncate the lock file at each try (tox-dev/filelock#591), Windows
        keeps a locked file from being read, and where ``flock`` is missing filelock's
        fallback marks the lock file itself.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        lock, holder = FileLock(self.path / name), self.path / f"{name}.pid"
        if not _acquired(lock, 0):
            if on_wait is not None and timeout != 0:
                on_wait(f"waiting for {_holder(holder)} to finish {self.path}")
            if not _acquired(lock, -1 if timeout is None else max(timeout, 0)):
                raise ClcrError(f"{self.path}: being written by {_holder(holder)}; wait for it or try again later")
        try:
            holder.write_text(f"pid {os.getpid()}")
            yield
        finally:
            holder.unlink(missing_ok=True)  # before the release: the next holder writes its own
            lock.release()

    def _own_files(self) -> list[Path]:
        """The output's files: not the manifest, the locks or the files of nested outputs."""
        return [p for p in _output_files(self.path) if p.name != MANIFEST and not p.name.startswith(LOCK)]

    def _clear(self) -> None:
        for child in self.path.iterdir():
            if not child.name.startswith(LOCK):
                remove(child)

    def begin(self, force: bool = False) -> None:
        """Start (or resume) writing: with ``force`` everything but the lock is removed first;
        otherwise the manifest and what dead writers left half-written in the folder."""
        if force:
            self._clear()
        else:
            (self.path / MANIFEST).unlink(missing_ok=True)
            remove_stale_temps(self.path)
        atomic_write_text(self.path / PARAMS, json.dumps(self.key.as_dict(), indent=2, default=str))

    def discard(self, check: Check) -> None:
        """Remove what a corrupt output's ``check`` found damaged, and the outputs nested in
        it (they were made from it); with an unreadable manifest, everything."""
        if MANIFEST in check.problems:
            self._clear()
            return
        for name in [*check.problems, *NESTED]:
            remove(self.path / name)

    def complete(self, summary: Mapping[str, Any] | None = None) -> None:
        """Mark the output complete: the manifest lists every file with its size and sha256
        (nested outputs have their own) and is written last."""
        files = {
            str(p.relative_to(self.path)): {"size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in self._own_files()
        }
        manifest = {
            **self.key.as_dict(),
            "completed": datetime.now(UTC).isoformat(timespec="seconds"),
            "files": files,
            "summary": dict(summary or {}),
        }
        atomic_write_text(self.path / MANIFEST, json.dumps(manifest, indent=2, default=str))


def produce(
    stage: StageDir,
    work: Callable[[], Mapping[str, Any] | None],
    *,
    force: bool = False,
    console: Console | None = None,
    lock_timeout: float | None = None,
    writer: bool = True,
    resumable: bool = True,
) -> Mapping[str, Any] | None:
    """The routine of every stage: make ``stage``'s output with ``work``, or reuse it.

    A complete output is reused (unless ``force``). Otherwise the folder's lock is taken
    (waiting for another writer up to ``lock_timeout`` s), the state is checked again -- a
    process that waited on the lock finds what the other one wrote and reuses it --, a
    corrupt output's damaged files are discarded (with a message), the folder is begun,
    ``work()`` writes into it and returns the summary that completes it. ``writer`` False
    is a process that works alongside the writer (a DDP rank other than 0): it neither
    locks, begins nor completes. Returns the summary, or None if reused. A failing
    filesystem call (a full disk, a read-only folder) is one line naming the path.
    ``resumable`` False: a stage that cannot resume from what a failed ``work()`` left (an
    evaluation): the folder is removed, so no partial output lingers in ``clcr status``.
    """
    console = console or Console(stderr=True)
    key = stage.key
    reusing = f"[green]reusing[/] {key.stage} {key.dataset} ({key.digest}): {stage.path}"
    if not force and stage.is_complete():
        console.print(reusing)
        return None
    if not writer:
        return work()
    begun = False
    try:
        with stage.lock(lock_timeout, on_wait=console.print):
            check = stage.check()
            if not force and check.state == "complete":
                console.print(reusing)
                return None
            if not force and check.state == "corrupt":
                console.print(f"[yellow]redoing[/] {key.stage} {key.dataset} ({key.digest}), its output "
                              f"is damaged: {escape(check.describe())}", soft_wrap=True)
                stage.discard(check)
            stage.begin(force=force)
            begun = True
            summary = dict(work() or {})
            stage.complete(summary)
    except OSError as exc:
        _unless_resumable(stage, resumable or not begun)
        raise environment_error(exc, stage.path) from exc
    except BaseException:
        _unless_resumable(stage, resumable or not begun)
        raise
    return summary


def _unless_resumable(stage: StageDir, resumable: bool) -> None:
    """After a failed ``work()`` (this process began the output): a stage that cannot resume
    leaves no unfinished output behind."""
    if not resumable and stage.path.is_dir() and not stage.is_complete():
        remove(stage.path)


@dataclass(frozen=True)
class CachedOutput:
    """One row of ``clcr status``."""

    stage: str
    dataset: str
    key: str
    state: str  # complete | partial | corrupt
    problem: str  # what is damaged, for a corrupt output
    size: int
    modified: float
    params: dict[str, Any]
    path: Path

    @property
    def complete(self) -> bool:
        return self.state == "complete"


def _folders(workdir: Path, stage: str | None = None) -> list[Path]:
    """The output folders (complete or not) of ``stage`` (None: every stage) under
    ``workdir``: those holding a params.json or a manifest.json."""
    patterns = [OUTPUT_GLOBS.get(stage, f"{stage}/*")] if stage else ["*/*", *OUTPUT_GLOBS.values()]
    found = {
        p.parent
        for pattern in patterns
        for name in (PARAMS, MANIFEST)
        for p in Path(workdir).glob(f"{pattern}/{name}")
    }
    return sorted(found)


def complete_outputs(workdir: Path, stage: str, dataset: str | None = None) -> list[Path]:
    """The complete (not corrupt) output folders of ``stage`` (of ``dataset`` only, if
    given) under ``workdir``, the most recently completed last."""
    found = []
    for folder in _folders(workdir, stage):
        check = check_output(folder)
        if check.state == "complete" and dataset in (None, check.manifest.get("dataset")):
            found.append(((folder / MANIFEST).stat().st_mtime, folder))
    return [folder for _, folder in sorted(found)]


def _output_files(folder: Path) -> list[Path]:
    """Every file of the output in ``folder``, sorted, but those of the outputs nested in
    it (a train run's evaluations and predictions are outputs of their own)."""
    return [p for p in sorted(folder.rglob("*")) if p.is_file() and p.relative_to(folder).parts[0] not in NESTED]


def _key_info(folder: Path, check: Check) -> dict[str, Any]:
    """What made an output: its params.json, else its manifest (which repeats it), else
    what the folder's names say."""
    try:
        info = json.loads((folder / PARAMS).read_text())
        if isinstance(info, dict):
            return info
    except (OSError, ValueError):
        pass
    if check.manifest:
        return check.manifest
    dataset, _, key = folder.name.rpartition("-")
    return {"stage": folder.parent.name, "dataset": dataset, "key": key}


def list_outputs(workdir: Path, verify: bool = False) -> list[CachedOutput]:
    """Every stage output under ``workdir``, oldest first, with its state: checked as
    reuse checks it, or with ``verify`` every file against its recorded sha256."""
    rows = []
    for folder in _folders(workdir):
        check = check_output(folder, full=verify)
        info = _key_info(folder, check)
        files = _output_files(folder)
        params = info.get("params")
        rows.append(
            CachedOutput(
                stage=str(info.get("stage", folder.parent.name)),
                dataset=str(info.get("dataset", "?")),
                key=str(info.get("key", "?")),
                state=check.state,
                problem=check.describe(),
                size=sum(p.stat().st_size for p in files),
                modified=max((p.stat().st_mtime for p in files), default=folder.stat().st_mtime),
                params=params if isinstance(params, dict) else {},
                path=folder,
            )
        )
    return sorted(rows, key=lambda r: r.modified)
