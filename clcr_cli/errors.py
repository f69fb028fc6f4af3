"""User-facing errors: one line that names the file and the problem.

The CLI prints ``error: <message>`` for any :class:`ClcrError` and exits non-zero;
the traceback is shown only with ``--verbose``. A failing filesystem call (an
``OSError``: a read-only folder, a full disk, a permission) is reported the same way,
as :func:`environment_error` words it: the path and the cause.
"""

from __future__ import annotations

import re
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


# HDF5 reports a failing system call inside a long message of its own:
# "... filename = '/x/part.h5', ... error message = 'No space left on device', ..."
_HDF5_FILE = re.compile(r"filename = '([^']+)'")
_HDF5_CAUSE = re.compile(r"error message = '([^']+)'")


def environment_error(exc: OSError, where: Path | str | None = None) -> ClcrError:
    """``exc`` as one line: the path (the one the call named, else ``where``) and the cause."""
    text = " ".join(str(exc).split())
    named, told = _HDF5_FILE.search(text), _HDF5_CAUSE.search(text)
    path = exc.filename or (named.group(1) if named else where)
    cause = " ".join((told.group(1) if told else exc.strerror or text or type(exc).__name__).split())
    return ClcrError(f"{path}: {cause}" if path else cause)
