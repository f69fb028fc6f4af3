"""InterCAD: the inter-level collaborative aggregation domain, and its ``no-intercad`` ablation.

Inputs are per-level, per-modality summaries (:class:`Summaries`): masked mean pooling + LN of the
shared and private streams, ``s_l^(m)`` and ``p_l^(m)``. Paper equations and readings:

*Level weights (Eq. 6).* ``w = softmax(MLP(.))`` over the L levels, one weight vector per sample,
common to all modalities (the paper's ``s-bar^(m) = sum_l w_l s_l^(m)`` has no m on w). The
MLP scores level l from ``c_l + a_l``: ``c_l`` the mean over present modalities of the shared
summaries ``s_l^(m)`` (the shared subspace of a level is common to the modalities, so the
mean is meaningful; private coordinates are not, see below) and ``a_l`` a learned level
anchor (the abstract's "learned anchors" that synchronise semantic scales).

*Shared path, modality selection (Eqs. 6-7).* ``s-bar^(m) = sum_l w_l s_l^(m)``, global context
``g-bar`` = mean of ``s-bar^(m)`` over present modalities; ``beta = softmax_m( (W_q g-bar) .
(W_k s-bar^(m)) / sqrt(k_sh) )`` over present modalities.

*Private path (Eqs. 6, 8).* ``p-bar^(m) = sum_l w_l p_l^(m)`` and ``eta_m = sigmoid(w_p^T LN(W_p p-bar^(m)))``.

*What the head reads (Eq. 9): aggregation that keeps evidence apart.* Each level has its own bases
``U_l^sh`` and each modality its own ``U_{l,m}^pr``, so the coordinates of two levels (or of
two modalities' private streams) are unrelated axes: summing them, as a literal reading of
``sum_l w_l s_l`` would, superimposes unrelated evidence in the same slots (on ``synth`` the
label needs one bit from each level, and a linear probe of such a sum fell to 0.47). The
weights therefore scale blocks that are concatenated rather than added:

    ``z_sh = (+)_l  L w_l sum_m beta_m s_l^(m)``          (modalities summed only inside the
                                                         common shared subspace of a level)
    ``u_pr = (+)_{l,m}  L w_l eta_m p_l^(m)``             (zero for a missing modality)

and the head reads ``z_sh (+) u_pr``. ``L w_l`` is 1 for uniform weights. ``s-bar`` and ``p-bar``
are used where the paper uses them -- to score modalities and gates -- not as the output.

*Evidence-driven selection and gates (option ``evidence``; default ``"none"``, the reading
above).* The paper scores modalities and gates from the summaries alone, so nothing in
``beta`` or ``eta`` says how sure a modality's own evidence is: a stream that looks like the
training data but is wrong (the audio of an unheard speaker) is weighed like a right one.
With the auxiliary heads (heads.py) each sample carries a per-modality uncertainty ``u_m`` in
[0, 1] (detached), and with temperature ``tau`` (``evidence_temperature``):

    ``beta = softmax_m( (W_q g-bar) . (W_k s-bar^(m)) / sqrt(k_sh) - u_m / tau )``   (selection)
    ``eta_m = sigmoid( w_p^T LN(W_p p-bar^(m)) - (u_m - min_m' u_m') / tau )``          (gates)

(min over present modalities): a modality is discounted by how much less sure it is than
the surest one, in the selection (a shift common to all modalities cancels in the softmax)
and in its private gate (the surest modality's gate is the paper's). ``evidence`` picks
``selection``, ``gates`` or ``both``. The form is fixed rather than learned, so that training
data on which every clean stream is sure cannot teach the model to ignore it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from clcr_cli.model.attention import masked_mean, masked_softmax
from clcr_cli.model.tokens import TokenLayout, pool_by_modality


def fused_width(num_levels: int, num_modalities: int, shared_dim: int, private_dim: int) -> int:
    """Width of ``z_sh (+) u_pr``: L shared blocks and L x M private blocks."""
    return num_levels * (shared_dim + num_modalities * private_dim)


def concatenate_blocks(
    shared: Tensor,
    private: Tensor | None,
    level_weights: Tensor,
    modality_weights: Tensor,
    private_weights: Tensor,
) -> Tensor:
    """``z_sh (+) u_pr`` from (B, L, M, k) summaries, w (B, L), beta (B, M), eta-or-presence (B, M).

    ``private_weights`` must be 0 for missing modalities.
    """
    scale = level_weights * level_weights.shape[1]  # L w_l
    per_level = torch.einsum("bm,blmk->blk", modality_weights, shared) * scale[..., None]
    parts = [per_level.flatten(1)]
    if private is not None:
        gated = private * (scale[:, :, None] * private_weights[:, None, :])[..., None]
        parts.append(gated.flatten(1))
    return torch.cat(parts, -1)


class Summaries(nn.Module):
    """``LN(masked mean over time)`` of a stream, per level and modality: (B, L, T, k) ->
    (B, L, M, k)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, stream: Tensor, layout: TokenLayout) -> Tensor:
        return self.norm(pool_by_modality(stream, layout))


