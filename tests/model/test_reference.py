"""The batched CLCR computes what the level-by-level loop of reference_loop.py computes."""

from __future__ import annotations

import pytest
import torch
from model_fixtures import tiny_batch, tiny_config
from reference_loop import reference_forward

from clcr_cli.model import build_model


@pytest.mark.parametrize("whitening", ["standardise", "full"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_forward_matches_the_reference_loop(seed: int, whitening: str) -> None:
    torch.manual_seed(seed)
    # the paper's reading (no auxiliary heads): the loop implements its equations
    model = build_model(tiny_config(whitening=whitening, reg_max_tokens=10_000, lambda_aux=0.0)).eval()
    with torch.no_grad():  # move every parameter away from its initial value
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = tiny_batch(model.config, size=6, seed=seed)
    batch.present = {m: torch.rand(6) > 0.25 for m in model.config.modality_names}
    batch.present["text"][0] = True  # keep some samples with every modality, some without
    with torch.no_grad():
        out = model(batch)
        expected = reference_forward(model, batch)
    torch.testing.assert_close(out.logits, expected["logits"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.loss, expected["loss"], atol=1e-5, rtol=1e-4)
    for name in ("task", "intra", "pr", "sp", "mix"):
        torch.testing.assert_close(out.terms[name], expected[name], atol=1e-5, rtol=1e-4)
