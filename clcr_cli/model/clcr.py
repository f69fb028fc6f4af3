"""CLCR: semantic-hierarchy encoders -> IntraCED at every level -> InterCAD -> head.

The paper's equations, numbered here in the order its method section states them (the
texts we have do not number them), and where each is computed:

====  ==============================================================  ==========================================
Eq.   paper                                                           module: symbol
====  ==============================================================  ==========================================
(1)   ``H_l^(m) = LN(Z_l^(m) W_l^(m) + P_l^(m))``                     hierarchy: LevelProjections
(2)   ``h_sh = h P_l^sh``, ``h_pr = h P_{l,m}^pr`` (Stiefel bases)     intraced: StiefelBases, IntraCED.forward
(3)   ``e_{l,t} = ||h_{l,t,sh}||_2``, scores ``alpha~``                 intraced: TokenBudget.forward
(4)   ``alpha_l^(m) = Proj_{Delta(B_l)}(alpha~_l^(m))``                simplex: capped_simplex_projection
(5)   ``h~_sh = alpha Attn(Q^(m), K^(-m), V^(-m))``                     attention: CrossModalAttention; IntraCED
(6)   summaries ``s_l, p_l``; ``w = softmax(MLP)``; ``s-bar, p-bar``     intercad: Summaries, InterCAD.forward
(7)   modality selection ``beta`` (query ``g-bar``, keys ``s-bar``)      intercad: InterCAD.forward
(8)   ``eta_m = sigma(w_p^T LN(W_p p-bar^(m)))``                         intercad: InterCAD.gate
(9)   ``y-hat = f_theta(z_sh (+) u_pr)``                                intercad: concatenate_blocks; heads
(10)  ``L_all = L_task + lambda_inter L_Inter + lambda_intra L_Intra``  losses: total_loss (L_Intra, L_pr, L_sp:
                                                                      stream_regularisers; L_mix:
                                                                      level_mix_penalty)
====  ==============================================================  ==========================================

The variant (variants.py) switches parts off for the paper's ablations:

- ``no-hierarchy`` keeps the encoders as they are and uses only their deepest level, so the
  ablation removes the hierarchy, not encoder depth;
- ``full-mix`` feeds exchange slot l with level ``(l + i) mod L`` of the i-th modality (a fixed
  cyclic shift), so for L >= 2 every exchange between two modalities crosses levels
  (with more modalities than levels some pairs necessarily meet at one level again);
- ``no-intraced`` replaces IntraCED by a dense exchange of full features, leaving no private
  stream: L_Intra, L_pr and L_sp are then 0;
- ``no-intercad`` replaces InterCAD's learned level weights, modality selection and gates by
  uniform weights over the same blocks; L_mix (which needs learned level weights) is then 0
  and the reported weights are uniform.

Beyond the paper, each an option (docs/model.md, "Leaning on the modality that transfers"):
the per-modality auxiliary heads ``g_m`` on each modality's own pooled levels
(``lambda_aux``, heads.py; **on by default**, ``lambda_aux = 1``: without them the fused
model can settle on one modality and never learn the other, chosen on a valid split of
unseen speakers; 0 is the paper's literal reading), the evidence-driven selection and gates
that read their uncertainty (``evidence``, intercad.py; off) and SpecAugment-style masking
of sequence inputs in training (``spec_time_mask``, ``spec_freq_mask``, batch.py; off). Every forward also reports each modality's pooled levels
(``encoded``, for single-modality probes), the gates ``eta_m`` and, with the auxiliary heads,
their predictions (``modality_logits``).

Missing modalities (``batch.present[m]`` False) are masked out of exchange keys, level
weights, modality selection and private aggregation, so their inputs cannot move the output.

Shapes: every modality's levels are joined on one token axis (tokens.py), so the exchange,
the summaries and the regularisers of all levels and modalities are batched operations.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from clcr_cli.model.batch import Batch, ModelOutput, mask_sequences
from clcr_cli.model.config import ModelConfig
from clcr_cli.model.heads import (
    ModalityHeads,
    PredictionHead,
    assemble_output,
    auxiliary_loss,
    modality_predictions,
    modality_uncertainty,
)
from clcr_cli.model.hierarchy import build_encoders, encode_batch
from clcr_cli.model.intercad import InterCAD, Summaries, UniformAggregation, fused_width
from clcr_cli.model.intraced import DenseExchange, IntraCED
from clcr_cli.model.losses import level_mix_penalty, stream_regularisers
from clcr_cli.model.tokens import join_modalities, pool_by_modality
from clcr_cli.model.variants import VARIANTS

# parameter names of earlier versions (``exchange`` was IntraCED, ``aggregate`` InterCAD),
# renamed on load so that their runs' weights still load: (old prefix, new prefix)
LEGACY_NAMES = (
    ("exchange.exchange.", "intraced.attention."),
    ("exchange.", "intraced."),
    ("aggregate.", "intercad."),
    ("intraced.budget.rate_logit", "intraced.budget.participation_logit"),
)


def rename_legacy(state: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``state`` with the names of :data:`LEGACY_NAMES` (below ``prefix``) renamed."""
    out = {}
    for key, value in state.items():
        for old, new in LEGACY_NAMES:
            if key.startswith(prefix + old):
                key = prefix + new + key[len(prefix + old):]
        out[key] = value
    return out


