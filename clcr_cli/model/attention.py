"""Masked multi-head cross-attention and masked pooling, shared by CLCR and the baselines."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


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
