"""The staged cache: every stage output is a directory named by what determines it.

A stage output lives in ``<workdir>/<stage>/<dataset>-<key>/`` where ``key`` hashes the
stage's name and version, the options that change its result and the keys of its inputs
(:class:`StageKey`). Inside it:

- ``params.json``   written when the stage starts: what the key was computed from;
- ``manifest.json`` written last, through a temporary file and a rename: the output is
  *complete* exactly when this file exists;
- ``.lock``         an advisory ``flock``: one process writes an output at a time.

A complete output is reused; a changed option gives another key and so another folder;
``force`` clears the folder and redoes the stage. A partial output (a run that was killed)
is left as it is, so that a stage that knows how can resume from it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clcr_cli.errors import ClcrError

PARAMS = "params.json"
MANIFEST = "manifest.json"
LOCK = ".lock"


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the same options always hash the same."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


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
    """One stage output folder: its state, its lock and its atomic completion."""

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
                if child.name.startswith(LOCK):
                    continue
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
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


def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def list_outputs(workdir: Path) -> list[CachedOutput]:
    """Every stage output under ``workdir`` (folders with a ``params.json``), oldest first.

    Stage outputs sit at ``<stage>/<name>``; evaluations sit inside the train output they
    evaluated, at ``train/<name>/eval/<name>``.
    """
    rows = []
    found = [*Path(workdir).glob(f"*/*/{PARAMS}"), *Path(workdir).glob(f"train/*/eval/*/{PARAMS}")]
    for params_file in sorted(found):
        folder = params_file.parent
        try:
            info = json.loads(params_file.read_text())
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
