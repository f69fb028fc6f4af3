"""IntraCED: Stiefel bases stay orthonormal, and nothing private leaks into the exchange."""

from __future__ import annotations

import torch

from clcr_cli.model.intraced import IntraCED, cayley
from clcr_cli.model.tokens import TokenLayout, join_modalities

NAMES = ["text", "audio", "video"]
STEPS = {"text": 6, "audio": 8, "video": 4}
D, KS, KP, LEVELS = 16, 8, 5, 3


def make_intraced(**kw) -> IntraCED:
    args = dict(
        d=D,
        shared_dim=KS,
        private_dim=KP,
        levels=LEVELS,
        modalities=len(NAMES),
        heads=2,
        participation=0.68,
        learn_budget=True,
        dense_budget=False,
    )
    args.update(kw)
    return IntraCED(**args)


def joint_inputs(size: int = 3, seed: int = 0) -> tuple[torch.Tensor, TokenLayout]:
    """Random levels of three modalities with lengths t, t-1, t-2, joined on one axis."""
    gen = torch.Generator().manual_seed(seed)
    levels = {m: torch.randn(size, LEVELS, t, D, generator=gen) for m, t in STEPS.items()}
    masks = {
        m: torch.arange(t)[None] < torch.tensor([t, t - 1, t - 2])[:, None] for m, t in STEPS.items()
    }
    present = {m: torch.ones(size, dtype=torch.bool) for m in NAMES}
    return join_modalities(levels, masks, present)


def assert_bases_orthonormal(module: IntraCED) -> None:
    shared, private = module.bases()
    for level in range(LEVELS):
        u = shared[level]
        torch.testing.assert_close(u.T @ u, torch.eye(KS), atol=1e-5, rtol=0)
        for m in range(len(NAMES)):
            p = private[level, m]
            torch.testing.assert_close(p.T @ p, torch.eye(KP), atol=1e-5, rtol=0)
            torch.testing.assert_close(u.T @ p, torch.zeros(KS, KP), atol=1e-5, rtol=0)


def test_cayley_is_orthogonal_for_any_parameter() -> None:
    raw = torch.randn(4, 7, 7) * 5
    q = cayley(raw)
    torch.testing.assert_close(q @ q.transpose(-1, -2), torch.eye(7).expand(4, 7, 7), atol=1e-5, rtol=0)
    torch.testing.assert_close(cayley(torch.zeros(2, 3, 3)), torch.eye(3).expand(2, 3, 3))


def test_bases_orthonormal_and_orthogonal_before_and_after_optimiser_steps() -> None:
    module = make_intraced()
    assert_bases_orthonormal(module)
    start = module.bases()[0].detach().clone()
    optimiser = torch.optim.SGD(module.parameters(), lr=0.5, momentum=0.9)
    for step in range(20):
        h, layout = joint_inputs(seed=step)
        out = module(h, layout)
        loss = out.shared.pow(2).sum() + out.private.sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert_bases_orthonormal(module)
    assert not torch.allclose(module.bases()[0], start)  # the optimiser really moved the bases


def test_bases_start_random_and_differ_across_levels_and_modalities() -> None:
    shared, private = make_intraced().bases()
    assert not torch.allclose(shared[0], shared[1])
    assert not torch.allclose(private[0, 0], private[0, 1])


def test_exchange_unchanged_when_another_modality_private_component_changes() -> None:
    module = make_intraced().eval()
    h, layout = joint_inputs()
    audio = layout.slices[NAMES.index("audio")]
    with torch.no_grad():
        before = module(h, layout)
        private_basis = module.bases()[1][:, NAMES.index("audio")]  # (L, d, k_pr)
        changed = h.clone()
        noise = 3.0 * torch.randn(3, LEVELS, STEPS["audio"], KP)
        changed[:, :, audio] += torch.einsum("bltk,ldk->bltd", noise, private_basis)
        after = module(changed, layout)
    torch.testing.assert_close(after.shared, before.shared, atol=1e-5, rtol=0)
    torch.testing.assert_close(after.alpha, before.alpha, atol=1e-5, rtol=0)
    assert not torch.allclose(after.private[:, :, audio], before.private[:, :, audio])


def test_exchange_gradients_never_reach_private_parameters() -> None:
    module = make_intraced()
    h, layout = joint_inputs()
    h.requires_grad_()
    out = module(h, layout)
    (out.shared * torch.randn_like(out.shared)).sum().backward()
    grad = module.bases.private_rotation.grad
    assert grad is None or torch.count_nonzero(grad) == 0
    assert torch.count_nonzero(module.bases.rotation.grad) > 0
    # the input gradient lies in the shared subspace: nothing flows along private directions
    private_basis = module.bases()[1].detach()
    for m, span in enumerate(layout.slices):
        along = torch.einsum("bltd,ldk->bltk", h.grad[:, :, span], private_basis[:, m])
        assert along.abs().max() < 1e-5


def test_budget_respects_rate_masks_and_dense_setting() -> None:
    h, layout = joint_inputs()
    alpha = make_intraced(participation=0.5).eval()(h, layout).alpha  # (B, L, T)
    valid = layout.mask[:, None].expand_as(alpha)
    assert torch.all(alpha[~valid] == 0) and alpha.min() >= 0 and alpha.max() <= 1
    for span in layout.slices:
        count = layout.mask[:, span].sum(1, keepdim=True).float().expand(-1, LEVELS)
        torch.testing.assert_close(alpha[:, :, span].sum(-1), 0.5 * count, atol=1e-4, rtol=0)
    dense = make_intraced(dense_budget=True).eval()(h, layout).alpha
    assert torch.equal(dense, valid.float())


def test_budget_rate_is_learnable_or_frozen() -> None:
    learned = make_intraced()
    frozen = make_intraced(learn_budget=False)
    assert learned.budget.participation_logit.requires_grad
    assert not frozen.budget.participation_logit.requires_grad
    torch.testing.assert_close(frozen.budget.participation, torch.full((LEVELS,), 0.68))
    h, layout = joint_inputs()
    out = learned(h, layout)
    (out.shared * torch.randn_like(out.shared)).sum().backward()
    assert torch.all(learned.budget.participation_logit.grad != 0)
