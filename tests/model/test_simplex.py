"""The capped-simplex projection against independent solvers, with ties, masks and edges."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import Bounds, LinearConstraint, minimize

from clcr_cli.model.simplex import capped_simplex_projection


def bisection_reference(y: np.ndarray, budget: float) -> np.ndarray:
    """An independent solver: bisection on tau for sum(clip(y - tau, 0, 1)) = budget."""
    lo, hi = y.min() - 1.0, y.max()
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.clip(y - mid, 0, 1).sum() > budget:
            lo = mid
        else:
            hi = mid
    return np.clip(y - 0.5 * (lo + hi), 0, 1)


def qp_reference(y: np.ndarray, budget: float) -> np.ndarray:
    """Another independent solver: scipy's trust-region interior-point method on the quadratic programme itself."""
    result = minimize(
        lambda a: 0.5 * np.sum((a - y) ** 2),
        x0=np.full_like(y, budget / len(y)),
        jac=lambda a: a - y,
        hess=lambda a: np.eye(len(y)),
        bounds=Bounds(0.0, 1.0),
        constraints=[LinearConstraint(np.ones((1, len(y))), budget, budget)],
        method="trust-constr",
        options={"gtol": 1e-12, "xtol": 1e-14, "maxiter": 5000},
    )
    assert result.constr_violation < 1e-9, result.message
    return result.x


@pytest.mark.parametrize("seed", range(8))
def test_matches_qp_solver_on_random_rows(seed: int) -> None:
    rng = np.random.default_rng(seed)
    steps = int(rng.integers(2, 12))
    y = rng.normal(scale=rng.choice([0.1, 1.0, 5.0]), size=(steps,))
    budget = float(rng.uniform(0, steps))
    got = capped_simplex_projection(
        torch.tensor(y)[None], torch.tensor([budget], dtype=torch.float64)
    )[0].numpy()
    qp = qp_reference(y, budget)
    # the interior-point solver is only accurate to ~1e-5; ours must be as good or better
    assert np.sum((got - y) ** 2) <= np.sum((qp - y) ** 2) + 1e-9
    np.testing.assert_allclose(got, qp, atol=1e-4)
    np.testing.assert_allclose(got, bisection_reference(y, budget), atol=1e-9)
    assert abs(got.sum() - budget) < 1e-9 and got.min() >= 0 and got.max() <= 1


def test_batched_rows_with_ties_and_edge_budgets() -> None:
    rng = np.random.default_rng(0)
    rows, budgets = [], []
    for budget in [0.0, 1e-7, 0.5, 2.0, 3.0, 6.0 - 1e-7, 6.0]:
        for y in [rng.normal(size=6), np.array([0.3, 0.3, 0.3, 1.3, 1.3, -0.7]), np.zeros(6)]:
            rows.append(y)
            budgets.append(budget)
    y = torch.tensor(np.stack(rows))
    got = capped_simplex_projection(y, torch.tensor(budgets, dtype=torch.float64)).numpy()
    for row, budget, a in zip(rows, budgets, got, strict=True):
        np.testing.assert_allclose(a, bisection_reference(row, budget), atol=1e-8)
        assert abs(a.sum() - budget) < 1e-9
    # equal scores share the budget equally
    np.testing.assert_allclose(got[2], np.full(6, 0.0), atol=0)  # budget 0
    np.testing.assert_allclose(got[2 * 3 + 2], np.full(6, 0.5 / 6), atol=1e-12)


def test_masked_steps_get_zero_and_are_excluded() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=(5, 9))
    mask = np.ones((5, 9), dtype=bool)
    valid = [9, 7, 4, 1, 0]
    for i, n in enumerate(valid):
        mask[i, n:] = False
    budgets = np.array([4.5, 3.0, 3.9, 0.4, 0.0])
    got = capped_simplex_projection(
        torch.tensor(y), torch.tensor(budgets, dtype=torch.float64), torch.tensor(mask)
    ).numpy()
    for i, n in enumerate(valid):
        assert np.all(got[i, n:] == 0)
        if n:
            np.testing.assert_allclose(
                got[i, :n], bisection_reference(y[i, :n], budgets[i]), atol=1e-9
            )
    # the values under the mask cannot matter
    y2 = y.copy()
    y2[~mask] = 1e3
    got2 = capped_simplex_projection(
        torch.tensor(y2), torch.tensor(budgets, dtype=torch.float64), torch.tensor(mask)
    ).numpy()
    np.testing.assert_array_equal(got, got2)


def test_budget_is_clamped_to_valid_steps() -> None:
    y = torch.tensor([[0.2, -0.1, 0.4, 9.0]])
    mask = torch.tensor([[True, True, True, False]])
    got = capped_simplex_projection(y, torch.tensor([7.0]), mask)
    assert torch.equal(got, torch.tensor([[1.0, 1.0, 1.0, 0.0]]))


def test_float32_batched_leading_dims() -> None:
    y = torch.randn(2, 3, 16)
    budget = torch.rand(2, 3) * 16
    a = capped_simplex_projection(y, budget)
    assert a.shape == y.shape
    torch.testing.assert_close(a.sum(-1), budget, atol=1e-4, rtol=0)


def test_gradcheck_in_float64() -> None:
    torch.manual_seed(0)
    y = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    budget = torch.tensor([0.5, 2.3, 3.7, 1.1], dtype=torch.float64, requires_grad=True)
    mask = torch.ones(4, 7, dtype=torch.bool)
    mask[2, 5:] = False
    assert torch.autograd.gradcheck(
        lambda y, b: capped_simplex_projection(y, b, mask), (y, budget), eps=1e-6, atol=1e-6
    )


def test_gradient_matches_finite_difference_of_exact_solver() -> None:
    y = torch.tensor([[0.9, 0.1, 0.5, -0.3, 0.45]], dtype=torch.float64, requires_grad=True)
    budget = torch.tensor([1.6], dtype=torch.float64, requires_grad=True)
    weights = torch.tensor([[1.0, -2.0, 0.5, 3.0, 0.25]], dtype=torch.float64)
    (capped_simplex_projection(y, budget) * weights).sum().backward()
    eps = 1e-6
    base = (bisection_reference(y.detach().numpy()[0], 1.6) * weights.numpy()[0]).sum()
    bumped = (bisection_reference(y.detach().numpy()[0], 1.6 + eps) * weights.numpy()[0]).sum()
    assert abs(budget.grad.item() - (bumped - base) / eps) < 1e-4