def relative_uncertainty(uncertainty: Tensor, present: Tensor) -> Tensor:
    """``u_m - min_m' u_m'`` over the present modalities (B, M); 0 for a missing one."""
    surest = uncertainty.masked_fill(~present, math.inf).amin(1, keepdim=True)
    return torch.where(present, uncertainty - surest.clamp(max=1.0), torch.zeros_like(uncertainty))


class BlockAggregation(nn.Module):
    """Fuses the per-level shared and private blocks into ``z_sh (+) u_pr`` by level weights w,
    modality weights beta and gates eta; a subclass says, in :meth:`weights`, how they are found."""

    def forward(
        self, shared: Tensor, private: Tensor | None, present: Tensor, uncertainty: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """shared (B, L, M, k_sh), private (B, L, M, k_pr) or None, present (B, M) bool,
        uncertainty ``u_m`` (B, M) or None (needed by an evidence-driven reading).

        Returns ``z_sh (+) u_pr`` (B, :func:`fused_width`), w (B, L), beta (B, M) and eta
        (B, M) (presence where there is no private path).
        """
        level_weights, modality_weights, gates = self.weights(shared, private, present, uncertainty)
        fused = concatenate_blocks(shared, private, level_weights, modality_weights, gates)
        return fused, level_weights, modality_weights, gates

    def weights(
        self, shared: Tensor, private: Tensor | None, present: Tensor, uncertainty: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        raise NotImplementedError


class InterCAD(BlockAggregation):
    """Level weights, modality selection and gated private aggregation (module docstring).

    ``evidence`` ("none", "selection", "gates", "both") and ``temperature`` (tau) set the
    evidence-driven reading; with "none" the uncertainty passed to :meth:`forward` is unused.
    """

    def __init__(
        self,
        num_levels: int,
        shared_dim: int,
        private_dim: int,
        hidden: int,
        evidence: str = "none",
        temperature: float = 0.1,
    ) -> None:
        super().__init__()
        self.evidence_in_selection = evidence in ("selection", "both")
        self.evidence_in_gates = evidence in ("gates", "both")
        self.temperature = temperature
        self.level_anchor = nn.Parameter(torch.randn(num_levels, shared_dim) * 0.02)
        self.level_score = nn.Sequential(
            nn.LayerNorm(shared_dim), nn.Linear(shared_dim, hidden), nn.GELU(), nn.Linear(hidden, 1)
        )
        self.context_query = nn.Linear(shared_dim, shared_dim)
        self.modality_key = nn.Linear(shared_dim, shared_dim)
        if private_dim:
            self.gate = nn.Sequential(
                nn.Linear(private_dim, hidden), nn.LayerNorm(hidden), nn.Linear(hidden, 1)
            )

    def weights(
        self, shared: Tensor, private: Tensor | None, present: Tensor, uncertainty: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """w (B, L), beta (B, M) and eta (B, M), the uncertainty read as ``evidence`` says."""
        relative = None
        if self.evidence_in_selection or self.evidence_in_gates:
            if uncertainty is None:
                raise ValueError("an evidence-driven InterCAD needs the modalities' uncertainty")
            relative = relative_uncertainty(uncertainty.to(shared.dtype), present) / self.temperature
        level_mask = present[:, None, :].expand(-1, shared.shape[1], -1)
        context = masked_mean(shared, level_mask, 2)  # c_l: (B, L, k_sh)
        level_weights = torch.softmax(self.level_score(context + self.level_anchor).squeeze(-1), 1)
        shared_bar = torch.einsum("bl,blmk->bmk", level_weights, shared)  # s-bar^(m)
        global_context = masked_mean(shared_bar, present, 1)  # g-bar
        query = self.context_query(global_context)[:, None, :]
        keys = self.modality_key(shared_bar)
        logits = (query * keys).sum(-1) / math.sqrt(shared_bar.shape[-1])
        if self.evidence_in_selection:
            logits = logits - relative
        modality_weights = masked_softmax(logits, present, 1)  # beta
        gates = present.to(shared.dtype)
        if private is not None:
            private_bar = torch.einsum("bl,blmk->bmk", level_weights, private)  # p-bar^(m)
            gate_logits = self.gate(private_bar).squeeze(-1)
            if self.evidence_in_gates:
                gate_logits = gate_logits - relative
            gates = torch.sigmoid(gate_logits) * gates  # eta_m
        return level_weights, modality_weights, gates


class UniformAggregation(BlockAggregation):
    """The ``no-intercad`` ablation: the same blocks with uniform level and modality weights
    and no gates, so the ablation removes InterCAD's learned weighting, not the layout."""

    def weights(
        self, shared: Tensor, private: Tensor | None, present: Tensor, uncertainty: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        b, levels = shared.shape[:2]
        level_weights = shared.new_full((b, levels), 1.0 / levels)
        modality_weights = present.to(shared.dtype) / present.sum(1, keepdim=True).clamp(min=1)
        return level_weights, modality_weights, present.to(shared.dtype)
