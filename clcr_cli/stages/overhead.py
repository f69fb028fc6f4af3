"""What CLCR's structural constraints cost: the paper reports neither.

The model marks two regions with ``torch.profiler.record_function``:

- ``clcr.orthogonal``: materialising the Stiefel-parameterised bases U_sh, U_pr,m
  (the matrix exponential / Cayley map of ``parametrizations.orthogonal``);
- ``clcr.whitening``: the whitened cross-correlation regulariser L_intra.

:func:`measure_overhead` profiles a few full training steps (forward, backward, optimiser-free)
and reports each region's share of the step's wall time, forward and backward included
(autograd attributes backward work to the region that created it).
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from clcr_cli.model.batch import Batch

REGIONS = ("clcr.orthogonal", "clcr.whitening")


def measure_overhead(model: nn.Module, batch: Batch, steps: int = 3) -> dict[str, float]:
    """Share of a training step spent in each region (0 when a model has none).

    Leaves the model, its gradients and every RNG exactly as it found them, so that
    measuring does not change the training run.
    """
    state = copy.deepcopy(model.state_dict())
    was_training = model.training
    model.train()
    try:
        with torch.random.fork_rng(devices=[]):
            model(batch).loss.backward()  # warm-up
            model.zero_grad(set_to_none=True)
            with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
                t0 = time.perf_counter()
                for _ in range(steps):
                    model(batch).loss.backward()
                    model.zero_grad(set_to_none=True)
                step_seconds = (time.perf_counter() - t0) / steps
        totals = dict.fromkeys(REGIONS, 0.0)
        for event in prof.key_averages():
            if event.key in totals:
                totals[event.key] += event.cpu_time_total / 1e6  # forward + autograd backward
        out = {"step_seconds": step_seconds}
        for region, seconds in totals.items():
            out[f"{region.split('.')[1]}_share"] = min(1.0, seconds / steps / step_seconds)
        return out
    finally:
        model.load_state_dict(state)
        model.zero_grad(set_to_none=True)
        model.train(was_training)
