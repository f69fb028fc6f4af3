"""What CLCR's structural constraints cost: the paper reports neither.

Two regions, each timed forward + backward in isolation and reported as a share of one
full training step (forward + backward) on the same batch:

- ``orthogonal``: materialising every Stiefel basis (``U_sh``, ``U_pr,m``: the batched
  Cayley maps of ``intraced.StiefelBases``) once, as one forward does;
- ``whitening``: the whitened cross-correlation regularisers (``losses.stream_regularisers``:
  L_intra, L_pr and L_sp) of one forward, replayed on the same streams.

Baselines without these parts get shares of 0. Used by ``bench/training.py`` only: it times
the model in isolation (and patches ``stream_regularisers`` to record its inputs), which
has no place in a training run.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from unittest import mock

import torch
from torch import nn

from clcr_cli.model import clcr
from clcr_cli.model.batch import Batch
from clcr_cli.model.intraced import LevelStreams


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
    calls: list[tuple[LevelStreams, str, int]] = []
    original = clcr.stream_regularisers

    def recording(streams: LevelStreams, whitening: str, max_tokens: int):
        if streams.private is not None:  # no split, no whitening to time
            calls.append((streams, whitening, max_tokens))
        return original(streams, whitening, max_tokens)

    def step() -> None:
        model(batch).loss.backward()
        model.zero_grad(set_to_none=True)

    def bases() -> None:
        stiefel = getattr(getattr(model, "intraced", None), "bases", None)
        if stiefel is not None:
            shared, private = stiefel()
            (shared.sum() + private.sum()).backward()
        model.zero_grad(set_to_none=True)

    def whitening() -> None:
        for streams, kind, max_tokens in calls:
            fresh = dataclasses.replace(
                streams,
                shared=streams.shared.detach().clone().requires_grad_(),
                private=streams.private.detach().clone().requires_grad_(),
            )
            sum(original(fresh, kind, max_tokens)).backward()

    try:
        with torch.random.fork_rng(devices=[]):
            step_seconds = _seconds(step, repeats)
            with mock.patch.object(clcr, "stream_regularisers", recording):
                model(batch)
            has_bases = getattr(getattr(model, "intraced", None), "bases", None) is not None
            out = {
                "step_seconds": step_seconds,
                "orthogonal_share": _seconds(bases, repeats) / step_seconds if has_bases else 0.0,
                "whitening_share": _seconds(whitening, repeats) / step_seconds if calls else 0.0,
            }
        return out
    finally:
        model.load_state_dict(state)
        model.zero_grad(set_to_none=True)
        model.train(was_training)
