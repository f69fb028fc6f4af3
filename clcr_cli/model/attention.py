"""Masked attention and pooling: CLCR's cross-modal exchange, MISA's fusion, masked means."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from clcr_cli.model.tokens import TokenLayout


def masked_mean(x: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Mean of ``x`` over ``dim`` counting only ``mask`` True entries; 0 where none is."""
    weight = mask.to(x.dtype).unsqueeze(-1)
    return (x * weight).sum(dim) / weight.sum(dim).clamp(min=1)


def masked_softmax(logits: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax over the True entries of ``mask``; an all-False slice gives all zeros."""
    logits = logits.masked_fill(~mask, float("-inf"))
    any_valid = mask.any(dim, keepdim=True)
    logits = torch.where(any_valid, logits, torch.zeros_like(logits))
    return torch.softmax(logits, dim) * mask


class CrossAttention(nn.Module):
    """``Attn(Q, K, V) = softmax(Q K^T / sqrt(d_head)) V`` over the valid keys, multi-head.

    A query whose key set is empty (every other modality missing) receives exactly zero.
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: Tensor, keys: Tensor, key_mask: Tensor) -> Tensor:
        """query (B, Tq, dim), keys (B, Tk, dim), key_mask (B, Tk) -> (B, Tq, dim)."""
        b, tq, dim = query.shape
        split = dim // self.heads

        def heads(x: Tensor) -> Tensor:
            return x.view(b, x.shape[1], self.heads, split).transpose(1, 2)

        q, k, v = heads(self.query(query)), heads(self.key(keys)), heads(self.value(keys))
        weights = masked_softmax(
            q @ k.transpose(-1, -2) / math.sqrt(split), key_mask[:, None, None, :]
        )
        mixed = (self.dropout(weights) @ v).transpose(1, 2).reshape(b, tq, dim)
        has_keys = key_mask.any(1)[:, None, None].to(mixed.dtype)
        return self.out(mixed) * has_keys


class CrossModalAttention(nn.Module):
    """Eq. (5)'s ``Attn(Q^(m), K^(-m), V^(-m))``: multi-head attention of every token to the valid tokens of the *other* modalities at its
    own level, for all L levels at once.

    Each level has its own query, key, value and output maps (``qkv`` stacks the first three
    as (L, dim, 3 dim)); the projections of all levels and modalities are one batched product.
    The attention itself is one ``scaled_dot_product_attention`` call per query modality
    (levels and heads batched), whose keys are the other modalities' tokens: a call over the
    whole joint axis with a block mask would spend most of its work on the masked blocks.
    A query with no key (every other modality missing) receives exactly zero.
    """

    def __init__(self, dim: int, heads: int, levels: int) -> None:
        super().__init__()
        self.heads = heads
        bound = dim**-0.5  # nn.Linear's default initialisation, per level and map
        self.qkv = nn.Parameter(torch.empty(levels, dim, 3 * dim).uniform_(-bound, bound))
        self.qkv_bias = nn.Parameter(torch.empty(levels, 1, 3 * dim).uniform_(-bound, bound))
        self.out = nn.Parameter(torch.empty(levels, dim, dim).uniform_(-bound, bound))
        self.out_bias = nn.Parameter(torch.empty(levels, 1, dim).uniform_(-bound, bound))

    def forward(self, x: Tensor, layout: TokenLayout) -> Tensor:
        """x (B, L, T, dim) -> (B, L, T, dim)."""
        b, levels, steps, dim = x.shape
        per_level = x.transpose(0, 1).reshape(levels, b * steps, dim)  # (L, B T, dim)
        q, k, v = torch.baddbmm(self.qkv_bias, per_level, self.qkv).chunk(3, -1)

        def heads(y: Tensor) -> Tensor:  # (L, B T, dim) -> (B, L heads, T, dim / heads)
            y = y.view(levels, b, steps, self.heads, dim // self.heads).permute(1, 0, 3, 2, 4)
            return y.reshape(b, levels * self.heads, steps, dim // self.heads)

        q, k, v = heads(q), heads(k), heads(v)
        mixed, answered = [], []
        for m, span in enumerate(layout.slices):
            others = [s for i, s in enumerate(layout.slices) if i != m]
            keys = torch.cat([k[:, :, s] for s in others], 2)
            values = torch.cat([v[:, :, s] for s in others], 2)
            valid = torch.cat([layout.mask[:, s] for s in others], 1)  # (B, T_keys)
            has_keys = valid.any(1)
            # a row without keys attends to all positions (finite) and is zeroed after
            allowed = (valid | ~has_keys[:, None])[:, None, None, :]
            mixed.append(
                nn.functional.scaled_dot_product_attention(q[:, :, span], keys, values, attn_mask=allowed)
            )
            answered.append(has_keys[:, None].expand(-1, span.stop - span.start))
        mixed = torch.cat(mixed, 2).view(b, levels, self.heads, steps, -1).permute(1, 0, 3, 2, 4)
        out = torch.baddbmm(self.out_bias, mixed.reshape(levels, b * steps, dim), self.out)
        keep = torch.cat(answered, 1)[:, None, :, None].to(out.dtype)  # (B, 1, T, 1)
        return out.view(levels, b, steps, dim).transpose(0, 1) * keep
