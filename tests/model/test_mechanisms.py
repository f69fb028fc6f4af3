"""Each CLCR mechanism does what it claims, measured: the budget selects and learns, the deep
levels see the whole clip, the fused representation keeps modalities apart."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from model_fixtures import AUDIO, TEXT, VIDEO, tiny_batch, tiny_config

from clcr_cli.model import ModalitySpec, build_model
from clcr_cli.model.diagnostics import mechanism_diagnostics
from clcr_cli.model.hierarchy import SemanticHierarchyEncoder, receptive_fields, stage_dilations
from clcr_cli.model.intercad import InterCAD, concatenate_blocks, fused_width
from clcr_cli.model.intraced import TokenBudget
from clcr_cli.model.tokens import TokenLayout


def test_budget_threshold_and_scales_receive_gradient():
    """Measured against the median gradient of all weights: a literal ||h_sh|| evidence on
    layer-normed tokens gave theta and gamma ~1e-5 of it; standardised evidence gives > 1e-2."""
    model = build_model(tiny_config())
    model(tiny_batch(model.config, size=8)).loss.backward()
    typical = torch.cat([p.grad.abs().flatten() for p in model.parameters() if p.grad is not None])
    typical = typical.median()
    budget = model.intraced.budget
    theta, gamma, rate = (p.grad.abs() for p in (budget.threshold, budget.scale, budget.participation_logit))
    assert theta.sum() > 1e-2 * typical and gamma.sum() > 1e-2 * typical
    assert rate.sum() > 1e-2 * typical


def one_modality(mask: torch.Tensor) -> TokenLayout:
    """A layout of two modalities whose first holds ``mask``'s tokens and the second none."""
    steps = mask.shape[1]
    return TokenLayout(
        names=["a", "b"],
        slices=[slice(0, steps), slice(steps, steps)],
        segment=torch.zeros(steps, dtype=torch.long),
        mask=mask,
        present=torch.ones(mask.shape[0], 2, dtype=torch.bool),
    )


def test_budget_spreads_alpha_and_keeps_the_budget():
    budget = TokenBudget(levels=1, modalities=2, participation=0.68, learn=True, scale=4.0)
    shared = torch.randn(4, 1, 50, 8)
    mask = torch.ones(4, 50, dtype=torch.bool)
    mask[1, 30:] = False
    alpha = budget(shared, one_modality(mask))[:, 0]
    valid = alpha[mask]
    assert (valid < 0.05).float().mean() > 0.02  # tokens left out ...
    assert (valid > 0.95).float().mean() > 0.2  # ... and tokens fully in
    torch.testing.assert_close(alpha.sum(1), 0.68 * mask.sum(1).float(), atol=1e-4, rtol=0)
    assert torch.all(alpha[~mask] == 0)


def test_budget_is_invariant_to_the_scale_of_the_evidence():
    """LayerNorm-ed inputs have nearly constant norms: standardising makes that irrelevant."""
    budget = TokenBudget(levels=1, modalities=2, participation=0.5, learn=True, scale=4.0)
    shared = torch.randn(2, 1, 20, 8)
    layout = one_modality(torch.ones(2, 20, dtype=torch.bool))
    torch.testing.assert_close(budget(shared, layout), budget(3.0 * shared, layout))


