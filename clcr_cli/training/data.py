"""From the feature store to model batches: a split held in memory, or streamed from HDF5.

A split is a set of store rows (train, valid or test), in store order. It reaches the
model in one of two ways, chosen by its size (``TrainConfig.stream_above_mb``, see
:func:`split_megabytes`):

- :class:`SplitData`: read from HDF5 once, in index order (contiguous chunk reads), and
  kept as tensors; batches are slices of those tensors, so the training loop opens no file;
- :class:`StoreSplit`: only the row numbers are held; each batch is read from the store
  when it is needed, through a ``torch.utils.data.DataLoader`` (``workers`` processes,
  each with its own handle on the file, prefetching; pinned memory on CUDA), so memory
  does not grow with the split.

Both walk the same batches in the same order (:func:`batch_indices`) and standardise the
same way, so a model trained on either is the same to the last bit. Sequence features are
standardised with statistics of the training split's valid steps (:class:`FeatureStats`,
accumulated over chunks of samples); BERT levels go in as they are (the encoder's LayerNorm
follows); frames stay uint8 until the model divides them by 255.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from clcr_cli.config import TrainConfig
from clcr_cli.model import ModelConfig
from clcr_cli.model.batch import Batch, ModalitySpec, step_mask
from clcr_cli.model.errors import ModelConfigError
from clcr_cli.store import KIND_TIME_AXIS, FeatureStore

STATS_CHUNK = 64  # samples read per chunk when accumulating FeatureStats
STATS_BYTES = 16 * 1024 * 1024  # and converted to float64 this many bytes at a time
PREFETCH = 2  # batches each loader worker reads ahead
MIB = 1024 * 1024

Rows = tuple[dict[str, Tensor], dict[str, Tensor], Tensor | None]  # inputs, lengths, target
# which samples have modality m: True or False for every sample, or (N,) bool, one per sample
Presence = dict[str, bool | Tensor]


def _standardised(
    inputs: dict[str, Tensor], lengths: dict[str, Tensor], stats: FeatureStats, kinds: dict[str, str]
) -> dict[str, Tensor]:
    """Sequence inputs standardised with training statistics; padded steps stay zero.

    Element-wise: a batch standardised on its own equals the same rows of a standardised split.
    """
    out = dict(inputs)
    for m, x in inputs.items():
        if stats.standardised(m, kinds[m]):
            mask = step_mask(lengths[m], x.shape[1])[..., None]
            out[m] = ((x - stats.mean[m]) / stats.std[m]) * mask
    return out


def _read_rows(store: FeatureStore, modality: str, rows: np.ndarray) -> tuple[Tensor, Tensor]:
    """(data, int64 lengths) of the store ``rows`` (increasing), as tensors."""
    data, length = store.read(modality, rows)
    return torch.from_numpy(np.ascontiguousarray(data)), torch.from_numpy(length.astype("int64"))


def _target(store: FeatureStore, rows: np.ndarray) -> Tensor:
    dtype = torch.long if store.target == "classification" else torch.float32
    return torch.as_tensor(store.labels[rows], dtype=dtype)


@dataclass
class SplitData:
    """One split of a store, in memory (``target`` None: new data, no labels)."""

    ids: list[str]
    inputs: dict[str, Tensor]
    lengths: dict[str, Tensor]
    target: Tensor | None

    def __len__(self) -> int:
        return len(self.ids)

    def modalities(self) -> list[str]:
        return list(self.inputs)

    def chunks(self, modality: str, size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """(data, lengths) of ``modality`` for consecutive runs of ``size`` samples."""
        x, n = self.inputs[modality], self.lengths[modality]
        for start in range(0, len(self), size):
            yield x[start : start + size], n[start : start + size]

    def rows(self, positions: Tensor) -> Rows:
        """The samples at ``positions`` (in that order)."""
        return (
            {m: x[positions] for m, x in self.inputs.items()},
            {m: n[positions] for m, n in self.lengths.items()},
            None if self.target is None else self.target[positions],
        )

    def __getitems__(self, positions: list[int]) -> Rows:
        return self.rows(torch.as_tensor(positions, dtype=torch.long))


class StoreSplit(Dataset):
    """One split of a store, streamed: a batch of samples is read from HDF5 when asked for.

    A ``Dataset`` whose ``__getitems__`` reads a whole batch (one sorted selection per
    modality, then put back in the asked order), so a ``DataLoader`` with a batch sampler
    fetches batches, in worker processes when asked. Each process opens the store once;
    the handle is not pickled.
    """

    def __init__(
        self,
        store: FeatureStore,
        index: np.ndarray,
        stats: FeatureStats | None = None,
        kinds: dict[str, str] | None = None,
    ) -> None:
        """The store rows ``index`` (increasing); with ``stats`` (and the modalities'
        ``kinds``), sequence inputs are standardised as they are read."""
        self.path = Path(store.path)
        self.index = np.asarray(index)
        self.ids = [str(i) for i in store.ids[self.index]]
        self.target = _target(store, self.index)
        self.stats = stats
        self.kinds = kinds or {m: info.kind for m, info in store.modalities.items()}
        self._store: FeatureStore | None = store
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None}

    def modalities(self) -> list[str]:
        return list(self.kinds)

    def store(self) -> FeatureStore:
        """This process's handle on the store (a forked worker opens its own)."""
        if self._store is None or self._pid != os.getpid():
            self._store, self._pid = FeatureStore(self.path), os.getpid()
        return self._store

    def chunks(self, modality: str, size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """(raw data, lengths) of ``modality`` for consecutive runs of ``size`` samples, read
        one run at a time."""
        for start in range(0, len(self), size):
            yield _read_rows(self.store(), modality, self.index[start : start + size])

    def __getitems__(self, positions: list[int]) -> Rows:
        """The samples at ``positions`` (in that order), standardised when stats are set."""
        pos = torch.as_tensor(positions, dtype=torch.long)
        ascending = pos.argsort()
        back = ascending.argsort()  # from store order back to the asked order
        rows = self.index[pos[ascending].numpy()]
        inputs, lengths = {}, {}
        for m in self.kinds:
            x, n = _read_rows(self.store(), m, rows)
            inputs[m], lengths[m] = x[back], n[back]
        if self.stats is not None:
            inputs = _standardised(inputs, lengths, self.stats, self.kinds)
        return inputs, lengths, self.target[pos]


Split = SplitData | StoreSplit
S = TypeVar("S", SplitData, StoreSplit)


@dataclass
class FeatureStats:
    """Per-feature mean and std over the valid steps of the training split.

    Used to standardise sequence inputs -- but the modalities in ``raw``, which the model
    reads as stored (:func:`raw_modalities`) -- and, by ``noise``, to scale Gaussian noise to
    each feature's spread (sigma = 1 is noise as large as the feature's own std).
    """

    mean: dict[str, Tensor]
    std: dict[str, Tensor]
    raw: tuple[str, ...] = ()

    @classmethod
    def of(cls, split: Split, kinds: dict[str, str], chunk: int = STATS_CHUNK, raw: tuple[str, ...] = ()) -> FeatureStats:
        """Accumulated in float64 over chunks of ``chunk`` samples of the raw (not yet
        standardised) ``split``, so memory stays bounded: a :class:`StoreSplit` is read one
        chunk at a time. Both kinds of split give the same chunks, hence the same bits."""
        mean, std = {}, {}
        for m in split.modalities():
            if kinds[m] == "tokens":  # token ids: nothing to standardise or to scale noise by
                mean[m], std[m] = torch.zeros(1), torch.ones(1)
                continue
            total = sq = count = 0
            for xs, lengths in split.chunks(m, chunk):
                mask = step_mask(lengths, xs.shape[1 + KIND_TIME_AXIS[kinds[m]]])
                if kinds[m] == "levels":  # (n, K, T, D) -> per level and dim
                    v = xs.permute(0, 2, 1, 3)[mask]
                elif kinds[m] == "sequence":  # (n, T, F) -> per feature
                    v = xs[mask]
                else:  # frames (n, T, H, W, C) -> per channel
                    v = xs[mask].reshape(-1, xs.shape[-1])
                # float64 copies of a few MiB at a time: a chunk of frames is ~10^8 values
                rows = max(1, STATS_BYTES // (8 * max(1, v.shape[1:].numel())))
                for part in v.split(rows):
                    part = part.double()
                    total, sq = total + part.sum(0), sq + (part * part).sum(0)
                count += len(v)
            mu = total / max(count, 1)
            var = (sq / max(count, 1) - mu * mu).clamp_min(0) * count / max(count - 1, 1)
            mean[m], std[m] = mu.float(), var.sqrt().clamp_min(1e-6).float()
        return cls(mean, std, raw)

    def standardised(self, modality: str, kind: str) -> bool:
        """Whether ``modality`` (of ``kind``) reaches the model standardised."""
        return kind == "sequence" and modality not in self.raw

    def as_lists(self) -> dict[str, dict[str, Any]]:
        return {m: {"mean": self.mean[m].tolist(), "std": self.std[m].tolist(), **({"raw": True} if m in self.raw else {})}
                for m in self.mean}

    @classmethod
    def from_lists(cls, d: dict[str, dict[str, Any]]) -> FeatureStats:
        return cls(
            {m: torch.tensor(v["mean"]) for m, v in d.items()},
            {m: torch.tensor(v["std"]) for m, v in d.items()},
            tuple(m for m, v in d.items() if v.get("raw") is True),
        )


def load_rows(store: FeatureStore, index: np.ndarray, modalities: list[str] | None = None) -> SplitData:
    """Read the store rows ``index`` (increasing) into memory (raw values: no normalisation)."""
    inputs, lengths = {}, {}
    for m in modalities or list(store.modalities):
        inputs[m], lengths[m] = _read_rows(store, m, index)
    return SplitData([str(i) for i in store.ids[index]], inputs, lengths, _target(store, index))


def load_split(store: FeatureStore, split: str, modalities: list[str] | None = None) -> SplitData:
    """Read ``split`` of ``store`` into memory (raw values: no normalisation yet)."""
    return load_rows(store, store.split_indices(split), modalities)


def split_megabytes(store: FeatureStore, index: np.ndarray) -> float:
    """What the store rows ``index`` take in memory (padded, decompressed), in MiB."""
    row_bytes = sum(
        int(np.prod(info.shape, dtype=np.int64)) * np.dtype(info.dtype).itemsize
        for info in store.modalities.values()
    )
    return len(index) * row_bytes / MIB


def open_split(store: FeatureStore, index: np.ndarray, stream_above_mb: float) -> Split:
    """The store rows ``index``: streamed when they take more than ``stream_above_mb`` MiB
    in memory, otherwise read into memory. Raw values (see :func:`standardise`)."""
    if split_megabytes(store, index) > stream_above_mb:
        return StoreSplit(store, index)
    return load_rows(store, index)


def standardise(split: S, stats: FeatureStats, kinds: dict[str, str]) -> S:
    """Standardise sequence inputs with training statistics; padded steps stay zero.

    In memory, at once; streamed, each batch as it is read (the same values).
    """
    if isinstance(split, StoreSplit):
        return StoreSplit(split.store(), split.index, stats, kinds)
    inputs = _standardised(split.inputs, split.lengths, stats, kinds)
    return SplitData(split.ids, inputs, split.lengths, split.target)


def carve_valid(index: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic (seeded) valid split carved from the train rows ``index``, for stores
    without one: (train rows, valid rows), each increasing."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(index), generator=g)
    n_valid = max(1, round(fraction * len(index)))
    return index[order[n_valid:].sort().values.numpy()], index[order[:n_valid].sort().values.numpy()]


def modality_specs(store: FeatureStore) -> tuple[ModalitySpec, ...]:
    """The model's view of the store's modalities."""
    specs = []
    for m, info in store.modalities.items():
        k = info.shape[0] if info.kind == "levels" else 1
        steps = info.shape[KIND_TIME_AXIS[info.kind]]
        dim = info.dim
        if info.kind == "tokens":  # a BERT in the model: its width, and the hidden states taken as levels
            text = store.settings.get("text", {})
            dim, k = int(text["hidden_size"]), len(text["layers"])
        specs.append(ModalitySpec(m, info.kind, dim, k, steps))  # type: ignore[arg-type]
    return tuple(specs)


def model_config(cfg: TrainConfig, store: FeatureStore) -> ModelConfig:
    """The model ``cfg`` asks for, completed with what the data decides: the store's
    modalities, its task and its number of classes, and a positional table as long as
    the store's longest sequence where ``max_len`` is shorter (KS's 1,024 fbank frames, a
    10 s clip's 1,001 log-mel frames). An ``encoder`` entry naming no modality of the
    store is a ModelConfigError."""
    specs = modality_specs(store)
    named = [part.split("=", 1)[0] for part in cfg.model.encoder.split(",") if "=" in part]
    unknown = [m for m in named if m not in store.modalities]
    if unknown:
        raise ModelConfigError(f"encoder: no modality {unknown[0]!r} in {store.path} "
                               f"(its modalities are {', '.join(store.modalities)})", ("encoder",))
    text = store.settings.get("text", {}) if any(spec.kind == "tokens" for spec in specs) else None
    return dataclasses.replace(
        cfg.model,
        modalities=specs,
        text_encoder=None if text is None else {"config": text["config"], "layers": list(text["layers"]),
                                                "model": text["model"]},
        task=store.target,  # type: ignore[arg-type]
        num_classes=max(store.num_classes, 1),
        max_len=max([cfg.model.max_len, *(spec.max_steps for spec in specs)]),
    )


def raw_modalities(mcfg: ModelConfig) -> tuple[str, ...]:
    """The sequence modalities that reach the model as stored, not standardised: the
    spectrograms a ResNet18 reads, which the peers feed it as they are (``stems.py``)."""
    return tuple(s.name for s in mcfg.modalities if s.kind == "sequence" and mcfg.encoder_of(s.name) == "resnet18")


def batch_indices(n: int, batch_size: int, generator: torch.Generator | None = None) -> list[Tensor]:
    """An epoch's batches of positions: a permutation drawn from ``generator`` (or 0..n-1
    without one), cut into runs of ``batch_size``. Both kinds of split follow it."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return list(order.split(batch_size)) if n else []


def _as_is(rows: Rows) -> Rows:
    """The loader's collate function: ``StoreSplit.__getitems__`` already returns a batch."""
    return rows


@dataclass(frozen=True)
class FrameViews:
    """What the model sees of stored frames: ``size`` x ``size`` views (``features/augment.py``).

    With an ``epoch`` (training) and ``augment``: torchvision's RandomResizedCrop and a
    horizontal flip, drawn per frame -- as OGM-GE draws them -- from (seed, epoch, sample id),
    so a resumed, streamed or multi-process run draws the same views; without (evaluation, or
    no ``augment``): the whole frame resized, as the peers' ``Resize((224, 224))``. Optical
    flow (2 channels) is only resized: a flip would have to negate its horizontal component.
    """

    size: int
    augment: bool = False
    seed: int = 0
    epoch: int | None = None

    def __call__(self, inputs: dict[str, Tensor], lengths: dict[str, Tensor], ids: list[str]) -> dict[str, Tensor]:
        from clcr_cli.features.augment import eval_view, train_view, view_rng

        out = dict(inputs)
        for m, x in inputs.items():
            if x.dim() != 5:  # frames only: (B, T, H, W, C)
                continue
            views = torch.zeros((*x.shape[:2], self.size, self.size, x.shape[-1]), dtype=x.dtype)
            crop = self.augment and self.epoch is not None and x.shape[-1] == 3
            for i, sample_id in enumerate(ids):
                frames = x[i, : int(lengths[m][i])].numpy()
                if len(frames) == 0:
                    continue
                view = (train_view(frames, view_rng(self.seed, self.epoch, sample_id), self.size, per_frame=True)
                        if crop else eval_view(frames, self.size, mode="resize"))
                views[i, : len(view)] = torch.from_numpy(view)
            out[m] = views
        return out


class ViewedSplit(Dataset):
    """A split whose batches pass through :class:`FrameViews`, in the loader's worker."""

    def __init__(self, split: Split, views: FrameViews) -> None:
        self.split, self.views = split, views

    def __len__(self) -> int:
        return len(self.split)

    def __getitems__(self, positions: list[int]) -> Rows:
        inputs, lengths, target = self.split.__getitems__(positions)
        return self.views(inputs, lengths, [self.split.ids[p] for p in positions]), lengths, target


def batches(
    split: Split,
    batch_size: int,
    generator: torch.Generator | None = None,
    present: Presence | None = None,
    workers: int = 0,
    pin_memory: bool = False,
    views: FrameViews | None = None,
) -> Iterator[Batch]:
    """Mini-batches in a random order (with ``generator``) or in order (without).

    ``present[m]`` marks modality m as missing for every sample (False: ``eval
    --missing``) or per sample of the split (an (N,) bool tensor: ``noise
    --missing-rate``, ``--modality-dropout``); a modality it does not name is present.
    ``views`` turns stored frames into what the model sees (:class:`FrameViews`). A
    streamed split, or one with views and ``workers``, is read by a ``DataLoader`` with
    ``workers`` processes (0: in this one) and, with ``pin_memory``, into pinned memory;
    it has a generator of its own, so it leaves torch's global RNG (dropout's) as it
    found it.
    """
    order = batch_indices(len(split), batch_size, generator)
    source: Dataset = split if views is None else ViewedSplit(split, views)
    if isinstance(split, StoreSplit) or (views is not None and workers):
        parts: Iterator[Rows] = iter(
            DataLoader(
                source,
                batch_sampler=[idx.tolist() for idx in order],
                collate_fn=_as_is,
                num_workers=workers,
                pin_memory=pin_memory,
                prefetch_factor=PREFETCH if workers else None,
                generator=torch.Generator(),
            )
        )
    elif views is not None:
        parts = (source.__getitems__(idx.tolist()) for idx in order)
    else:
        parts = (split.rows(idx) for idx in order)
    for idx, (inputs, lengths, target) in zip(order, parts, strict=True):
        yield Batch(inputs, lengths, target, None if present is None else _batch_presence(present, idx, inputs))


def frame_views(cfg: Any, epoch: int | None = None) -> FrameViews | None:
    """The views of a run's train options ``cfg`` (a TrainConfig or its model.json record:
    ``frame_view``, ``augment``, ``seed``): of training epoch ``epoch``, or for evaluation;
    None where frames reach the model as stored."""
    get = cfg.get if isinstance(cfg, dict) else lambda name, default=None: getattr(cfg, name, default)
    size = int(get("frame_view", 0) or 0)
    return FrameViews(size, bool(get("augment", False)), int(get("seed", 0)), epoch) if size else None


def _batch_presence(present: Presence, idx: Tensor, modalities: dict[str, Tensor]) -> dict[str, Tensor]:
    """(B,) bool per modality for the split positions ``idx``, from ``present``."""
    out = {}
    for m in modalities:
        p = present.get(m, True)
        out[m] = p[idx] if isinstance(p, Tensor) else torch.full((len(idx),), p)
    return out
