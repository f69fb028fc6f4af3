"""The allow-list unpickler: numpy/containers round-trip, anything executable is refused unrun."""

from __future__ import annotations

import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest

from clcr_cli import safe_pickle
from clcr_cli.errors import DataError


def dump(path: Path, obj: object, protocol: int) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_and_containers_round_trip(tmp_path, protocol):
    data = {
        "float": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        "int": np.array([3, 1, 2], dtype=np.int64),
        "unicode": np.array(["a", "bc"]),
        "objects": np.array(["x$_$1", "y$_$2"], dtype=object),
        "scalar": np.float64(-1.25),
        "list": [1, 2.5, "three", None, True],
        "tuple": (1, "a"),
        "bytes": b"\x00\xff",
        "nested": {"k": [np.zeros(2, np.float16)]},
    }
    loaded = safe_pickle.load(dump(tmp_path / "ok.pkl", data, protocol))
    assert loaded.keys() == data.keys()
    for key in ("float", "int", "unicode", "objects"):
        np.testing.assert_array_equal(loaded[key], data[key])
        assert loaded[key].dtype == data[key].dtype
    assert (
        loaded["scalar"] == -1.25 and loaded["list"] == data["list"] and loaded["tuple"] == (1, "a")
    )
    assert loaded["bytes"] == b"\x00\xff" and loaded["nested"]["k"][0].dtype == np.float16


class Exploit:
    def __init__(self, call, marker: Path) -> None:
        self.call, self.marker = call, marker

    def __reduce__(self):
        if self.call is os.system:
            return (os.system, (f"touch {self.marker}",))
        return (subprocess.call, (["touch", str(self.marker)],))


@pytest.mark.parametrize("call", [os.system, subprocess.call])
def test_malicious_pickle_does_not_execute(tmp_path, call):
    marker = tmp_path / "marker"
    path = dump(tmp_path / "evil.pkl", {"train": [Exploit(call, marker)]}, protocol=4)
    with pytest.raises(
        DataError, match=r"refused to unpickle global '[\w.]+\.(system|call)': only numpy arrays"
    ) as err:
        safe_pickle.load(path)
    assert err.value.path == path and str(path) in str(err.value)
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # the same bytes do run code with the plain unpickler
    assert marker.exists()


def test_builtins_that_build_objects_are_refused(tmp_path):
    path = dump(tmp_path / "set.pkl", {1, 2}, protocol=2)  # protocol 2 names builtins.set
    with pytest.raises(
        DataError, match=r"refused to unpickle global '(__builtin__|builtins)\.set'"
    ):
        safe_pickle.load(path)


def test_unreadable_files(tmp_path):
    truncated = tmp_path / "cut.pkl"
    truncated.write_bytes(pickle.dumps({"a": np.ones(100)}, protocol=4)[:50])
    with pytest.raises(DataError, match="not a readable pickle"):
        safe_pickle.load(truncated)
    with pytest.raises(DataError, match="cannot read the file"):
        safe_pickle.load(tmp_path / "absent.pkl")
