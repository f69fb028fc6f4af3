"""Modalities missing at random, per sample: ``noise --missing-rate`` and ``--modality-dropout``.

Modality m of sample i is absent when its draw ``u(seed, id_i, m)``, a uniform number in
[0, 1) that depends on nothing else (:func:`~clcr_cli.features.perturb.stable_seed`), falls
below the rate. So the draws do not depend on the order of the samples, the batch or the
process (a resumed or distributed run draws the same), and the modalities absent at one
rate are absent at every higher rate: a curve over rates compares rates, not draws.

**A sample never loses every modality.** When the draws would remove all of a sample's
modalities, the one whose draw is highest stays: a uniformly chosen modality, the same at
every higher rate. At rate 1 every sample keeps exactly one modality; below it each
modality is absent with probability ``rate - rate^M / M`` for M droppable modalities
(0.1 -> 0.0997, 0.5 -> 0.458 for M = 3). Modalities outside ``droppable``
are always present, and then nothing needs to stay.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from clcr_cli.features.perturb import stable_seed

UNIT = float(1 << 64)  # stable_seed is a 64-bit number: stable_seed / UNIT lies in [0, 1)


def unit_draws(seed: Any, ids: list[str], modalities: list[str]) -> np.ndarray:
    """(N, M) uniform draws in [0, 1), one per sample id and modality, fixed by ``seed``."""
    return np.array([[stable_seed(seed, i, m) / UNIT for m in modalities] for i in ids]).reshape(len(ids), len(modalities))


def random_presence(
    ids: list[str], modalities: list[str], rate: float, seed: Any, droppable: list[str] | None = None
) -> dict[str, Tensor]:
    """``present[m]``: (N,) bool, False where modality m of a sample is absent at ``rate``
    (module docstring); only the ``droppable`` modalities (default: all) can be absent."""
    droppable = list(modalities) if droppable is None else droppable
    draws = unit_draws(seed, ids, droppable)
    present = draws >= rate
    if len(droppable) == len(modalities):  # keep the highest draw where none is left
        none_left = ~present.any(1)
        present[none_left, draws[none_left].argmax(1)] = True
    out = {m: torch.ones(len(ids), dtype=torch.bool) for m in modalities}
    out.update({m: torch.from_numpy(present[:, j].copy()) for j, m in enumerate(droppable)})
    return out
