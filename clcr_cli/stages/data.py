"""From the feature store to model batches: splits held in memory, normalised, batched.

A split is read from HDF5 once, in index order (contiguous chunk reads), and kept as
tensors; batches are slices of those tensors, so the training loop opens no file.
Sequence features are standardised with statistics of the training split's valid steps
(:class:`FeatureStats`); BERT levels go in as they are (the encoder's LayerNorm follows);
frames stay uint8 until the model divides them by 255.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from clcr_cli.model.batch import Batch, ModalitySpec
from clcr_cli.store import KIND_TIME_AXIS, FeatureStore


@dataclass
class SplitData:
    """One split of a store, in memory."""

    ids: list[str]
    inputs: dict[str, Tensor]
    lengths: dict[str, Tensor]
    target: Tensor

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: Tensor) -> SplitData:
        return SplitData(
            ids=[self.ids[i] for i in index.tolist()],
            inputs={m: x[index] for m, x in self.inputs.items()},
            lengths={m: n[index] for m, n in self.lengths.items()},
            target=self.target[index],
        )


def step_mask(lengths: Tensor, steps: int) -> Tensor:
    """(N, steps) bool: True on valid steps."""
    return torch.arange(steps)[None, :] < lengths[:, None]


@dataclass
class FeatureStats:
    """Per-feature mean and std over the valid steps of the training split.

    Used to standardise sequence inputs and, by ``noise``, to scale Gaussian noise to
    each feature's spread (sigma = 1 is noise as large as the feature's own std).
    """

    mean: dict[str, Tensor]
    std: dict[str, Tensor]

    @classmethod
    def of(cls, split: SplitData, kinds: dict[str, str], chunk: int = 256) -> FeatureStats:
        """Accumulated in float64 over chunks of samples, so memory stays bounded."""
        mean, std = {}, {}
        for m, x in split.inputs.items():
            steps = x.shape[1 + KIND_TIME_AXIS[kinds[m]]]
            total = sq = count = 0
            for start in range(0, len(x), chunk):
                xs = x[start : start + chunk]
                mask = step_mask(split.lengths[m][start : start + chunk], steps)
                if kinds[m] == "levels":  # (n, K, T, D) -> per level and dim
                    v = xs.permute(0, 2, 1, 3)[mask]
                elif kinds[m] == "sequence":  # (n, T, F) -> per feature
                    v = xs[mask]
                else:  # frames (n, T, H, W, C) -> per channel
                    v = xs[mask].reshape(-1, xs.shape[-1])
                v = v.double()
                total, sq, count = total + v.sum(0), sq + (v * v).sum(0), count + len(v)
            mu = total / max(count, 1)
            var = (sq / max(count, 1) - mu * mu).clamp_min(0) * count / max(count - 1, 1)
            mean[m], std[m] = mu.float(), var.sqrt().clamp_min(1e-6).float()
        return cls(mean, std)

    def as_lists(self) -> dict[str, dict[str, list]]:
        return {m: {"mean": self.mean[m].tolist(), "std": self.std[m].tolist()} for m in self.mean}

    @classmethod
    def from_lists(cls, d: dict[str, dict[str, list]]) -> FeatureStats:
        return cls(
            {m: torch.tensor(v["mean"]) for m, v in d.items()},
            {m: torch.tensor(v["std"]) for m, v in d.items()},
        )


def load_split(store: FeatureStore, split: str, modalities: list[str] | None = None) -> SplitData:
    """Read ``split`` of ``store`` into memory (raw values: no normalisation yet)."""
    index = store.split_indices(split)
    names = modalities or list(store.modalities)
    inputs, lengths = {}, {}
    for m in names:
        data, length = store.read(m, index)
        inputs[m] = torch.from_numpy(np.ascontiguousarray(data))
        lengths[m] = torch.from_numpy(length.astype("int64"))
    dtype = torch.long if store.target == "classification" else torch.float32
    target = torch.as_tensor(store.labels[index], dtype=dtype)
    return SplitData([str(i) for i in store.ids[index]], inputs, lengths, target)


def standardise(split: SplitData, stats: FeatureStats, kinds: dict[str, str]) -> SplitData:
    """Standardise sequence inputs with training statistics; padded steps stay zero."""
    inputs = dict(split.inputs)
    for m, x in split.inputs.items():
        if kinds[m] != "sequence":
            continue
        mask = step_mask(split.lengths[m], x.shape[1])[..., None]
        inputs[m] = ((x - stats.mean[m]) / stats.std[m]) * mask
    return SplitData(split.ids, inputs, split.lengths, split.target)


def carve_valid(train: SplitData, fraction: float, seed: int) -> tuple[SplitData, SplitData]:
    """A deterministic (seeded) valid split carved from train, for stores without one."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=g)
    n_valid = max(1, round(fraction * len(train)))
    return train.subset(order[n_valid:].sort().values), train.subset(order[:n_valid].sort().values)


def modality_specs(store: FeatureStore) -> tuple[ModalitySpec, ...]:
    """The model's view of the store's modalities."""
    specs = []
    for m, info in store.modalities.items():
        k = info.shape[0] if info.kind == "levels" else 1
        specs.append(ModalitySpec(m, info.kind, info.dim, k))  # type: ignore[arg-type]
    return tuple(specs)


def batches(
    split: SplitData,
    batch_size: int,
    generator: torch.Generator | None = None,
    present: dict[str, bool] | None = None,
) -> Iterator[Batch]:
    """Mini-batches in a random order (with ``generator``) or in order (without).

    ``present`` marks modalities as missing for every sample (``eval --missing``).
    """
    n = len(split)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        b = len(idx)
        yield Batch(
            inputs={m: x[idx] for m, x in split.inputs.items()},
            lengths={m: v[idx] for m, v in split.lengths.items()},
            target=split.target[idx],
            present=None
            if present is None
            else {m: torch.full((b,), present.get(m, True)) for m in split.inputs},
        )
