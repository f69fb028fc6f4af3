"""The allow-list unpickler: numpy/containers round-trip, anything executable is refused unrun."""

from __future__ import annotations

import codecs
import os
import pickle
import struct
import subprocess
import sys
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
        "empty": np.zeros((0, 3), np.float32),  # protocol 2 stores its b"" as bytes()
        "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        "zero_d": np.array(5.0),
        "records": np.array([(1, "a"), (2, "b")], dtype=[("x", "i4"), ("y", "O")]),
    }
    loaded = safe_pickle.load(dump(tmp_path / "ok.pkl", data, protocol))
    assert loaded.keys() == data.keys()
    for key in ("float", "int", "unicode", "objects", "empty", "fortran", "zero_d", "records"):
        np.testing.assert_array_equal(loaded[key], data[key])
        assert loaded[key].dtype == data[key].dtype and loaded[key].shape == data[key].shape
    assert loaded["fortran"].flags.f_contiguous
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


# --- a small file cannot demand unbounded work -----------------------------------------------

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct


class Reduce:
    """Pickles as ``reduce`` says: a call, and the state BUILD gives its result."""

    def __init__(self, *reduce: object) -> None:
        self.reduce = reduce

    def __reduce__(self):
        return self.reduce


def array_header(shape: tuple[int, ...], dtype: str, data: object = b"") -> Reduce:
    """An array as numpy pickles one, declaring ``shape`` with ``data`` (none by default)."""
    return Reduce(_reconstruct, (np.ndarray, (0,), b"b"), (1, shape, np.dtype(dtype), False, data))


@pytest.mark.parametrize(
    ("header", "declared"),
    [
        (Reduce(_reconstruct, (np.ndarray, (10**9, 10**4), b"b")), "shape (1000000000, 10000) of int8 (9.09 TiB)"),
        (array_header((10**9, 10**4), "i1"), "shape (1000000000, 10000) of int8 (9.09 TiB)"),
        (array_header((10**8,), "O", [1, 2, 3]), "shape (100000000,) of object (763 MiB)"),
        (Reduce(_reconstruct, (np.ndarray, (3,), np.dtype("V2000000000"))), "shape (3,) of |V2000000000 (5.59 GiB)"),
    ],
    ids=["reconstruct", "setstate", "objects", "itemsize"],
)
def test_an_array_larger_than_the_file_is_refused_before_allocating(tmp_path, header, declared):
    """A file of a few hundred bytes whose array declares terabytes (numpy ended in
    ``_ArrayMemoryError: Unable to allocate 9.09 TiB``): one DataError naming the file
    and the declared shape, before anything is allocated."""
    path = dump(tmp_path / "huge.pkl", {"train": {"audio": header}}, protocol=2)
    size = path.stat().st_size
    assert size < 400
    with pytest.raises(DataError) as err:
        safe_pickle.load(path)
    assert str(err.value) == (
        f"{path}: an array declares {declared}, more than the {size:,}-byte file holds: refused before allocating it"
    )


def test_arrays_together_may_not_declare_more_than_the_file(tmp_path):
    """An array of 150 bytes, then one that declares 200 (and holds none): the second fits
    the file alone, not beside the first."""
    path = dump(tmp_path / "two.pkl", [np.zeros(150, np.int8), array_header((200,), "i1")], protocol=4)
    assert 200 <= path.stat().st_size < 350
    with pytest.raises(DataError, match=r"more than the \d+-byte file holds beside the arrays before it"):
        safe_pickle.load(path)


def test_an_object_array_short_of_elements_is_refused_unread(tmp_path):
    """numpy reads past the end of a short list (a segmentation fault): refused first. In a
    process of its own, so that a regression cannot take the test session down."""
    path = dump(tmp_path / "short.pkl", array_header((2000,), "O", list(range(1500))), protocol=4)
    code = "import sys; from clcr_cli import safe_pickle; safe_pickle.load(sys.argv[1])"
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result  # the DataError, not a crash
    assert result.stderr.strip().splitlines()[-1] == (
        f"clcr_cli.errors.DataError: {path}: not a readable pickle "
        "(UnpicklingError: an object array of 2000 elements comes with 1500 elements)"
    )


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (pickle.dumps(Reduce(np.ndarray, ((10**9, 10**4), "i1")), protocol=2), "'_ArrayType' object is not callable"),
        (pickle.dumps(Reduce(codecs.encode, (b"ab" * 50, "hex")), protocol=2), "latin-1 str only, not 'hex'"),
        (pickle.dumps(Reduce(bytes, (10**12,)), protocol=2), "bytes is admitted without arguments only"),
        (b"\x80\x04\x8e" + struct.pack("<Q", 10**12) + b"abc", "EOFError"),  # BINBYTES8 of 1 TB
        (b"\x80\x05\x96" + struct.pack("<Q", 10**12) + b"abc", "truncated"),  # BYTEARRAY8 of 1 TB
        (b"\x80\x04\x95" + struct.pack("<Q", 10**12) + b"abc", "not a readable pickle"),  # a FRAME of 1 TB
    ],
    ids=["ndarray-call", "hex-codec", "bytes-of-n", "binbytes8", "bytearray8", "frame"],
)
def test_calls_and_lengths_that_would_allocate_are_refused(tmp_path, data, problem):
    """ndarray(shape) allocates any shape; a codec may grow its input at each of a chain
    of calls; bytes(n) allocates n; a stated length sizes the reader's buffer."""
    path = tmp_path / "demand.pkl"
    path.write_bytes(data)
    with pytest.raises(DataError, match="not a readable pickle") as err:
        safe_pickle.load(path)
    assert problem in str(err.value)
