"""IntraCED: the intra-level controlled exchange domain, for all L levels at once.

Paper symbols and the readings chosen here (shapes: B samples, L levels, M modalities,
T tokens on the joint axis of tokens.py, d model width, k_sh / k_pr the subspace widths):

*Shared/private decomposition (Eq. 2).* ``h_{l,t,sh} = h_{l,t} P_l^sh`` and ``h_{l,t,pr} = h_{l,t}
P_{l,m}^pr`` with ``P = U U^T`` built from orthonormal bases ``U_l^sh`` (common to every
modality) and ``U_{l,m}^pr``. We work in the bases' coordinates (``h U`` instead of
``h U U^T``): the two differ by the isometry ``U``, so norms and attention are unchanged
and the streams are narrower. Parameterisation (Stiefel, exact after every optimiser step):
one orthogonal d x d matrix ``Q_l`` per level gives ``U_l^sh = Q_l[:, :k_sh]`` and the
orthonormal complement ``C_l = Q_l[:, k_sh:]``; each modality's private basis is
``U_{l,m}^pr = C_l V_{l,m}`` with ``V_{l,m}`` on the Stiefel manifold St(d - k_sh, k_pr).
Hence ``U^T U = I`` for every basis and ``(U_l^sh)^T U_{l,m}^pr = 0`` by construction.
Every orthogonal matrix is ``base @ cayley(A)`` (:func:`cayley`): a fixed random orthogonal
``base`` (the initialisation) times the Cayley map of a learned skew-symmetric ``A``
(starting at 0), the trivialisation torch's ``parametrizations.orthogonal`` uses, here
batched over levels and modalities: one linear solve per forward for all of them.

*Token budget (Eqs. 3-4).* Shared evidence ``e_t = ||h_{t,sh}||_2``. Read literally, the scores
``alpha~_t = sigmoid(gamma (e_t - theta_l))`` are inert: LayerNorm fixes ``||h||``, so ``e_t``
varies by ~15 % across tokens, every score sits near one value, the projection (invariant to a
common shift) turns them into a near-uniform ``alpha = r`` and ``gamma``, ``theta_l`` receive
~1e-8 of gradient. The reading used here keeps the paper's pieces (evidence ``||h_sh||``, a
learnable scale ``gamma_{l,m}`` per level and modality, a learnable threshold per level, the capped-simplex projection
with budget ``B_l``) but compares each token's evidence with the other tokens of its own
sample and modality: ``z_t = (e_t - mean(e)) / std(e)`` over those valid tokens, and

    ``alpha~_t = sigmoid(gamma_{l,m} (z_t - theta_l))``,   ``alpha = Proj_{Delta(B_l)}(alpha~)``

(one projection per sample, level and modality). ``gamma = softplus(.)`` starts at
``budget_scale`` (4: scores spread over (0, 1)) and ``theta_l`` at ``Phi^-1(1 - r)``, the
standard-normal quantile above which a share r of the tokens lies, so that the scores alone
already select about ``B_l`` tokens and the projection leaves tokens at 0 and at 1 rather than
shifting them all. Because the sigmoid is not affine, ``theta_l`` is not cancelled by the
projection's shift invariance: it moves tokens in and out of saturation. ``B_l = rho_l *
n_valid`` with ``rho_l = sigmoid(beta_l)`` the learnable participation rate of level l,
initialised to the configured rate r; ``learn_budget=False`` freezes ``rho_l = r`` (the budget
sweep), and the ``dense-budget`` ablation sets ``alpha = 1``.

*Exchange (Eq. 5).* ``h~_{t,sh}^(m) = alpha_t^(m) Attn(Q_t^(m), K^(-m), V^(-m))``: modality m's shared
tokens query the shared tokens of the other (present) modalities at the same level;
queries, keys and values are linear maps of shared coordinates only (one set per level,
common to all modalities since the shared subspace is common). Levels and heads are batched
into one attention call per query modality, whose keys are the other modalities' tokens
(:class:`~clcr_cli.model.attention.CrossModalAttention`). We read the result as a residual update of the shared stream,
``s_t = h_{t,sh} + h~_{t,sh}``: "alpha controls how much external evidence each token absorbs".
Private coordinates never enter this computation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from clcr_cli.model.attention import CrossModalAttention
from clcr_cli.model.simplex import capped_simplex_projection
from clcr_cli.model.tokens import TokenLayout


@dataclass
class LevelStreams:
    """What the exchange hands to InterCAD and the regularisers, on the joint token axis."""

    shared: Tensor  # (B, L, T, k_sh): the exchanged shared stream
    private: Tensor | None  # (B, L, T, k_pr); None where there is no split
    alpha: Tensor | None  # (B, L, T) budget weights (ones: dense-budget); None: no-intraced
    layout: TokenLayout


def cayley(raw: Tensor) -> Tensor:
    """The orthogonal ``(I + A/2)^{-1} (I - A/2)`` of ``A = raw - raw^T`` (batched, square).

    Orthogonal to the precision of one linear solve whatever ``raw`` becomes (torch's
    ``matrix_exp`` map drifts ~1e-3 from orthonormal in float32 after a few aggressive SGD
    steps on a 128 x 128 basis).
    """
    skew = (raw - raw.transpose(-1, -2)) / 2
    eye = torch.eye(raw.shape[-1], dtype=raw.dtype, device=raw.device)
    return torch.linalg.solve(eye + skew, eye - skew)


def random_orthogonal(*shape: int) -> Tensor:
    """Orthogonal matrices of shape ``shape`` (..., n, n), drawn from torch's global RNG."""
    q, r = torch.linalg.qr(torch.randn(*shape))
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[..., None, :]


