"""IntraCED: the intra-level controlled exchange domain (one instance per level l).

Paper symbols and the readings chosen here:

*Shared/private decomposition.* ``h_{l,t,sh} = h_{l,t} P_l^sh`` and ``h_{l,t,pr} = h_{l,t}
P_{l,m}^pr`` with ``P = U U^T`` built from orthonormal bases ``U_l^sh`` (common to every
modality) and ``U_{l,m}^pr``. We work in the bases' coordinates (``h U`` instead of
``h U U^T``): the two differ by the isometry ``U``, so norms and attention are unchanged
and the streams are narrower. Parameterisation (Stiefel, exact after every optimiser step):
one orthogonal d x d matrix ``Q_l`` per level gives ``U_l^sh = Q_l[:, :k_sh]`` and the
orthonormal complement ``C_l = Q_l[:, k_sh:]``; each modality's private basis is
``U_{l,m}^pr = C_l V_{l,m}`` with ``V_{l,m}`` on the Stiefel manifold St(d - k_sh, k_pr).
Hence ``U^T U = I`` for every basis and ``(U_l^sh)^T U_{l,m}^pr = 0`` by construction.

*Token budget.* Shared evidence ``e_t = ||h_{t,sh}||_2``. Read literally, the scores
``alpha~_t = sigmoid(gamma_m (e_t - theta_l))`` are inert: LayerNorm fixes ``||h||``, so ``e_t``
varies by ~15 % across tokens, every score sits near one value, the projection (invariant to a
common shift) turns them into a near-uniform ``alpha = r`` and ``gamma_m``, ``theta_l`` receive
~1e-8 of gradient. The reading used here keeps the paper's pieces (evidence ``||h_sh||``, a
learnable scale per modality, a learnable threshold per level, the capped-simplex projection
with budget ``B_l``) but compares each token's evidence with the other tokens of its own
sample: ``z_t = (e_t - mean(e)) / std(e)`` over the sample's valid tokens, and

    ``alpha~_t = sigmoid(gamma_m (z_t - theta_l))``,   ``alpha = Proj_{Delta(B_l)}(alpha~)``.

``gamma_m = softplus(.)`` starts at ``budget_scale`` (4: scores spread over (0, 1)) and
``theta_l`` at ``Phi^-1(1 - r)``, the standard-normal quantile above which a share r of the
tokens lies, so that the scores alone already select about ``B_l`` tokens and the projection
leaves tokens at 0 and at 1 rather than shifting them all. Because the sigmoid is not affine,
``theta_l`` is not cancelled by the projection's shift invariance: it moves tokens in and out
of saturation. ``B_l = rho_l * n_valid`` with ``rho_l = sigmoid(beta_l)`` the learnable
participation rate of level l, initialised to the configured rate r; ``learn_budget=False``
freezes ``rho_l = r`` (the budget sweep), and the ``dense-budget`` ablation sets ``alpha = 1``.

*Exchange.* ``h~_{t,sh}^(m) = alpha_t^(m) Attn(Q_t^(m), K^(-m), V^(-m))``: modality m's shared
tokens query the concatenated shared tokens of the other (present) modalities at the same
level; queries, keys and values are linear maps of shared coordinates only (one set per
level, common to all modalities since the shared subspace is common). We read the result as a
residual update of the shared stream, ``s_t = h_{t,sh} + h~_{t,sh}``: "alpha controls how much
external evidence each token absorbs". Private coordinates never enter this computation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import orthogonal

from clcr_cli.model.attention import CrossAttention
from clcr_cli.model.simplex import capped_simplex_projection


@dataclass
class LevelStreams:
    """What one level's exchange hands to InterCAD and the regularisers, per modality."""

    shared: dict[str, Tensor]  # (B, T_m, k_sh): the exchanged shared stream
    private: dict[str, Tensor] | None  # (B, T_m, k_pr); None where there is no split
    mask: dict[str, Tensor]  # (B, T_m) bool: valid steps of present modalities
    alpha: dict[str, Tensor] | None  # (B, T_m) budget weights; None without a budget


def stiefel_matrix(rows: int, cols: int) -> nn.Module:
    """A module whose ``weight`` (rows x cols, rows >= cols) always has orthonormal columns.

    Cayley map ``Q = (I + A/2)^{-1} (I - A/2)`` of a skew-symmetric A: orthogonal to the
    precision of one linear solve whatever the raw parameters become, whereas torch's
    default ``matrix_exp`` map drifts (~1e-3 in float32 after a few aggressive SGD steps on
    a 128 x 128 basis). The Householder map is as exact but its backward unrolls into tens
    of thousands of small ops per step on the CPU (about 15 % slower end to end here).
    """
    return orthogonal(nn.Linear(cols, rows, bias=False), orthogonal_map="cayley")


