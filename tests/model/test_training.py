"""One optimiser step of every variant and baseline lowers its loss on a fixed batch."""

from __future__ import annotations

import pytest
import torch
from model_fixtures import tiny_batch, tiny_config

from clcr_cli.model import BASELINES, VARIANTS, build_model

ALL_MODELS = [("clcr", v) for v in VARIANTS] + [(b, "full") for b in BASELINES]


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize(("model", "variant"), ALL_MODELS)
def test_one_step_reduces_loss(model: str, variant: str, task: str) -> None:
    config = tiny_config(model=model, variant=variant, task=task)
    net = build_model(config)
    batch = tiny_batch(config, size=6)
    optimiser = torch.optim.SGD(net.parameters(), lr=0.02)
    before = net(batch).loss
    optimiser.zero_grad()
    before.backward()
    optimiser.step()
    with torch.no_grad():
        after = net(batch).loss
    assert after < before, (before.item(), after.item())