class StiefelBases(nn.Module):
    """``U_l^sh`` (L, d, k_sh) and ``U_{l,m}^pr`` (L, M, d, k_pr) (see the module docstring)."""

    def __init__(self, d: int, shared_dim: int, private_dim: int, levels: int, modalities: int) -> None:
        super().__init__()
        self.shared_dim, self.private_dim = shared_dim, private_dim
        rest = d - shared_dim
        self.register_buffer("rotation_base", random_orthogonal(levels, d, d))
        self.rotation = nn.Parameter(torch.zeros(levels, d, d))  # A of Q_l
        self.register_buffer("private_base", random_orthogonal(levels, modalities, rest, rest))
        self.private_rotation = nn.Parameter(torch.zeros(levels, modalities, rest, rest))  # V_{l,m}

    def forward(self) -> tuple[Tensor, Tensor]:
        rotation = self.rotation_base @ cayley(self.rotation)  # Q_l
        private = (self.private_base @ cayley(self.private_rotation))[..., : self.private_dim]
        complement = rotation[:, None, :, self.shared_dim :]  # C_l, against every modality
        return rotation[..., : self.shared_dim], complement @ private


def pack_by_modality(x: Tensor, layout: TokenLayout) -> Tensor:
    """x (..., T) on the joint axis -> (..., M, T_max): one row per modality, its tokens from
    position 0, zeros after them."""
    longest = max(s.stop - s.start for s in layout.slices)
    return torch.stack(
        [nn.functional.pad(x[..., s], (0, longest - (s.stop - s.start))) for s in layout.slices], -2
    )


def standardise_evidence(evidence: Tensor, valid: Tensor) -> Tensor:
    """``z_t``: evidence (..., T) standardised over each row's valid tokens."""
    keep = valid.to(evidence.dtype)
    count = keep.sum(-1, keepdim=True).clamp(min=1)
    mean = (evidence * keep).sum(-1, keepdim=True) / count
    var = ((evidence - mean).pow(2) * keep).sum(-1, keepdim=True) / count
    return (evidence - mean) / (var + 1e-6).sqrt()


