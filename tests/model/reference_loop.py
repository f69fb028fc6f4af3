"""CLCR written the slow, obvious way: a loop over levels and modalities, one attention and one
correlation at a time, with the batched model's own parameters. The batched model must agree
with it (test_reference.py): this file is the readable statement of what the batched
operations compute."""

from __future__ import annotations

import math
from itertools import combinations, permutations

import torch
from torch import Tensor, nn

from clcr_cli.model.attention import masked_mean
from clcr_cli.model.batch import Batch
from clcr_cli.model.clcr import CLCR
from clcr_cli.model.hierarchy import encode_batch
from clcr_cli.model.intraced import cayley
from clcr_cli.model.losses import cross_correlation, level_mix_penalty, task_loss
from clcr_cli.model.simplex import capped_simplex_projection


def bases(model: CLCR, level: int, m: int) -> tuple[Tensor, Tensor]:
    """U_l^sh (d, k_sh) and U_{l,m}^pr (d, k_pr) of one level and modality."""
    b = model.intraced.bases
    rotation = b.rotation_base[level] @ cayley(b.rotation[level])
    private = (b.private_base[level, m] @ cayley(b.private_rotation[level, m]))[:, : b.private_dim]
    return rotation[:, : b.shared_dim], rotation[:, b.shared_dim :] @ private


def budget(model: CLCR, shared: Tensor, mask: Tensor, level: int, m: int) -> Tensor:
    """alpha (B, T_m) of one modality at one level."""
    tb = model.intraced.budget
    keep = mask.float()
    count = keep.sum(1, keepdim=True).clamp(min=1)
    evidence = shared.norm(dim=-1)
    mean = (evidence * keep).sum(1, keepdim=True) / count
    var = ((evidence - mean).pow(2) * keep).sum(1, keepdim=True) / count
    z = (evidence - mean) / (var + 1e-6).sqrt()
    scores = torch.sigmoid(nn.functional.softplus(tb.scale[level, m]) * (z - tb.threshold[level]))
    return capped_simplex_projection(scores, tb.participation[level] * mask.sum(1).float(), mask)


def attention(model: CLCR, query: Tensor, keys: Tensor, key_mask: Tensor, level: int) -> Tensor:
    """Multi-head attention of one modality's shared tokens to the others' at one level."""
    att = model.intraced.attention
    dim = query.shape[-1]
    w, bias = att.qkv[level], att.qkv_bias[level, 0]
    q = query @ w[:, :dim] + bias[:dim]
    k = keys @ w[:, dim : 2 * dim] + bias[dim : 2 * dim]
    v = keys @ w[:, 2 * dim :] + bias[2 * dim :]
    heads, split = att.heads, dim // att.heads
    out = []
    for h in range(heads):
        part = slice(h * split, (h + 1) * split)
        logits = q[..., part] @ k[..., part].transpose(1, 2) / math.sqrt(split)
        logits = logits.masked_fill(~key_mask[:, None, :], float("-inf"))
        weights = torch.softmax(logits, -1).nan_to_num(0.0)  # no key at all: zero
        out.append(weights @ v[..., part])
    mixed = torch.cat(out, -1) @ att.out[level] + att.out_bias[level, 0]
    return mixed * key_mask.any(1)[:, None, None].float()


def reference_forward(model: CLCR, batch: Batch) -> dict[str, Tensor]:
    """Logits, loss and loss terms of the ``full`` variant, computed level by level."""
    config = model.config
    levels, masks, present = encode_batch(model.encoders, batch)
    names = list(levels)
    shared, private = {}, {}
    for level in range(config.num_levels):
        for i, m in enumerate(names):
            u_sh, u_pr = bases(model, level, i)
            shared[level, m] = levels[m][:, level] @ u_sh
            private[level, m] = levels[m][:, level] @ u_pr
    exchanged = {}
    for level in range(config.num_levels):
        for i, m in enumerate(names):
            others = [o for o in names if o != m]
            keys = torch.cat([shared[level, o] for o in others], 1)
            key_mask = torch.cat([masks[o] for o in others], 1)
            alpha = budget(model, shared[level, m], masks[m], level, i)
            update = attention(model, shared[level, m], keys, key_mask, level)
            exchanged[level, m] = (shared[level, m] + alpha[..., None] * update) * masks[m][..., None]

    def summaries(streams: dict, norm: nn.LayerNorm) -> Tensor:  # (B, L, M, k)
        return norm(
            torch.stack(
                [
                    torch.stack([masked_mean(streams[lv, m], masks[m], 1) for m in names], 1)
                    for lv in range(config.num_levels)
                ],
                1,
            )
        )

    present_bm = torch.stack([present[m] for m in names], 1)
    fused, level_weights, _, _ = model.intercad(
        summaries(exchanged, model.shared_summary.norm),
        summaries(private, model.private_summary.norm),
        present_bm,
    )
    logits = model.head(fused)

    def rows(x: Tensor, m: str) -> Tensor:
        return x[masks[m]]

    intra = []
    for level in range(config.num_levels):
        pooled = {m: masked_mean(private[level, m], masks[m], 1) for m in names}
        for a, b in combinations(names, 2):
            both = present[a] & present[b]
            intra.append(cross_correlation(pooled[a][both], pooled[b][both], config.whitening))
        for m in names:
            intra.append(
                cross_correlation(
                    rows(private[level, m], m), rows(exchanged[level, m], m), config.whitening
                )
            )
    pr, sp = [], []
    for m in names:
        for i, j in combinations(range(config.num_levels), 2):
            pr.append(cross_correlation(rows(private[i, m], m), rows(private[j, m], m), config.whitening))
        for i, j in permutations(range(config.num_levels), 2):
            sp.append(cross_correlation(rows(exchanged[i, m], m), rows(private[j, m], m), config.whitening))
    terms = {
        "task": task_loss(logits, batch.target, config.task, config.regression_loss),
        "intra": torch.stack(intra).mean(),
        "pr": torch.stack(pr).mean(),
        "sp": torch.stack(sp).mean(),
        "mix": level_mix_penalty(level_weights),
    }
    terms["loss"] = (
        terms["task"]
        + config.lambda_intra * terms["intra"]
        + config.lambda_inter * (terms["pr"] + terms["sp"] + terms["mix"])
    )
    return {"logits": logits, **terms}
