"""The task head ``f_theta`` shared by CLCR and every baseline, and the output assembly."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from clcr_cli.model.batch import Batch, ModelOutput
from clcr_cli.model.config import ModelConfig
from clcr_cli.model.losses import task_loss, total_loss

TERM_NAMES = ("task", "intra", "inter", "pr", "sp", "mix")


class PredictionHead(nn.Module):
    """``f(x)``: LN, a GELU hidden layer of width d, then logits (C) or a scalar (regression)."""

    def __init__(self, in_dim: int, config: ModelConfig) -> None:
        super().__init__()
        self.regression = config.task == "regression"
        self.net = nn.Sequential(
            nn.LayerNorm(in_dim),
            nn.Linear(in_dim, config.d),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.d, config.output_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x)
        return out.squeeze(-1) if self.regression else out


def assemble_output(
    prediction: Tensor,
    batch: Batch,
    config: ModelConfig,
    weighted_terms: dict[str, tuple[float, Tensor]],
    extra_terms: dict[str, Tensor] | None = None,
    level_weights: Tensor | None = None,
    modality_weights: Tensor | None = None,
) -> ModelOutput:
    """The model's output, with ``loss`` = :func:`~clcr_cli.model.losses.total_loss` (Eq. 10)
    and every term reported detached (0 if absent).

    ``weighted_terms`` maps a term name to (lambda, value). Without a target the loss is None
    and "task" is reported as 0.
    """
    zero = prediction.new_zeros(())
    terms = {name: zero for name in TERM_NAMES}
    terms.update({name: value for name, (_, value) in weighted_terms.items()})
    terms.update(extra_terms or {})
    loss = None
    if batch.target is not None:
        terms["task"] = task_loss(prediction, batch.target, config.task, config.regression_loss)
        loss = total_loss(terms["task"], weighted_terms)
    return ModelOutput(
        logits=prediction,
        loss=loss,
        terms={name: value.detach() for name, value in terms.items()},
        level_weights=level_weights,
        modality_weights=modality_weights,
    )


def stack_present(present: dict[str, Tensor]) -> Tensor:
    """(B, M) bool from the per-modality presence vectors, in modality order."""
    return torch.stack(list(present.values()), 1)
