"""The staged cache: every stage output is a directory named by what determines it.

A stage output lives in ``<workdir>/<stage>/<dataset>-<key>/`` where ``key`` hashes the
stage's name and version, the options that change its result and the keys of its inputs
(:class:`StageKey`). Inside it:

- ``params.json``   written when the stage starts: what the key was computed from;
- ``manifest.json`` written last, through a temporary file and a rename: the output is
  *complete* exactly when this file exists;
- ``.lock``         an advisory ``flock``: one process writes an output at a time.

Every stage goes through :func:`produce`: reuse a complete output, else take the lock,
check again (another process may have finished it while this one waited), begin, do the
work, complete. A changed option gives another key and so another folder; ``force``
clears the folder and redoes the stage. A partial output (a run that was killed) is left
as it is, so that a stage that knows how can resume from it.

Files are written through :func:`atomic_path` (a temporary name, then a rename); the
workspace is searched through :func:`complete_outputs` and :func:`list_outputs` only.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from clcr_cli.errors import ClcrError

PARAMS = "params.json"
MANIFEST = "manifest.json"
LOCK = ".lock"
TEMP_MARK = ".tmp-"  # in the name of whatever atomic_path is writing
OUTPUT_GLOBS = {"eval": "train/*/eval/*"}  # evaluations sit inside the train output they evaluated


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the same options always hash the same."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


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
        _remove(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`), synced to disk."""
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _remove(path: Path) -> None:
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
            _remove(temp)


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


class StageDir:
    """One stage output folder: its state, its lock and its atomic completion.

    ``workdir`` is the folder the stage's folders sit under: the workspace, or for an
    evaluation the train output it evaluates.
    """

    def __init__(self, workdir: Path, key: StageKey) -> None:
        self.key = key
        self.path = Path(workdir) / key.stage / f"{key.dataset}-{key.digest}"

    def is_complete(self) -> bool:
        return (self.path / MANIFEST).is_file()

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / MANIFEST).read_text())

    @contextmanager
    def lock(
        self,
        timeout: float | None = None,
        on_wait: Callable[[str], None] | None = None,
        name: str = LOCK,
    ) -> Iterator[None]:
        """Hold the folder's lock; wait for another writer up to ``timeout`` s (None: forever).

        ``name`` picks another lock file, for writers of disjoint parts (extract shards).
        """
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / name, "a+") as fh:  # closing the file releases the flock
            start = time.monotonic()
            warned = False
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    fh.seek(0)
                    holder = fh.read().strip() or "another process"
                    if timeout is not None and time.monotonic() - start >= timeout:
                        raise ClcrError(
                            f"{self.path}: being written by {holder}; wait for it or try again later"
                        ) from None
                    if on_wait is not None and not warned:
                        on_wait(f"waiting for {holder} to finish {self.path}")
                        warned = True
                    time.sleep(0.2)
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}")
            fh.flush()
            yield

    def begin(self, force: bool = False) -> None:
        """Start (or resume) writing: with ``force`` everything but the lock is removed first."""
        if force:
            for child in self.path.iterdir():
                if not child.name.startswith(LOCK):
                    _remove(child)
        else:
            (self.path / MANIFEST).unlink(missing_ok=True)
        atomic_write_text(self.path / PARAMS, json.dumps(self.key.as_dict(), indent=2, default=str))

    def complete(self, summary: Mapping[str, Any] | None = None) -> None:
        """Mark the output complete: the manifest lists every file and is written last."""
        files = {
            str(p.relative_to(self.path)): p.stat().st_size
            for p in sorted(self.path.rglob("*"))
            if p.is_file() and p.name != MANIFEST and not p.name.startswith(LOCK)
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
) -> Mapping[str, Any] | None:
    """The routine of every stage: make ``stage``'s output with ``work``, or reuse it.

    A complete output is reused (unless ``force``). Otherwise the folder's lock is taken
    (waiting for another writer up to ``lock_timeout`` s), completeness is checked again --
    a process that waited on the lock finds what the other one wrote and reuses it --, the
    folder is begun, ``work()`` writes into it and returns the summary that completes it.
    ``writer`` False is a process that works alongside the writer (a DDP rank other than
    0): it neither locks, begins nor completes. Returns the summary, or None if reused.
    """
    console = console or Console(stderr=True)
    key = stage.key
    reusing = f"[green]reusing[/] {key.stage} {key.dataset} ({key.digest}): {stage.path}"
    if stage.is_complete() and not force:
        console.print(reusing)
        return None
    if not writer:
        return work()
    with stage.lock(lock_timeout, on_wait=console.print):
        if stage.is_complete() and not force:
            console.print(reusing)
            return None
        stage.begin(force=force)
        summary = dict(work() or {})
        stage.complete(summary)
    return summary


@dataclass(frozen=True)
class CachedOutput:
    """One row of ``clcr status``."""

    stage: str
    dataset: str
    key: str
    complete: bool
    size: int
    modified: float
    params: dict[str, Any]
    path: Path


def _folders(workdir: Path, stage: str | None = None) -> list[Path]:
    """The output folders (complete or not) of ``stage`` (None: every stage) under ``workdir``."""
    patterns = [OUTPUT_GLOBS.get(stage, f"{stage}/*")] if stage else ["*/*", *OUTPUT_GLOBS.values()]
    found = {p.parent for pattern in patterns for p in Path(workdir).glob(f"{pattern}/{PARAMS}")}
    return sorted(found)


def complete_outputs(workdir: Path, stage: str, dataset: str | None = None) -> list[Path]:
    """The complete output folders of ``stage`` (of ``dataset`` only, if given) under
    ``workdir``, the most recently completed last."""
    found = []
    for folder in _folders(workdir, stage):
        manifest = folder / MANIFEST
        if manifest.is_file() and (dataset is None or json.loads(manifest.read_text())["dataset"] == dataset):
            found.append((manifest.stat().st_mtime, folder))
    return [folder for _, folder in sorted(found)]


def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def list_outputs(workdir: Path) -> list[CachedOutput]:
    """Every stage output under ``workdir`` (folders with a ``params.json``), oldest first."""
    rows = []
    for folder in _folders(workdir):
        try:
            info = json.loads((folder / PARAMS).read_text())
        except (OSError, json.JSONDecodeError):
            continue
        rows.append(
            CachedOutput(
                stage=info.get("stage", folder.parent.name),
                dataset=info.get("dataset", "?"),
                key=info.get("key", "?"),
                complete=(folder / MANIFEST).is_file(),
                size=_folder_size(folder),
                modified=max(p.stat().st_mtime for p in folder.iterdir()),
                params=info.get("params", {}),
                path=folder,
            )
        )
    return sorted(rows, key=lambda r: r.modified)
