"""What CLCR's structural constraints cost: the paper reports neither.

Two regions, each timed forward + backward in isolation and reported as a share of one
full training step (forward + backward) on the same batch:

- ``orthogonal``: materialising every Stiefel-parameterised basis (``U_sh``, ``U_pr,m``:
  the Cayley map of ``parametrizations.orthogonal``) once, as one forward does;
- ``whitening``: every call of the whitened cross-correlation (``losses.cross_correlation``,
  the core of L_intra, L_pr and L_sp) that one forward makes, replayed on the same inputs.

Baselines without these parts get shares of 0. Used by ``bench/training.py`` only: it times
the model in isolation (and patches ``losses.cross_correlation`` to record its calls), which
has no place in a training run.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from unittest import mock

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from clcr_cli.model import losses
from clcr_cli.model.batch import Batch


def _seconds(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def measure_overhead(model: nn.Module, batch: Batch, repeats: int = 3) -> dict[str, float]:
    """Step seconds and the share of a step spent in each region.

    Leaves the model, its gradients and every RNG as it found them, so that measuring does
    not change the training run.
    """
    state = copy.deepcopy(model.state_dict())
    was_training = model.training
    model.train()
    calls: list[tuple[Tensor, Tensor, str]] = []
    original = losses.cross_correlation

    def recording(x: Tensor, y: Tensor, whitening: str = "standardise", **kw) -> Tensor:
        calls.append((x.detach(), y.detach(), whitening))
        return original(x, y, whitening, **kw)

    def step() -> None:
        model(batch).loss.backward()
        model.zero_grad(set_to_none=True)

    def bases() -> None:
        total = sum(
            getattr(module, name).sum()
            for module in model.modules()
            if parametrize.is_parametrized(module)
            for name in module.parametrizations
        )
        if isinstance(total, Tensor):
            total.backward()
        model.zero_grad(set_to_none=True)

    def whitening() -> None:
        for x, y, kind in calls:
            x, y = x.clone().requires_grad_(), y.clone().requires_grad_()
            original(x, y, kind).backward()

    try:
        with torch.random.fork_rng(devices=[]):
            step_seconds = _seconds(step, repeats)
            with mock.patch.object(losses, "cross_correlation", recording):
                model(batch)
            out = {
                "step_seconds": step_seconds,
                "orthogonal_share": _seconds(bases, repeats) / step_seconds,
                "whitening_share": _seconds(whitening, repeats) / step_seconds if calls else 0.0,
            }
        return out
    finally:
        model.load_state_dict(state)
        model.zero_grad(set_to_none=True)
        model.train(was_training)
