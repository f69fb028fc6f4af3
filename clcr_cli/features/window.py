"""The time window a sample's audio and video are cut to (AVE's events), checked once."""

from __future__ import annotations

import math
from pathlib import Path

from clcr_cli.errors import DataError


def check_window(path: Path, window: tuple[float, float]) -> None:
    """A DataError naming ``path`` unless ``0 <= start < end`` and both are finite seconds."""
    start, end = window
    if not (0 <= start < end and math.isfinite(end)):
        raise DataError(path, f"bad time window {window}: need 0 <= start < end, both finite")
