"""Size and cost of a model for reports: parameter count and forward FLOPs."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from clcr_cli.model.batch import Batch


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (each shared tensor once; Stiefel bases by their raw size)."""
    return sum(p.numel() for p in model.parameters())


def estimate_flops(model: nn.Module, batch: Batch) -> int:
    """FLOPs of one forward pass on ``batch`` in eval mode, by torch's FlopCounterMode.

    Counts matrix multiplications, convolutions and attention (2 FLOPs per multiply-add);
    element-wise operations are not counted.
    """
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(batch)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
