"""Load a pickle that may come from anyone, without running its code.

``pickle.load`` calls whatever global a file names (``os.system`` included). MMSA
ships its features as pickles, so :func:`load` unpickles with an allow-list: the pickle
opcodes for dicts, lists, tuples, str, bytes and numbers need no global, and the only
globals admitted are the ones numpy needs to rebuild arrays, dtypes and scalars (under
both ``numpy.core`` and numpy 2's ``numpy._core``), plus ``_codecs.encode``, which
protocol-2 pickles use to store bytes. Any other global is refused before it is
imported, with a DataError naming the file and the global.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from clcr_cli.errors import DataError

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric

ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}
for _package in ("numpy.core", "numpy._core"):
    ALLOWED[(f"{_package}.multiarray", "_reconstruct")] = _multiarray._reconstruct
    ALLOWED[(f"{_package}.multiarray", "scalar")] = _multiarray.scalar
    ALLOWED[(f"{_package}.numeric", "_frombuffer")] = _numeric._frombuffer


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list."""


class AllowListUnpickler(pickle.Unpickler):
    """An Unpickler whose ``find_class`` resolves only :data:`ALLOWED` globals."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None


def load(path: Path) -> Any:
    """Unpickle ``path`` admitting only numpy arrays, lists, dicts, str and numbers."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            return AllowListUnpickler(f).load()
    except RefusedGlobal as err:
        raise DataError(
            path,
            f"refused to unpickle global '{err}': only numpy arrays, lists, dicts, str and numbers are allowed",
        ) from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
    ) as err:
        raise DataError(path, f"not a readable pickle ({type(err).__name__}: {err})") from None
    except OSError as err:
        raise DataError(path, f"cannot read the file ({err.strerror})") from None