class TokenBudget(nn.Module):
    """Scores from standardised shared evidence, projected onto the capped simplex of ``B_l``.

    All levels and modalities at once: each modality's tokens are packed into a row of their
    own (:func:`pack_by_modality`), so one standardisation and one projection serve them all.
    """

    def __init__(self, levels: int, modalities: int, participation: float, learn: bool, scale: float) -> None:
        super().__init__()
        rate = min(max(participation, 1e-4), 1 - 1e-4)
        logit = torch.logit(torch.tensor(rate)).repeat(levels)
        if learn:
            self.participation_logit = nn.Parameter(logit)  # beta_l
        else:
            self.register_buffer("participation_logit", logit)
        quantile = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1 - rate))
        self.threshold = nn.Parameter(quantile.repeat(levels))  # theta_l
        raw_scale = torch.tensor(scale).expm1().log()  # softplus^-1
        self.scale = nn.Parameter(raw_scale.repeat(levels, modalities))  # gamma_{l,m}

    @property
    def participation(self) -> Tensor:
        """rho_l (L,): the share of each modality's valid tokens that level l lets exchange."""
        return torch.sigmoid(self.participation_logit)

    def forward(self, shared: Tensor, layout: TokenLayout) -> Tensor:
        """shared (B, L, T, k_sh) -> alpha (B, L, T); every (sample, level, modality) row of
        alpha sums to ``rho_l`` times that modality's valid tokens."""
        evidence = pack_by_modality(shared.norm(dim=-1), layout)  # e_t: (B, L, M, T_max)
        valid = pack_by_modality(layout.mask, layout)[:, None]  # (B, 1, M, T_max)
        z = standardise_evidence(evidence, valid)
        gamma = nn.functional.softplus(self.scale)[..., None]  # (L, M, 1)
        scores = torch.sigmoid(gamma * (z - self.threshold[:, None, None]))
        budget = self.participation[:, None] * valid.sum(-1).to(scores.dtype)  # B_l: (B, L, M)
        alpha = capped_simplex_projection(scores, budget, valid.expand_as(scores))
        return torch.cat([alpha[:, :, m, : s.stop - s.start] for m, s in enumerate(layout.slices)], -1)


class IntraCED(nn.Module):
    """Every level's controlled exchange: decomposition, budget and shared-only attention."""

    def __init__(
        self,
        d: int,
        shared_dim: int,
        private_dim: int,
        levels: int,
        modalities: int,
        heads: int,
        participation: float,
        learn_budget: bool,
        dense_budget: bool,
        budget_scale: float = 4.0,
    ) -> None:
        super().__init__()
        self.bases = StiefelBases(d, shared_dim, private_dim, levels, modalities)
        self.budget = (
            None
            if dense_budget
            else TokenBudget(levels, modalities, participation, learn_budget, budget_scale)
        )
        self.attention = CrossModalAttention(shared_dim, heads, levels)

    def forward(self, h: Tensor, layout: TokenLayout) -> LevelStreams:
        """h (B, L, T, d) -> the exchanged shared stream, the private stream and alpha."""
        u_shared, u_private = self.bases()
        shared = torch.einsum("bltd,ldk->bltk", h, u_shared)
        private = torch.cat(
            [
                torch.einsum("bltd,ldk->bltk", h[:, :, span], u_private[:, m])
                for m, span in enumerate(layout.slices)
            ],
            2,
        )
        keep = layout.mask[:, None, :].to(shared.dtype)  # (B, 1, T)
        alpha = keep.expand(-1, shared.shape[1], -1) if self.budget is None else self.budget(shared, layout)
        update = self.attention(shared, layout)
        exchanged = (shared + alpha[..., None] * update) * keep[..., None]
        return LevelStreams(shared=exchanged, private=private, alpha=alpha, layout=layout)


class DenseExchange(nn.Module):
    """The ``no-intraced`` ablation: full features attend densely to the other modalities.

    No shared/private split and no budget: ``s_t = h_t + Attn(h_t, H^(-m), H^(-m))``.
    """

    def __init__(self, d: int, heads: int, levels: int) -> None:
        super().__init__()
        self.attention = CrossModalAttention(d, heads, levels)

    def forward(self, h: Tensor, layout: TokenLayout) -> LevelStreams:
        update = self.attention(h, layout)
        exchanged = (h + update) * layout.mask[:, None, :, None].to(h.dtype)
        return LevelStreams(shared=exchanged, private=None, alpha=None, layout=layout)