def others_concat(
    streams: dict[str, Tensor], masks: dict[str, Tensor], name: str
) -> tuple[Tensor, Tensor]:
    """Concatenate every modality except ``name`` along time: K^(-m) and its mask."""
    keys = [streams[o] for o in streams if o != name]
    key_masks = [masks[o] for o in streams if o != name]
    return torch.cat(keys, 1), torch.cat(key_masks, 1)


class LevelBases(nn.Module):
    """``U_l^sh`` (d x k_sh) and ``U_{l,m}^pr`` (d x k_pr) for one level (see module docstring)."""

    def __init__(self, d: int, shared_dim: int, private_dim: int, modalities: list[str]) -> None:
        super().__init__()
        self.shared_dim = shared_dim
        self.rotation = stiefel_matrix(d, d)  # Q_l
        self.private_rotations = nn.ModuleDict(
            {m: stiefel_matrix(d - shared_dim, private_dim) for m in modalities}  # V_{l,m}
        )

    def shared(self) -> Tensor:
        return self.rotation.weight[:, : self.shared_dim]

    def private(self, name: str) -> Tensor:
        return self.rotation.weight[:, self.shared_dim :] @ self.private_rotations[name].weight


class TokenBudget(nn.Module):
    """Scores from standardised shared evidence, projected onto the capped simplex of ``B_l``."""

    def __init__(
        self, modalities: list[str], participation: float, learn: bool, scale: float
    ) -> None:
        super().__init__()
        rate = min(max(participation, 1e-4), 1 - 1e-4)
        logit = torch.logit(torch.tensor(rate))
        if learn:
            self.rate_logit = nn.Parameter(logit)  # beta_l
        else:
            self.register_buffer("rate_logit", logit)
        quantile = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1 - rate))
        self.threshold = nn.Parameter(quantile)  # theta_l
        raw_scale = torch.tensor(scale).expm1().log()  # softplus^-1
        self.scale = nn.ParameterDict({m: nn.Parameter(raw_scale.clone()) for m in modalities})

    @property
    def participation(self) -> Tensor:
        return torch.sigmoid(self.rate_logit)

    def forward(self, shared: Tensor, mask: Tensor, name: str) -> Tensor:
        keep = mask.to(shared.dtype)
        count = keep.sum(1, keepdim=True).clamp(min=1)
        evidence = shared.norm(dim=-1)  # e_t
        mean = (evidence * keep).sum(1, keepdim=True) / count
        var = ((evidence - mean).pow(2) * keep).sum(1, keepdim=True) / count
        standard = (evidence - mean) / (var + 1e-6).sqrt()  # z_t
        gamma = nn.functional.softplus(self.scale[name])
        scores = torch.sigmoid(gamma * (standard - self.threshold))
        budget = self.participation * mask.sum(1).to(scores.dtype)  # B_l per sample
        return capped_simplex_projection(scores, budget, mask)


class IntraCED(nn.Module):
    """One level's controlled exchange: decomposition, budget and shared-only cross-attention."""

    def __init__(
        self,
        d: int,
        shared_dim: int,
        private_dim: int,
        modalities: list[str],
        heads: int,
        participation: float,
        learn_budget: bool,
        dense_budget: bool,
        dropout: float,
        budget_scale: float = 4.0,
    ) -> None:
        super().__init__()
        self.bases = LevelBases(d, shared_dim, private_dim, modalities)
        self.budget = (
            None
            if dense_budget
            else TokenBudget(modalities, participation, learn_budget, budget_scale)
        )
        self.exchange = CrossAttention(shared_dim, heads, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, levels: dict[str, Tensor], masks: dict[str, Tensor]) -> LevelStreams:
        u_shared = self.bases.shared()
        shared = {m: h @ u_shared for m, h in levels.items()}
        private = {m: h @ self.bases.private(m) for m, h in levels.items()}
        alpha = {}
        exchanged = {}
        for m, s in shared.items():
            keep = masks[m].to(s.dtype)
            alpha[m] = keep if self.budget is None else self.budget(s, masks[m], m)
            keys, key_mask = others_concat(shared, masks, m)
            update = self.dropout(self.exchange(s, keys, key_mask))
            exchanged[m] = (s + alpha[m][..., None] * update) * keep[..., None]
        return LevelStreams(shared=exchanged, private=private, mask=masks, alpha=alpha)


class DenseExchange(nn.Module):
    """The ``no-intraced`` ablation: full features attend densely to the other modalities.

    No shared/private split and no budget: ``s_t = h_t + Attn(h_t, H^(-m), H^(-m))``.
    """

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.exchange = CrossAttention(d, heads, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, levels: dict[str, Tensor], masks: dict[str, Tensor]) -> LevelStreams:
        exchanged = {}
        for m, h in levels.items():
            keys, key_mask = others_concat(levels, masks, m)
            update = self.dropout(self.exchange(h, keys, key_mask))
            exchanged[m] = (h + update) * masks[m][..., None].to(h.dtype)
        return LevelStreams(shared=exchanged, private=None, mask=masks, alpha=None)
