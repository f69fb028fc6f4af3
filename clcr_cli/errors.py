"""User-facing errors: one line that names the file and the problem.

The CLI prints ``error: <message>`` for any :class:`ClcrError` and exits non-zero;
the traceback is shown only with ``--verbose``.
"""

from __future__ import annotations

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
