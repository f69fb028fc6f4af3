"""The task head ``f_theta`` shared by CLCR and every baseline, the per-modality auxiliary
heads ``g_m`` (an option of CLCR) and the output assembly.

*Auxiliary heads and their uncertainty (option ``lambda_aux > 0``).* Beside ``f_theta``,
each modality m gets its own head ``g_m`` (a :class:`PredictionHead`) on what its encoder
alone saw, ``x^(m) = (+)_l LN(mean_t H_l^(m))`` (the levels of Eq. 1 pooled over m's valid
steps, before any exchange), trained with the task loss at weight ``lambda_aux``
(:func:`auxiliary_loss`). Its per-sample uncertainty ``u_m`` in [0, 1]
(:func:`modality_uncertainty`) is the evidence signal the evidence-driven readings of InterCAD
use (intercad.py): for classification the normalised entropy
``H(softmax(g_m)) / log C`` (0: one class certain; 1: uniform), for regression ``g_m`` also
predicts a log-variance ``log s_m^2`` (Gaussian negative log-likelihood) and
``u_m = sigmoid(log s_m^2)``. ``u_m`` is detached where it is read: the auxiliary heads
learn only from their own loss, so the task loss cannot make a modality look sure to move
a gate. The paper has no such heads; they are the source of "confidence" its private gate
names (Eq. 8) and its modality selection ("the most informative modality", Eq. 7) implies.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from clcr_cli.model.batch import Batch, ModelOutput
from clcr_cli.model.config import ModelConfig
from clcr_cli.model.losses import task_loss, total_loss

TERM_NAMES = ("task", "intra", "inter", "pr", "sp", "mix")
MISSING_UNCERTAINTY = 1.0  # u_m of a missing modality: nothing known


class PredictionHead(nn.Module):
    """``f(x)``: LN, a GELU hidden layer of width d, then logits (C) or a scalar (regression)."""

    def __init__(self, in_dim: int, config: ModelConfig, output_dim: int | None = None) -> None:
        super().__init__()
        output_dim = config.output_dim if output_dim is None else output_dim
        self.squeeze = config.task == "regression" and output_dim == 1
        self.net = nn.Sequential(
            nn.LayerNorm(in_dim),
            nn.Linear(in_dim, config.d),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.d, output_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x)
        return out.squeeze(-1) if self.squeeze else out


class ModalityHeads(nn.Module):
    """The auxiliary heads ``g_m``, one per modality, each on its own ``x^(m)`` (module
    docstring): (B, M, F) -> (B, M, C) logits, or (B, M, 2) (mean, log-variance) for
    regression."""

    def __init__(self, in_dim: int, config: ModelConfig) -> None:
        super().__init__()
        self.regression = config.task == "regression"
        out = 2 if self.regression else config.output_dim
        self.heads = nn.ModuleList(PredictionHead(in_dim, config, out) for _ in config.modalities)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([head(x[:, i]) for i, head in enumerate(self.heads)], 1)


def modality_uncertainty(logits: Tensor, present: Tensor, regression: bool) -> Tensor:
    """``u_m`` (B, M) in [0, 1] from the auxiliary heads' outputs (B, M, C or 2), detached;
    :data:`MISSING_UNCERTAINTY` for a missing modality."""
    logits = logits.detach().float()
    if regression:
        u = torch.sigmoid(logits[..., 1])
    else:
        log_p = torch.log_softmax(logits, -1)
        u = -(log_p.exp() * log_p).sum(-1) / math.log(logits.shape[-1])
    return torch.where(present, u.clamp(0, 1), torch.full_like(u, MISSING_UNCERTAINTY))


def modality_predictions(logits: Tensor, regression: bool) -> Tensor:
    """What each auxiliary head predicts: its logits (B, M, C), or its mean (B, M)."""
    return logits[..., 0] if regression else logits


def auxiliary_loss(logits: Tensor, target: Tensor, present: Tensor, config: ModelConfig) -> Tensor:
    """The auxiliary heads' loss: the mean over present (sample, modality) pairs of the task
    loss of ``g_m`` (cross-entropy), or of the Gaussian NLL of its (mean, log-variance)."""
    rows = present.flatten()
    flat = logits.flatten(0, 1)[rows]
    if flat.shape[0] == 0:
        return logits.new_zeros(())
    target = target[:, None].expand(-1, present.shape[1]).flatten()[rows]
    if config.task == "classification":
        return nn.functional.cross_entropy(flat.float(), target.long())
    mean, log_var = flat[:, 0].float(), flat[:, 1].float().clamp(-10, 10)
    return nn.functional.gaussian_nll_loss(mean, target.float(), log_var.exp())


def assemble_output(
    prediction: Tensor,
    batch: Batch,
    config: ModelConfig,
    weighted_terms: dict[str, tuple[float, Tensor]],
    extra_terms: dict[str, Tensor] | None = None,
    level_weights: Tensor | None = None,
    modality_weights: Tensor | None = None,
    **fields: Tensor | None,
) -> ModelOutput:
    """The model's output, with ``loss`` = :func:`~clcr_cli.model.losses.total_loss` (Eq. 10)
    and every term reported detached (0 if absent). ``fields`` are further ModelOutput
    fields (``private_gates``, ``modality_logits``, ``encoded``).

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
        **fields,
    )


def stack_present(present: dict[str, Tensor]) -> Tensor:
    """(B, M) bool from the per-modality presence vectors, in modality order."""
    return torch.stack(list(present.values()), 1)
