"""Baselines on the same inputs, encoders and head as CLCR, for honest comparison.

Each baseline uses the same :class:`SemanticHierarchyEncoder` per modality and reads its
deepest level only (no hierarchy), pooled by masked mean + LN to one vector ``x_m`` per
modality. Missing modalities are masked everywhere (zero vector, no vote, no key).

- ``late-fusion``: one head per modality; prediction = mean of the unimodal predictions over
  the present modalities.
- ``early-fusion``: one head on the concatenation of every ``x_m`` (zeros where missing).
- ``misa``: MISA-style (Hazarika et al., 2020), without hierarchy or budget. A common shared
  projection ``E_c`` and a private projection ``E_p^m`` per modality (Linear + sigmoid);
  losses: L_diff = ``||S_m^T P_m||_F^2`` on centred, L2-normalised batch matrices (shared vs
  private of a modality and private vs private of two modalities), L_sim = CMD (central moment
  discrepancy, 5 moments) between the shared vectors of every two modalities, L_recon = MSE
  of a per-modality linear decoder from ``E_c + E_p`` back to ``x_m``. The 2M vectors go
  through one self-attention block, are concatenated and fed to the head. The three losses
  are summed into the reported "intra" term with weight lambda_intra (and also reported as
  "diff", "sim", "recon").

Every baseline reports its pooled ``x_m`` as ``encoded`` (the single-modality probes of
``clcr eval`` read it), late fusion also its per-modality votes as ``modality_logits``.
"""

from __future__ import annotations

from itertools import combinations

import torch
from torch import Tensor, nn

from clcr_cli.model.attention import CrossAttention, masked_mean
from clcr_cli.model.batch import Batch, ModelOutput
from clcr_cli.model.config import ModelConfig
from clcr_cli.model.heads import PredictionHead, assemble_output, stack_present
from clcr_cli.model.hierarchy import build_encoders, encode_batch


class PooledEncoders(nn.Module):
    """Every modality's deepest level, pooled: (B, M, d), with presence (B, M)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.encoders = build_encoders(config)
        self.norm = nn.LayerNorm(config.d)

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor]:
        levels, masks, present = encode_batch(self.encoders, batch)
        pooled = torch.stack([masked_mean(levels[m][:, -1], masks[m], 1) for m in levels], 1)
        present_bm = stack_present(present)
        return self.norm(pooled) * present_bm[..., None], present_bm


class LateFusion(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.pooled = PooledEncoders(config)
        self.heads = nn.ModuleList(PredictionHead(config.d, config) for _ in config.modalities)

    def forward(self, batch: Batch) -> ModelOutput:
        x, present = self.pooled(batch)
        votes = torch.stack([head(x[:, i]) for i, head in enumerate(self.heads)], 1)  # (B, M[, C])
        weight = present.to(votes.dtype)
        if votes.dim() == 3:
            weight = weight[..., None]
        prediction = (votes * weight).sum(1) / weight.sum(1).clamp(min=1)
        return assemble_output(
            prediction, batch, self.config, {}, encoded=x.detach(), modality_logits=votes.detach()
        )


class EarlyFusion(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.pooled = PooledEncoders(config)
        self.head = PredictionHead(config.d * len(config.modalities), config)

    def forward(self, batch: Batch) -> ModelOutput:
        x, _ = self.pooled(batch)
        return assemble_output(self.head(x.flatten(1)), batch, self.config, {}, encoded=x.detach())


def difference_loss(a: Tensor, b: Tensor) -> Tensor:
    """MISA's L_diff: squared Frobenius norm of the correlation of row-normalised, centred a, b."""
    if a.shape[0] < 1:
        return a.new_zeros(())
    a = nn.functional.normalize(a - a.mean(0), dim=1)
    b = nn.functional.normalize(b - b.mean(0), dim=1)
    return (a.T @ b).pow(2).mean()


def central_moment_discrepancy(a: Tensor, b: Tensor, moments: int = 5) -> Tensor:
    """CMD (Zellinger et al., 2017): distance of means plus of central moments 2..K."""
    if a.shape[0] < 1:
        return a.new_zeros(())
    mean_a, mean_b = a.mean(0), b.mean(0)
    distance = (mean_a - mean_b).norm()
    centred_a, centred_b = a - mean_a, b - mean_b
    for k in range(2, moments + 1):
        distance = distance + (centred_a.pow(k).mean(0) - centred_b.pow(k).mean(0)).norm()
    return distance


class MISA(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        d, count = config.d, len(config.modalities)
        self.pooled = PooledEncoders(config)
        self.shared = nn.Sequential(nn.Linear(d, d), nn.Sigmoid())
        self.private = nn.ModuleList(
            nn.Sequential(nn.Linear(d, d), nn.Sigmoid()) for _ in range(count)
        )
        self.decoders = nn.ModuleList(nn.Linear(d, d) for _ in range(count))
        self.fusion = CrossAttention(d, config.num_heads, config.dropout)
        self.fusion_norm = nn.LayerNorm(d)
        self.head = PredictionHead(2 * count * d, config)

    def forward(self, batch: Batch) -> ModelOutput:
        x, present = self.pooled(batch)
        shared = self.shared(x)  # (B, M, d)
        private = torch.stack([enc(x[:, i]) for i, enc in enumerate(self.private)], 1)
        tokens = torch.cat([shared, private], 1)  # (B, 2M, d)
        token_mask = torch.cat([present, present], 1)
        tokens = self.fusion_norm(tokens + self.fusion(tokens, tokens, token_mask))
        prediction = self.head((tokens * token_mask[..., None]).flatten(1))

        diff, sim, recon = [], [], []
        for i in range(len(self.private)):
            rows = present[:, i]
            diff.append(difference_loss(shared[rows, i], private[rows, i]))
            rebuilt = self.decoders[i](shared[rows, i] + private[rows, i])
            if rows.any():
                recon.append(nn.functional.mse_loss(rebuilt, x[rows, i]))
        for i, j in combinations(range(len(self.private)), 2):
            rows = present[:, i] & present[:, j]
            diff.append(difference_loss(private[rows, i], private[rows, j]))
            sim.append(central_moment_discrepancy(shared[rows, i], shared[rows, j]))
        zero = x.new_zeros(())
        parts = {
            name: torch.stack(v).mean() if v else zero
            for name, v in (("diff", diff), ("sim", sim), ("recon", recon))
        }
        intra = parts["diff"] + parts["sim"] + parts["recon"]
        return assemble_output(
            prediction,
            batch,
            self.config,
            {"intra": (self.config.lambda_intra, intra)},
            parts,
            encoded=x.detach(),
        )


BASELINES: dict[str, type[nn.Module]] = {
    "late-fusion": LateFusion,
    "early-fusion": EarlyFusion,
    "misa": MISA,
}