def test_frozen_budget_keeps_its_rate_through_training():
    model = build_model(tiny_config(learn_budget=False, participation=0.4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(5):
        out = model(tiny_batch(model.config, size=8, seed=step))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    out = model(tiny_batch(model.config, size=8, seed=99))
    torch.testing.assert_close(model.intraced.budget.participation, torch.full((3,), 0.4))
    streams = out.streams
    for span in streams.layout.slices:
        n_valid = streams.layout.mask[:, span].sum(1, keepdim=True).float().expand(-1, 3)
        torch.testing.assert_close(streams.alpha[:, :, span].sum(-1), 0.4 * n_valid, atol=1e-4, rtol=0)


def test_a_short_training_selects_tokens():
    """After a few steps the budget still leaves tokens at ~0 and ~1 (it does not collapse
    to the dense r-scaled exchange of a literal reading of the paper)."""
    config = tiny_config(dropout=0.0)
    model = build_model(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(20):
        out = model(tiny_batch(config, size=8, seed=step))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    report = mechanism_diagnostics(model, [tiny_batch(config, size=16, seed=123)])
    shares = [(lv["alpha"]["below_0.05"], lv["alpha"]["above_0.95"]) for lv in report["levels"]]
    assert any(low > 0.05 and high > 0.05 for low, high in shares), shares
    assert all(0 < lv["participation"] < 1 for lv in report["levels"])
    assert len(report["level_weights"]) == 3
    assert sum(report["modality_weights"].values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("steps", [3, 16, 50, 201, 300, 1001])
@pytest.mark.parametrize("levels", [1, 2, 3, 4])
def test_deepest_dilation_reaches_the_whole_sequence(steps: int, levels: int):
    dilations = stage_dilations(steps, levels, 3)
    fields = receptive_fields(dilations, 3)
    assert fields[-1] >= 2 * steps - 1  # both sides of every step
    assert dilations == sorted(dilations) and dilations[0] == 1 or levels == 1
    assert fields == sorted(fields)


@pytest.mark.parametrize(
    "spec,shape",
    [
        (ModalitySpec("audio", "sequence", 64, max_steps=201), (1, 201, 64)),  # synth's audio
        (ModalitySpec("video", "frames", 3, max_steps=16), (1, 16, 32, 32, 3)),  # synth's video
    ],
)
def test_a_change_at_the_first_step_reaches_the_last_step_of_the_deepest_level(spec, shape):
    encoder = SemanticHierarchyEncoder(spec, 16, 3, 512, 0.0, (4, 4, 8)).eval()
    x = torch.randint(0, 256, shape).float() if spec.kind == "frames" else torch.randn(shape)
    changed = x.clone()
    changed[:, 0] = changed[:, 0] + 50.0
    lengths = torch.tensor([shape[1]])
    with torch.no_grad():
        before, _ = encoder(x, lengths)
        after, _ = encoder(changed, lengths)
    last = shape[1] - 1
    assert not torch.allclose(before[0, -1, last], after[0, -1, last])  # the deepest sees it
    torch.testing.assert_close(before[0, 0, last], after[0, 0, last])  # the local level does not


def test_private_blocks_of_modalities_do_not_overwrite_each_other():
    """Exact algebra: changing one modality's private summaries moves only its own blocks."""
    b, levels, mods, ks, kp = 3, 3, 3, 4, 5
    shared = torch.randn(b, levels, mods, ks)
    private = torch.randn(b, levels, mods, kp)
    w = torch.softmax(torch.randn(b, levels), 1)
    beta = torch.softmax(torch.randn(b, mods), 1)
    eta = torch.rand(b, mods) + 0.1
    fused = concatenate_blocks(shared, private, w, beta, eta)
    assert fused.shape == (b, fused_width(levels, mods, ks, kp))
    moved = private.clone()
    moved[:, :, 1] += torch.randn(b, levels, kp)
    changed = concatenate_blocks(shared, moved, w, beta, eta) != fused
    blocks = changed[:, levels * ks :].view(b, levels, mods, kp)
    assert blocks[:, :, 1].all() and not blocks[:, :, [0, 2]].any()
    assert not changed[:, : levels * ks].any()


def test_level_weights_do_not_read_private_summaries():
    cad = InterCAD(num_levels=3, shared_dim=4, private_dim=5, hidden=8)
    shared, private = torch.randn(2, 3, 3, 4), torch.randn(2, 3, 3, 5)
    present = torch.ones(2, 3, dtype=torch.bool)
    _, w1, beta1, _ = cad(shared, private, present)
    _, w2, beta2, _ = cad(shared, private + torch.randn_like(private), present)
    torch.testing.assert_close(w1, w2)
    torch.testing.assert_close(beta1, beta2)


def test_missing_modality_has_no_private_block():
    config = tiny_config()
    model = build_model(config).eval()
    batch = tiny_batch(config, size=4)
    batch.present = {
        "text": torch.ones(4, dtype=torch.bool),
        "audio": torch.zeros(4, dtype=torch.bool),
    }
    batch.present["video"] = torch.ones(4, dtype=torch.bool)
    cad_in = {}
    model.intercad.register_forward_hook(lambda mod, args, out: cad_in.update(fused=out[0]))
    model(batch)
    ks, kp = config.shared_width, config.private_width
    blocks = cad_in["fused"][:, 3 * ks :].view(4, 3, 3, kp)
    assert torch.all(blocks[:, :, 1] == 0)


def test_modality_specs_of_the_fixtures_have_no_length():
    """Unknown lengths fall back to dilations 1, 2, 4 (kept for hand-built specs)."""
    for spec in (TEXT, AUDIO, VIDEO):
        assert spec.max_steps == 0
    assert stage_dilations(0, 3, 3) == [1, 2, 4]
    encoder = SemanticHierarchyEncoder(replace(AUDIO, max_steps=0), 8, 3, 32, 0.0)
    assert encoder.dilations == [1, 2, 4]
