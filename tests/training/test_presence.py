"""Modalities missing at random (training/presence.py), the draws of ``clcr noise
--missing-rate`` and ``clcr train --modality-dropout``: a sample never loses every modality,
the rate is met, the draws are nested across rates and fixed by seed and sample id, and only
the droppable modalities go missing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clcr_cli.training.presence import random_presence

MODALITIES = ["text", "audio", "video"]


IDS = [f"s{i:05d}" for i in range(3000)]


def _absent(present: dict[str, torch.Tensor]) -> np.ndarray:
    return ~np.stack([present[m].numpy() for m in MODALITIES], 1)


@pytest.mark.parametrize("rate", [0.3, 0.7, 0.95, 1.0])
def test_a_sample_never_loses_every_modality(rate: float):
    absent = _absent(random_presence(IDS, MODALITIES, rate, ("missing", 0)))
    assert not absent.all(1).any()
    if rate == 1.0:
        assert (absent.sum(1) == 2).all()  # exactly one stays


def test_rate_zero_keeps_everything_and_the_rate_is_met():
    assert not _absent(random_presence(IDS, MODALITIES, 0.0, ("missing", 0))).any()
    for rate in (0.1, 0.5):
        absent = _absent(random_presence(IDS, MODALITIES, rate, ("missing", 0)))
        expected = rate - rate**3 / 3  # the keep-one rule saves rate^3 / 3 (presence.py)
        assert absent.mean() == pytest.approx(expected, abs=0.015)
        assert absent.mean(0) == pytest.approx([expected] * 3, abs=0.03)  # each modality alike


def test_draws_are_nested_across_rates_and_fixed_by_seed_and_id():
    rates = (0.1, 0.3, 0.6, 0.9, 1.0)
    absent = [_absent(random_presence(IDS, MODALITIES, r, ("missing", 1))) for r in rates]
    for low, high in zip(absent, absent[1:], strict=False):
        assert (high | ~low).all()  # absent at a rate: absent at every higher rate
    again = _absent(random_presence(IDS, MODALITIES, 0.3, ("missing", 1)))
    assert np.array_equal(again, absent[1])
    other = _absent(random_presence(IDS, MODALITIES, 0.3, ("missing", 2)))
    assert not np.array_equal(other, absent[1])
    reordered = random_presence(IDS[::-1], MODALITIES, 0.3, ("missing", 1))  # order does not matter
    assert np.array_equal(_absent(reordered)[::-1], absent[1])


def test_only_the_droppable_modalities_go_missing():
    present = random_presence(IDS, MODALITIES, 1.0, ("missing", 0), droppable=["text"])
    assert not present["text"].any()  # one droppable modality: no keep-one rule needed
    assert present["audio"].all() and present["video"].all()
