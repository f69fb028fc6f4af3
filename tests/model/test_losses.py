"""Regularisers: range, zero cases and the whitened cross-correlation itself."""

from __future__ import annotations

import pytest
import torch

from clcr_cli.model.losses import cross_correlation, level_mix_penalty, task_loss


@pytest.mark.parametrize("whitening", ["standardise", "full"])
def test_cross_correlation_zero_for_uncorrelated_one_for_identical(whitening: str) -> None:
    # exactly uncorrelated columns: disjoint +-1 patterns of a Hadamard matrix
    hadamard = torch.tensor([[1.0, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]])
    h8 = torch.kron(hadamard, torch.tensor([[1.0, 1], [1, -1]]))
    x, y = h8[:, 1:4], h8[:, 4:7]
    assert cross_correlation(x, y, whitening) < 1e-8
    assert (
        abs(cross_correlation(x, x, whitening).item() - (1.0 if whitening == "full" else 1 / 3))
        < 1e-3
    )
    rotated = x @ torch.linalg.qr(torch.randn(3, 3))[0]
    if whitening == "full":  # invariant to any re-mixing of either stream
        assert abs(cross_correlation(x, rotated, whitening).item() - 1.0) < 1e-3


def test_cross_correlation_bounded_and_degenerate_cases() -> None:
    x, y = torch.randn(50, 4), torch.randn(50, 3)
    for whitening in ("standardise", "full"):
        value = cross_correlation(x, y, whitening)
        assert 0 <= value <= 1
        assert cross_correlation(x[:1], y[:1], whitening) == 0


@pytest.mark.parametrize("whitening", ["standardise", "full"])
def test_weighted_and_batched_correlation_equals_the_selected_rows_alone(whitening: str) -> None:
    x, y = torch.randn(4, 30, 5), torch.randn(4, 30, 3)
    y[..., 0] += x[..., 1]  # some correlation to measure
    weights = torch.rand(4, 30) > 0.3
    batched = cross_correlation(x, y, whitening, weights=weights)
    for i in range(4):
        alone = cross_correlation(x[i][weights[i]], y[i][weights[i]], whitening)
        torch.testing.assert_close(batched[i], alone, atol=1e-5, rtol=1e-4)
    one_row = torch.zeros(4, 30, dtype=torch.bool)
    one_row[:, 0] = True
    assert torch.all(cross_correlation(x, y, whitening, weights=one_row) == 0)


def test_level_mix_zero_without_incompatible_pairs() -> None:
    w2 = torch.softmax(torch.randn(5, 2), 1)
    assert level_mix_penalty(w2) == 0
    w3 = torch.tensor([[0.5, 0.0, 0.5], [0.0, 1.0, 0.0]])
    torch.testing.assert_close(level_mix_penalty(w3), torch.tensor(0.125))


def test_task_losses() -> None:
    prediction = torch.tensor([0.5, -1.0])
    target = torch.tensor([1.0, 1.0])
    torch.testing.assert_close(
        task_loss(prediction, target, "regression", "l1"), torch.tensor(1.25)
    )
    torch.testing.assert_close(
        task_loss(prediction, target, "regression", "mse"), torch.tensor(2.125)
    )
    logits = torch.tensor([[10.0, -10.0]])
    assert task_loss(logits, torch.tensor([0]), "classification", "l1") < 1e-6
