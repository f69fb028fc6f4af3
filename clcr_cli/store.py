"""The HDF5 feature store: how extracted features are laid out, written and read.

Extraction writes *parts*: small HDF5 files of ``part_size`` consecutive samples, each
written to a temporary name and renamed into place, so that a killed run loses at most
the part in progress and a new run continues after the last finished part. When every
part exists they are assembled, one part at a time (memory does not grow with the
dataset), into one store per dataset and extract key::

    features.h5
      attrs: clcr_format, dataset, target, class_names (JSON), num_samples,
             extract_key, settings (JSON), versions (JSON)
      meta/id      (N,)   str    sample ids, in the dataset's order
      meta/split   (N,)   str    train | valid | test
      meta/label   (N,)   f8     class index or regression target
      <modality>/data    (N, ...)  padded features (see below), chunked, gzip
      <modality>/length  (N,)   i4   valid steps of each sample
        attrs: kind (levels | sequence | frames), source, dim

    kind      data shape            dtype     time axis
    levels    (N, K, T, D)          float32   2   K BERT levels of width D
    sequence  (N, T, F)             float32   1   log-mel / MFCC / given features
    frames    (N, T, H, W, C)       uint8     1   RGB frames (C=3), quantised flow (C=2)
    tokens    (N, 3, T)             int32     2   token ids, attention mask, token type ids
                                                  (extract --text-tokens: a BERT in the model)

Padded steps are zero. Everything is readable with plain ``h5py``.

Both writers write through :class:`_Storage` (h5py's ``fileobj`` driver): HDF5 never sees a
write fail, so a full disk cannot leave an h5py handle that will not close (and the process
to crash at exit); the failure is raised once the handle is closed, as the one line of
:func:`clcr_cli.errors.writing` naming the file, and the temporary file is removed.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from clcr_cli.cache import atomic_path
from clcr_cli.errors import DataError, writing

FORMAT_VERSION = 1
REDO = "the file is damaged: run `clcr extract` with its options and --force to redo it"
KIND_TIME_AXIS = {"levels": 1, "sequence": 0, "frames": 0, "tokens": 1}  # of one sample's array
CHUNK_BYTES = 2 << 20
STR = h5py.string_dtype()


@dataclass(frozen=True)
class ModalityLayout:
    """How one modality is stored: its model-facing kind and where it came from."""

    kind: str  # levels | sequence | frames
    source: str  # text | audio | video | flow | array
    dtype: str  # float32 | uint8 | int32


@dataclass
class PartData:
    """The features of consecutive samples: the content of one part file.

    ``features[m][i]`` is sample i's unpadded array for modality m (time on the
    kind's time axis); ``skipped`` lists (id, file, reason) of samples left out.
    """

    ids: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    labels: list[float] = field(default_factory=list)
    features: dict[str, list[np.ndarray]] = field(default_factory=dict)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)


def _pad_stack(arrays: Sequence[np.ndarray], axis: int, length: int, dtype: str) -> np.ndarray:
    """Stack per-sample arrays, zero-padding each along ``axis`` to ``length``."""
    first = arrays[0]
    shape = list(first.shape)
    shape[axis] = length
    out = np.zeros((len(arrays), *shape), dtype=dtype)
    for i, a in enumerate(arrays):
        index = [i] + [slice(None)] * a.ndim
        index[1 + axis] = slice(0, a.shape[axis])
        out[tuple(index)] = a
    return out


class _Storage(io.RawIOBase):
    """The bytes of an HDF5 file being written, for h5py's ``fileobj`` driver.

    The first write the system refuses (a full disk, a quota, a size limit) is kept as
    :attr:`failure`, and that write and every later one are kept in memory instead, so
    that HDF5 reads back what it wrote and never sees a write fail: a failed write leaves
    HDF5 a handle it cannot close, and the process crashes at exit (h5py 3 / HDF5 2: a
    segmentation fault). The writer stops at its next :meth:`check`, which raises the
    failure; what is kept in memory is the little HDF5 writes until then.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
        self._pos = 0
        self._size = 0
        self._kept: list[tuple[int, bytes]] = []  # (offset, data) of the writes since the failure
        self.failure: OSError | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = offset + {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` from the position: the disk's bytes, then the kept writes over them."""
        view = memoryview(buffer).cast("B")
        start, n = self._pos, max(0, min(len(view), self._size - self._pos))
        got = os.preadv(self._fd, [view[:n]], start) if n else 0
        view[got:] = bytes(len(view) - got)  # beyond the end (or what the disk never got): zeros
        for offset, data in self._kept:
            lo, hi = max(offset, start), min(offset + len(data), start + n)
            if lo < hi:
                view[lo - start : hi - start] = data[lo - offset : hi - offset]
        self._pos += len(view)
        return len(view)

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if self.failure is None:
            try:
                done = 0
                while done < len(view):
                    done += os.pwrite(self._fd, view[done:], self._pos + done)
            except OSError as exc:
                self.failure = exc
        if self.failure is not None:
            self._kept.append((self._pos, bytes(view)))
        self._pos += len(view)
        self._size = max(self._size, self._pos)
        return len(view)

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else size
        if self.failure is None:
            try:
                os.ftruncate(self._fd, size)
            except OSError as exc:
                self.failure = exc
        self._size = size
        return size

    def check(self) -> None:
        """Raise the first write the system refused, if one was."""
        if self.failure is not None:
            raise self.failure

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


@contextmanager
def _create_hdf5(tmp: Path, path: Path) -> Iterator[tuple[h5py.File, _Storage]]:
    """A new HDF5 file at ``tmp`` (the temporary name of ``path``), on :class:`_Storage`.

    The h5py handle is closed before anything propagates; a refused write is then raised
    as :func:`clcr_cli.errors.writing` words it (``path``: the cause), in place of any
    error it caused in the block.
    """
    with writing(path), _Storage(tmp) as storage:
        f = h5py.File(storage, "w")
        try:
            yield f, storage
        finally:
            try:
                f.close()
            finally:
                storage.check()


def write_part(path: Path, part: PartData, layouts: dict[str, ModalityLayout]) -> None:
    """Write one part atomically (temporary file, then rename)."""
    with atomic_path(path) as tmp, _create_hdf5(tmp, path) as (f, _):
        f.create_dataset("id", data=np.array(part.ids, dtype=object), dtype=STR)
        f.create_dataset("split", data=np.array(part.splits, dtype=object), dtype=STR)
        f.create_dataset("label", data=np.asarray(part.labels, dtype="f8"))
        skipped = np.array([list(s) for s in part.skipped], dtype=object).reshape(-1, 3)
        f.create_dataset("skipped", data=skipped, dtype=STR)
        for name, layout in layouts.items():
            arrays = part.features.get(name, [])
            axis = KIND_TIME_AXIS[layout.kind]
            lengths = np.array([a.shape[axis] for a in arrays], dtype="i4")
            g = f.create_group(name)
            g.create_dataset("length", data=lengths)
            if arrays:
                g.create_dataset("data", data=_pad_stack(arrays, axis, int(lengths.max()), layout.dtype))


def read_part_skipped(path: Path) -> list[tuple[str, str, str]]:
    with h5py.File(path, "r") as f:
        return [tuple(s.decode() if isinstance(s, bytes) else s for s in row) for row in f["skipped"][()]]


def _chunk_rows(n: int, row_shape: tuple[int, ...], dtype: str) -> int:
    row_bytes = int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    return max(1, min(n, CHUNK_BYTES // max(row_bytes, 1)))


def assemble_store(
    parts: Sequence[Path],
    out: Path,
    layouts: dict[str, ModalityLayout],
    attrs: dict[str, Any],
) -> int:
    """Join part files, in order, into the store at ``out`` (atomically). Returns N.

    Two passes over the parts: lengths and shapes first (to size the padded arrays),
    then the data, one part in memory at a time.
    """
    n = 0
    max_len = dict.fromkeys(layouts, 0)
    row_shape: dict[str, tuple[int, ...]] = {}
    for p in parts:
        with h5py.File(p, "r") as f:
            n += len(f["id"])
            for name in layouts:
                if "data" not in f[name]:
                    continue
                max_len[name] = max(max_len[name], int(f[name]["length"][()].max()))
                row_shape[name] = f[name]["data"].shape[1:]
    with atomic_path(out) as tmp, _create_hdf5(tmp, out) as (f, storage):
        f.attrs.update({"clcr_format": FORMAT_VERSION, "num_samples": n})
        f.attrs.update({k: v if isinstance(v, (str, int, float)) else json.dumps(v) for k, v in attrs.items()})
        meta = f.create_group("meta")
        ids = meta.create_dataset("id", (n,), dtype=STR)
        splits = meta.create_dataset("split", (n,), dtype=STR)
        labels = meta.create_dataset("label", (n,), dtype="f8")
        datasets = {}
        for name, layout in layouts.items():
            if name not in row_shape:
                raise DataError(out, f"no sample has features for modality {name!r}")
            shape = list(row_shape[name])
            shape[KIND_TIME_AXIS[layout.kind]] = max_len[name]
            g = f.create_group(name)
            g.attrs.update({"kind": layout.kind, "source": layout.source, "dim": shape[-1]})
            datasets[name] = (
                g.create_dataset(
                    "data",
                    (n, *shape),
                    dtype=layout.dtype,
                    chunks=(_chunk_rows(n, tuple(shape), layout.dtype), *shape),
                    compression="gzip",
                    compression_opts=1,
                    shuffle=True,
                ),
                g.create_dataset("length", (n,), dtype="i4"),
            )
        start = 0
        for p in parts:
            with h5py.File(p, "r") as part:
                m = len(part["id"])
                if m == 0:
                    continue
                stop = start + m
                ids[start:stop] = part["id"][()]
                splits[start:stop] = part["split"][()]
                labels[start:stop] = part["label"][()]
                for name, layout in layouts.items():
                    data, length = datasets[name]
                    block = part[name]["data"][()]
                    axis = 1 + KIND_TIME_AXIS[layout.kind]
                    pad = [(0, 0)] * block.ndim
                    pad[axis] = (0, max_len[name] - block.shape[axis])
                    data[start:stop] = np.pad(block, pad)
                    length[start:stop] = part[name]["length"][()]
                start = stop
            storage.check()  # a full disk ends the assembly at the part it refused
    return n


@dataclass(frozen=True)
class ModalityInfo:
    name: str
    kind: str
    source: str
    shape: tuple[int, ...]  # per sample, padded
    dtype: str

    @property
    def dim(self) -> int:
        return int(self.shape[-1])


class FeatureStore:
    """Read access to a ``features.h5`` written by :func:`assemble_store`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(self.path, "feature store not found (run `clcr extract` first)")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            reason = " ".join(str(exc).split())
            raise DataError(self.path, f"not a readable HDF5 file ({reason}); {REDO}") from None
        if self._file.attrs.get("clcr_format") != FORMAT_VERSION:
            self._file.close()
            raise DataError(self.path, "not a clcr feature store (or one of another format version)")
        try:
            self._read_metadata()
        except (OSError, KeyError, ValueError, TypeError) as exc:
            self._file.close()
            raise DataError(self.path, f"damaged feature store ({type(exc).__name__}: {exc}); {REDO}") from None

    def _read_metadata(self) -> None:
        f = self._file
        self.dataset: str = f.attrs["dataset"]
        self.target: str = f.attrs["target"]
        self.extract_key: str = f.attrs.get("extract_key", "")  # the extract output's key
        self.class_names: list[str] = json.loads(f.attrs["class_names"])
        self.settings: dict[str, Any] = json.loads(f.attrs.get("settings", "{}"))
        self.ids = np.array([s.decode() for s in f["meta/id"][()]], dtype=object)
        self.splits = np.array([s.decode() for s in f["meta/split"][()]], dtype=object)
        self.labels = f["meta/label"][()]
        self.modalities = {
            name: ModalityInfo(
                name=name,
                kind=f[name].attrs["kind"],
                source=f[name].attrs["source"],
                shape=tuple(f[name]["data"].shape[1:]),
                dtype=str(f[name]["data"].dtype),
            )
            for name in f
            if name != "meta"
        }

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split_indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == split)

    def read(self, modality: str, indices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(data, lengths) of ``modality`` for ``indices`` (sorted; all samples if None).

        Rows are read chunk by chunk: every stored chunk that holds a wanted row is read (and
        decompressed) once as a contiguous block, and the rows are picked from it. h5py's own
        selection of scattered rows decompresses a chunk again for each row it serves (15x
        slower on synth's frames).
        """
        if indices is not None and len(indices) and np.any(np.diff(indices) <= 0):
            raise ValueError("indices must be strictly increasing")
        try:
            return self._read(self._file[modality], indices)
        except OSError as exc:  # HDF5 cannot read or decompress a chunk: the file is damaged
            reason = " ".join(str(exc).split())[:200]
            raise DataError(self.path, f"cannot read {modality} ({reason}); {REDO}") from None

    @staticmethod
    def _read(g: h5py.Group, indices: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if indices is None:
            return g["data"][()], g["length"][()]
        indices = np.asarray(indices)
        data = g["data"]
        step = data.chunks[0] if data.chunks else max(len(data), 1)
        out = np.empty((len(indices), *data.shape[1:]), dtype=data.dtype)
        blocks = indices // step
        for block in np.unique(blocks):
            wanted = blocks == block
            start = int(block) * step
            out[wanted] = data[start : start + step][indices[wanted] - start]
        return out, g["length"][indices]
