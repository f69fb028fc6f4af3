"""User-facing errors: one line that names the file and the problem.

The CLI prints ``error: <message>`` for any :class:`ClcrError` and exits non-zero;
the traceback is shown only with ``--verbose``. A failing filesystem call (an
``OSError``: a read-only folder, a full disk, a permission) is reported the same way,
as :func:`environment_error` words it: the path and the cause.

Every writer puts its writes under :func:`writing`, which turns the environment's
refusals -- an ``OSError``, or a library's ``RuntimeError`` that carries the failed
call's errno (HDF5 writes ``errno = 28`` into its messages) -- into one
:class:`StorageError` naming the output, whatever library did the writing.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class ClcrError(Exception):
    """An error whose message is meant for the user, on one line."""


class DataError(ClcrError):
    """Bad or missing input data. ``path`` names the file or folder at fault."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(ClcrError):
    """An option or configuration value that cannot be used."""


class StorageError(ClcrError):
    """The environment refused a write (or a read): a full disk, a quota, a read-only
    filesystem, a permission. ``path`` (None when unknown) and ``cause`` make the line."""

    def __init__(self, path: Path | str | None, cause: str, code: int | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.cause = cause
        self.errno = code
        super().__init__(f"{self.path}: {cause}" if path else cause)


# The errnos that are the environment's doing, not the program's or the data's: no space,
# no quota, a read-only filesystem, a permission, the file-size limit, a failing device.
ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO}
)

# HDF5 reports a failing system call inside a long message of its own:
# "... filename = '/x/part.h5', ... errno = 28, error message = 'No space left on device', ..."
# (opening a file: "unable to open file: name = '/x/part.h5', errno = 2, ...")
_HDF5_FILE = re.compile(r"\b(?:file)?name = '([^']+)'")
_HDF5_CAUSE = re.compile(r"error message = '([^']+)'")
_HDF5_ERRNO = re.compile(r"errno = (\d+)")


def failure_errno(exc: BaseException) -> int | None:
    """The errno of the system call that failed behind ``exc``: an ``OSError``'s own, or
    the one HDF5 writes into the message of the ``RuntimeError`` or ``OSError`` it raises."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    found = _HDF5_ERRNO.search(str(exc))
    return int(found.group(1)) if found else None


def _named_path(exc: BaseException) -> str | None:
    """The path the failing call named: an ``OSError``'s filename, or the one in HDF5's message."""
    if isinstance(exc, OSError) and exc.filename:
        return str(exc.filename)
    found = _HDF5_FILE.search(" ".join(str(exc).split()))
    return found.group(1) if found else None


def _cause(exc: BaseException) -> str:
    """The reason, on one line: HDF5's error message, the strerror, or the text."""
    text = " ".join(str(exc).split())
    told = _HDF5_CAUSE.search(text)
    code = failure_errno(exc)
    strerror = exc.strerror if isinstance(exc, OSError) else None
    cause = told.group(1) if told else strerror or (os.strerror(code) if code else text) or type(exc).__name__
    return " ".join(str(cause).split())


def environment_error(exc: BaseException, where: Path | str | None = None) -> ClcrError:
    """``exc`` as one line: the path (the one the call named, else ``where``) and the cause.

    ``exc`` is an ``OSError``, or a library's error that carries one in its message
    (h5py's ``RuntimeError``: ``filename = '...', errno = 28, error message = '...'``)."""
    return StorageError(_named_path(exc) or where, _cause(exc), failure_errno(exc))


def _about(named: str, path: Path) -> bool:
    """Whether ``named`` is ``path``, lies inside it, or is (or lies inside) a temporary
    name beside it that ``cache.atomic_path`` gave it (``.<name>.tmp-<pid>-<id>``)."""
    target = Path(os.path.abspath(path))
    for p in (q := Path(os.path.abspath(named)), *q.parents):
        if p == target or (p.parent == target.parent and p.name.startswith(f".{target.name}.")):
            return True
    return False


@contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """Writes of ``path`` (a file, or a folder and its files, or the temporary name it
    is written under): where the environment refuses one -- an ``OSError`` or a
    ``RuntimeError`` whose errno is in :data:`ENVIRONMENT_ERRNOS` -- the block's error is
    raised as one :class:`StorageError` that names ``path`` (not the temporary name; a
    file elsewhere that the call named, an input it read, is named as it is) and the cause.

    Other errors pass unchanged. Use it around any writer, beside ``cache.atomic_path``::

        with atomic_path(path) as tmp, writing(path), open(tmp, "wb") as fh:
            torch.save(state, fh)   # a file object: torch then raises the OSError itself
    """
    try:
        yield
    except StorageError:
        raise
    except (OSError, RuntimeError) as exc:
        code = failure_errno(exc)
        if code not in ENVIRONMENT_ERRNOS:
            raise
        named = _named_path(exc)
        where = path if named is None or _about(named, Path(path)) else named
        raise StorageError(where, _cause(exc), code) from exc
