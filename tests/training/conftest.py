"""Fixtures of the training tests: the toy store of toy_store.py, written once per module."""

from __future__ import annotations

from pathlib import Path

import pytest
from toy_store import write_store


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    return write_store(tmp_path_factory.mktemp("toy"))