class CLCR(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self._register_load_state_dict_pre_hook(self._rename_legacy)
        self.config = config
        self.variant = VARIANTS[config.variant]
        modalities = len(config.modality_names)
        self.encoders = build_encoders(config)
        self.num_slots = config.num_levels if self.variant.hierarchy else 1
        if self.variant.controlled_exchange:
            shared_dim, private_dim = config.shared_width, config.private_width
            self.intraced = IntraCED(
                config.d,
                shared_dim,
                private_dim,
                self.num_slots,
                modalities,
                config.num_heads,
                config.participation,
                config.learn_budget,
                dense_budget=not self.variant.sparse_budget,
                budget_scale=config.budget_scale,
            )
        else:
            shared_dim, private_dim = config.d, 0
            self.intraced = DenseExchange(config.d, config.num_heads, self.num_slots)
        self.shared_summary = Summaries(shared_dim)
        self.private_summary = Summaries(private_dim) if private_dim else None
        if self.variant.intercad:
            self.intercad = InterCAD(
                self.num_slots,
                shared_dim,
                private_dim,
                config.d,
                evidence=config.evidence,
                temperature=config.evidence_temperature,
            )
        else:
            self.intercad = UniformAggregation()
        width = fused_width(self.num_slots, modalities, shared_dim, private_dim)
        self.head = PredictionHead(width, config)
        # g_m (heads.py); built only when used, so that runs without them keep their weights
        self.modality_heads = (
            ModalityHeads(self.num_slots * config.d, config) if config.lambda_aux > 0 else None
        )
        self.kinds = {spec.name: spec.kind for spec in config.modalities}

    @staticmethod
    def _rename_legacy(state: dict[str, Any], prefix: str, *args: Any) -> None:
        renamed = rename_legacy(state, prefix)
        state.clear()
        state.update(renamed)

    def forward(self, batch: Batch) -> ModelOutput:
        config, variant = self.config, self.variant
        if self.training and (config.spec_time_mask > 0 or config.spec_freq_mask > 0):
            batch = mask_sequences(batch, self.kinds, config.spec_time_mask, config.spec_freq_mask)
        levels, masks, present = encode_batch(self.encoders, batch)  # levels[m]: (B, L, T_m, d)
        if not variant.hierarchy:
            levels = {m: h[:, -1:] for m, h in levels.items()}
        if variant.cross_level_mix:  # slot l of the i-th modality holds its level (l + i) mod L
            levels = {m: h.roll(-i, dims=1) for i, (m, h) in enumerate(levels.items())}
        tokens, layout = join_modalities(levels, masks, present)
        # x^(m): modality m's levels pooled over its valid steps, before any exchange (B, M, L d)
        encoded = pool_by_modality(tokens, layout).permute(0, 2, 1, 3).flatten(2)
        aux_logits = uncertainty = None
        if self.modality_heads is not None:
            aux_logits = self.modality_heads(encoded)
            uncertainty = modality_uncertainty(aux_logits, layout.present, config.task == "regression")
        streams = self.intraced(tokens, layout)
        shared = self.shared_summary(streams.shared, layout)
        private = None
        if self.private_summary is not None:
            private = self.private_summary(streams.private, layout)
        fused, level_weights, modality_weights, gates = self.intercad(
            shared, private, layout.present, uncertainty
        )
        prediction = self.head(fused)

        weighted, extra = {}, {}
        if aux_logits is not None and batch.target is not None:
            weighted["aux"] = (config.lambda_aux, auxiliary_loss(aux_logits, batch.target, layout.present, config))
        if variant.intra_reg or variant.inter_reg:
            intra, pr, sp = stream_regularisers(streams, config.whitening, config.reg_max_tokens)
        if variant.intra_reg:
            weighted["intra"] = (config.lambda_intra, intra)
        if variant.inter_reg:
            mix = level_mix_penalty(level_weights) if variant.intercad else pr.new_zeros(())
            weighted["inter"] = (config.lambda_inter, pr + sp + mix)
            extra = {"pr": pr, "sp": sp, "mix": mix}
        budget = getattr(self.intraced, "budget", None)
        if budget is not None:
            for slot, rate in enumerate(budget.participation):
                extra[f"participation_{slot}"] = rate
        output = assemble_output(
            prediction,
            batch,
            config,
            weighted,
            extra,
            level_weights,
            modality_weights,
            private_gates=gates.detach(),
            encoded=encoded.detach(),
            modality_logits=None
            if aux_logits is None
            else modality_predictions(aux_logits, config.task == "regression").detach(),
        )
        output.streams = streams
        return output
