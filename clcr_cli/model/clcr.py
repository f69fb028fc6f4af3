"""CLCR: semantic-hierarchy encoders -> IntraCED at every level -> InterCAD -> head.

``L_all = L_task + lambda_intra L_Intra + lambda_inter (L_pr + L_sp + L_mix)`` (losses.py).
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

Missing modalities (``batch.present[m]`` False) are masked out of exchange keys, level
weights, modality selection and private aggregation, so their inputs cannot move the output.

Shapes: every modality's levels are joined on one token axis (tokens.py), so the exchange,
the summaries and the regularisers of all levels and modalities are batched operations.
"""

from __future__ import annotations

from torch import nn

from clcr_cli.model.batch import Batch, ModelOutput
from clcr_cli.model.config import ModelConfig
from clcr_cli.model.heads import PredictionHead, assemble_output
from clcr_cli.model.hierarchy import build_encoders, encode_batch
from clcr_cli.model.intercad import InterCAD, MeanAggregation, Summaries, fused_width
from clcr_cli.model.intraced import DenseExchange, IntraCED
from clcr_cli.model.losses import level_mix_penalty, stream_regularisers
from clcr_cli.model.tokens import join_modalities
from clcr_cli.model.variants import VARIANTS


class CLCR(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.variant = VARIANTS[config.variant]
        modalities = len(config.modality_names)
        self.encoders = build_encoders(config)
        self.num_slots = config.num_levels if self.variant.hierarchy else 1
        if self.variant.controlled_exchange:
            shared_dim, private_dim = config.shared_width, config.private_width
            self.exchange = IntraCED(
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
            self.exchange = DenseExchange(config.d, config.num_heads, self.num_slots)
        self.shared_summary = Summaries(shared_dim)
        self.private_summary = Summaries(private_dim) if private_dim else None
        if self.variant.intercad:
            self.aggregate = InterCAD(self.num_slots, shared_dim, private_dim, config.d)
        else:
            self.aggregate = MeanAggregation()
        width = fused_width(self.num_slots, modalities, shared_dim, private_dim)
        self.head = PredictionHead(width, config)

    def forward(self, batch: Batch) -> ModelOutput:
        config, variant = self.config, self.variant
        levels, masks, present = encode_batch(self.encoders, batch)  # levels[m]: (B, L, T_m, d)
        if not variant.hierarchy:
            levels = {m: h[:, -1:] for m, h in levels.items()}
        if variant.cross_level_mix:  # slot l of the i-th modality holds its level (l + i) mod L
            levels = {m: h.roll(-i, dims=1) for i, (m, h) in enumerate(levels.items())}
        tokens, layout = join_modalities(levels, masks, present)
        streams = self.exchange(tokens, layout)
        shared = self.shared_summary(streams.shared, layout)
        private = None
        if self.private_summary is not None:
            private = self.private_summary(streams.private, layout)
        fused, level_weights, modality_weights = self.aggregate(shared, private, layout.present)
        prediction = self.head(fused)

        weighted, extra = {}, {}
        if variant.intra_reg or variant.inter_reg:
            intra, pr, sp = stream_regularisers(streams, config.whitening, config.reg_max_tokens)
        if variant.intra_reg:
            weighted["intra"] = (config.lambda_intra, intra)
        if variant.inter_reg:
            mix = level_mix_penalty(level_weights) if variant.intercad else pr.new_zeros(())
            weighted["inter"] = (config.lambda_inter, pr + sp + mix)
            extra = {"pr": pr, "sp": sp, "mix": mix}
        budget = getattr(self.exchange, "budget", None)
        if budget is not None:
            for slot, rate in enumerate(budget.participation):
                extra[f"participation_{slot}"] = rate
        output = assemble_output(
            prediction, batch, config, weighted, extra, level_weights, modality_weights
        )
        output.streams = streams
        return output
