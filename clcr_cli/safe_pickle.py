"""Load a pickle that may come from anyone, without running its code or its demands.

``pickle.load`` calls whatever global a file names (``os.system`` included). MMSA
ships its features as pickles, so :func:`load` unpickles with an allow-list: the pickle
opcodes for dicts, lists, tuples, str, bytes and numbers need no global, and the only
globals admitted are the ones numpy needs to rebuild arrays, dtypes and scalars (under
both ``numpy.core`` and numpy 2's ``numpy._core``), plus ``_codecs.encode`` and
``bytes``, which protocol-2 pickles use to store bytes (``bytes()`` for empty ones). Any other global is refused before it is
imported, with a DataError naming the file and the global.

Nor can a small file demand unbounded work. Every array states its shape and dtype
before numpy allocates it (``_reconstruct``, then the state given to ``__setstate__``),
and all of them together may declare no more bytes than the file holds (an object array:
one byte an element, the least an element costs in a pickle): more is refused, naming
the array's shape, before anything is allocated. An object array must also come with
exactly one element per place (numpy would read past a shorter list). ``numpy.ndarray``
is admitted only as ``_reconstruct``'s argument, never called; ``_codecs.encode`` and
``bytes`` only as protocol 2 uses them (latin-1, which keeps the length; no argument);
and no length a pickle states makes the reader ask for more than the file still holds.
"""

from __future__ import annotations

import codecs
import math
import operator
import os
import pickle
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from clcr_cli.errors import DataError

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric


class _ArrayType:
    """What the name ``numpy.ndarray`` resolves to: a token that ``_reconstruct`` accepts
    and nothing can call (calling ``ndarray(shape)`` would allocate any shape)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "numpy.ndarray"


ARRAY_TYPE = _ArrayType()


def _encode(text: Any, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol 2 stores bytes: a str, latin-1 (one byte a char);
    another codec could grow its input (hex doubles it) at each of a chain of calls."""
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode is admitted for latin-1 str only, not {encoding!r}")
    return codecs.encode(text, encoding)


def _empty_bytes(*args: Any) -> bytes:
    """``bytes()``: how protocol 2 stores ``b""`` (an empty array's data); ``bytes(n)``
    would allocate any n."""
    if args:
        raise pickle.UnpicklingError("bytes is admitted without arguments only (b'')")
    return b""


RECONSTRUCT = "_reconstruct"  # resolved per load: it spends the load's budget

ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): ARRAY_TYPE,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _encode,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}
for _package in ("numpy.core", "numpy._core"):
    ALLOWED[(f"{_package}.multiarray", "_reconstruct")] = RECONSTRUCT
    ALLOWED[(f"{_package}.multiarray", "scalar")] = _multiarray.scalar
    ALLOWED[(f"{_package}.numeric", "_frombuffer")] = _numeric._frombuffer


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list."""


class Oversized(pickle.UnpicklingError):
    """An array declares more than the file can hold (the message says what)."""


def _elements(shape: Any) -> tuple[tuple[int, ...], int]:
    """``shape`` as a tuple of ints and the product (a single int is a 1-d shape)."""
    dims = tuple(map(operator.index, shape if isinstance(shape, tuple | list) else (shape,)))
    return dims, math.prod(dims)


def _human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError


class _BoundedFile:
    """The file as the unpickler reads it: never asked for more than it still holds, so
    that a length the pickle states (a frame, bytes) cannot size an allocation."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self._handle, self._left = handle, size
        self.size = size

    def read(self, n: int = -1) -> bytes:
        data = self._handle.read(self._left if n < 0 else min(n, self._left))
        self._left -= len(data)
        return data

    def readline(self) -> bytes:
        data = self._handle.readline()
        self._left -= len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        n = self._handle.readinto(buffer)
        self._left -= n
        return n


class AllowListUnpickler(pickle._Unpickler):
    """An Unpickler that resolves only :data:`ALLOWED` globals and lets the arrays of a
    file declare, all together, no more bytes than the file's size.

    Python's own implementation of the unpickler, for its hook on BUILD (the C one calls
    ``ndarray.__setstate__`` unseen); numpy's data are large ``bytes`` read whole, so it
    is about as fast on feature pickles.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: _BoundedFile) -> None:
        super().__init__(file)
        self._file, self._budget = file, file.size  # what the arrays may still declare

    def find_class(self, module: str, name: str) -> Any:
        try:
            found = ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None
        return self._reconstruct if found is RECONSTRUCT else found

    def _claim(self, shape: Any, dtype: Any) -> int:
        """Spend the budget on an array of ``shape`` and ``dtype``, or refuse it; the
        number of elements."""
        dims, n = _elements(shape)
        dtype = np.dtype(dtype)
        size = n * (1 if dtype.hasobject else dtype.itemsize)
        if size > self._budget:
            besides = "" if self._budget == self._file.size else " beside the arrays before it"
            raise Oversized(
                f"an array declares shape {dims} of {dtype} ({_human(n * dtype.itemsize)}), "
                f"more than the {self._file.size:,}-byte file holds{besides}"
            )
        self._budget -= max(size, 0)
        return n

    def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        if subtype is not ARRAY_TYPE:
            raise pickle.UnpicklingError("_reconstruct is admitted for numpy.ndarray only")
        self._claim(shape, dtype)
        return _multiarray._reconstruct(np.ndarray, shape, dtype)

    def load_build(self) -> None:
        """BUILD: an array's state (shape, dtype, data) is checked before numpy sees it."""
        state, inst = self.stack[-1], self.stack[-2]
        if isinstance(inst, np.ndarray) and isinstance(state, tuple) and len(state) in (4, 5):
            shape, dtype, _, data = state[-4:]
            n = self._claim(shape, dtype)
            if np.dtype(dtype).hasobject and not (isinstance(data, list) and len(data) == n):
                found = f"{len(data)} elements" if isinstance(data, list) else type(data).__name__
                raise pickle.UnpicklingError(f"an object array of {n} elements comes with {found}")
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build

    def load_bytearray8(self) -> None:
        """BYTEARRAY8 sizes its buffer before reading into it: not beyond the file's size."""
        (n,) = struct.unpack("<Q", self.read(8))
        buffer = bytearray(n if n <= self._file.size else 0)
        if n > self._file.size or self.readinto(buffer) != n or len(buffer) != n:
            raise pickle.UnpicklingError("pickle data was truncated")
        self.append(buffer)

    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8


def load(path: Path) -> Any:
    """Unpickle ``path`` admitting only numpy arrays, lists, dicts, str and numbers."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            return AllowListUnpickler(_BoundedFile(f, os.fstat(f.fileno()).st_size)).load()
    except RefusedGlobal as err:
        raise DataError(
            path,
            f"refused to unpickle global '{err}': only numpy arrays, lists, dicts, str and numbers are allowed",
        ) from None
    except Oversized as err:
        raise DataError(path, f"{err}: refused before allocating it") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        LookupError,
        OverflowError,
        MemoryError,
    ) as err:
        raise DataError(path, f"not a readable pickle ({type(err).__name__}: {err})") from None
    except OSError as err:
        raise DataError(path, f"cannot read the file ({err.strerror})") from None
