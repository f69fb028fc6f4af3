"""IntraCED: Stiefel bases stay orthonormal, and nothing private leaks into the exchange."""

from __future__ import annotations

import torch

from clcr_cli.model.intraced import IntraCED

NAMES = ["text", "audio", "video"]


def make_intraced(**kw) -> IntraCED:
    args = dict(
        d=16,
        shared_dim=8,
        private_dim=5,
        modalities=NAMES,
        heads=2,
        participation=0.68,
        learn_budget=True,
        dense_budget=False,
        dropout=0.0,
    )
    args.update(kw)
    return IntraCED(**args)


def level_inputs(size: int = 3) -> tuple[dict, dict]:
    steps = {"text": 6, "audio": 8, "video": 4}
    levels = {m: torch.randn(size, t, 16) for m, t in steps.items()}
    masks = {
        m: torch.arange(t)[None] < torch.tensor([t, t - 1, t - 2])[:, None]
        for m, t in steps.items()
    }
    return levels, masks


def assert_bases_orthonormal(module: IntraCED) -> None:
    eye = torch.eye
    shared = module.bases.shared()
    torch.testing.assert_close(shared.T @ shared, eye(8), atol=1e-5, rtol=0)
    for m in NAMES:
        private = module.bases.private(m)
        torch.testing.assert_close(private.T @ private, eye(5), atol=1e-5, rtol=0)
        torch.testing.assert_close(shared.T @ private, torch.zeros(8, 5), atol=1e-5, rtol=0)


def test_bases_orthonormal_and_orthogonal_before_and_after_optimiser_steps() -> None:
    module = make_intraced()
    assert_bases_orthonormal(module)
    optimiser = torch.optim.SGD(module.parameters(), lr=0.5, momentum=0.9)
    for _ in range(20):
        levels, masks = level_inputs()
        out = module(levels, masks)
        loss = sum((s**2).sum() for s in out.shared.values()) + sum(
            p.sum() for p in out.private.values()
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert_bases_orthonormal(module)
    # the optimiser really moved the bases
    assert not torch.allclose(module.bases.shared(), make_intraced().bases.shared())


def test_exchange_unchanged_when_another_modality_private_component_changes() -> None:
    module = make_intraced().eval()
    levels, masks = level_inputs()
    before = module(levels, masks)
    with torch.no_grad():
        private_basis = module.bases.private("audio")
        changed = dict(levels)
        changed["audio"] = levels["audio"] + 3.0 * torch.randn(3, 8, 5) @ private_basis.T
        after = module(changed, masks)
    for m in NAMES:
        torch.testing.assert_close(after.shared[m], before.shared[m], atol=1e-5, rtol=0)
        torch.testing.assert_close(after.alpha[m], before.alpha[m], atol=1e-6, rtol=0)
    # ... while the private stream itself did change
    assert not torch.allclose(after.private["audio"], before.private["audio"])


def test_exchange_gradients_never_reach_private_parameters() -> None:
    module = make_intraced()
    levels, masks = level_inputs()
    levels = {m: h.requires_grad_() for m, h in levels.items()}
    out = module(levels, masks)
    sum((s * torch.randn_like(s)).sum() for s in out.shared.values()).backward()
    for m in NAMES:
        grad = module.bases.private_rotations[m].parametrizations.weight.original.grad
        assert grad is None or torch.count_nonzero(grad) == 0
        # the input gradient lies in the shared subspace: nothing flows along private directions
        private_basis = module.bases.private(m).detach()
        assert (levels[m].grad @ private_basis).abs().max() < 1e-5
    assert module.bases.rotation.parametrizations.weight.original.grad is not None


def test_budget_respects_rate_masks_and_dense_setting() -> None:
    levels, masks = level_inputs()
    out = make_intraced(participation=0.5).eval()(levels, masks)
    for m in NAMES:
        alpha = out.alpha[m]
        assert torch.all(alpha[~masks[m]] == 0) and alpha.min() >= 0 and alpha.max() <= 1
        torch.testing.assert_close(alpha.sum(1), 0.5 * masks[m].sum(1).float(), atol=1e-4, rtol=0)
    dense = make_intraced(dense_budget=True).eval()(levels, masks)
    for m in NAMES:
        assert torch.equal(dense.alpha[m], masks[m].float())


def test_budget_rate_is_learnable_or_frozen() -> None:
    learned = make_intraced()
    frozen = make_intraced(learn_budget=False)
    assert learned.budget.rate_logit.requires_grad
    assert not frozen.budget.rate_logit.requires_grad
    torch.testing.assert_close(frozen.budget.participation, torch.tensor(0.68))
    levels, masks = level_inputs()
    out = learned(levels, masks)
    sum((s * torch.randn_like(s)).sum() for s in out.shared.values()).backward()
    assert learned.budget.rate_logit.grad is not None and learned.budget.rate_logit.grad != 0
