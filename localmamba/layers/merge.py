"""Merging the outputs of several scan directions: channel attention per direction, then a sum.

The paper's SCAttn (``BiAttn`` in the original code) re-weights the channels of each direction's
output with a gate computed from that direction's own global average, so that a layer can favour
some channels of, say, its windowed scan over those of its row scan. During direction search the
directions are instead mixed by a softmax over learnable weights, after a non-affine LayerNorm
that puts the candidates on one scale.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import channel_merge

__all__ = ["ChannelAttention", "DirectionMerge"]


def _recording(x: torch.Tensor) -> bool:
    """Whether autograd records ops on x (a training step)."""
    return torch.is_grad_enabled() and x.requires_grad


class ChannelAttention(nn.Module):
    """x * sigmoid(W2 gelu(W1 mean_tokens(LN(x)))): one gate per channel, shared by all tokens."""

    def __init__(self, dim: int, reduction: float = 0.125):
        super().__init__()
        hidden = int(dim * reduction)
        self.norm = nn.LayerNorm(dim)
        self.global_reduce = nn.Linear(dim, hidden)
        self.channel_select = nn.Linear(hidden, dim)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., T, C) -> gate (..., 1, C) in (0, 1)."""
        return self.gate_from_mean(F.layer_norm(x, x.shape[-1:], eps=self.norm.eps).mean(-2, keepdim=True))

    def gate_from_mean(self, m: torch.Tensor) -> torch.Tensor:
        """The gate from m = mean over tokens of LN(x) without LN's affine part (..., C) -> (..., C): the
        mean of the affine LN is then w * m + b."""
        return torch.sigmoid(self.channel_select(F.gelu(self.global_reduce(torch.addcmul(self.norm.bias, m,
                                                                                          self.norm.weight)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class DirectionMerge(nn.Module):
    """Merge K directions already reversed to token order: (B, K, T, C) -> (B, T, C).

    ``search=False``: sum over directions of ChannelAttention(x_k).
    ``search=True`` (supernet): sum of softmax(weights)_k * LN(ChannelAttention(x_k)), LN without
    affine parameters; :attr:`weights` are the architecture parameters that direction search reads.
    """

    def __init__(self, dim: int, num_directions: int, search: bool = False):
        super().__init__()
        self.num_directions = num_directions
        self.search = search
        self.attn = ChannelAttention(dim)
        if search:
            self.weights = nn.Parameter(1e-3 * torch.randn(num_directions, 1, 1, 1))

    def probabilities(self) -> torch.Tensor:
        """Softmax over the K candidates (search mode only): (K,)."""
        if not self.search:
            raise RuntimeError("direction probabilities exist only for a search (supernet) layer")
        return self.weights.detach().flatten().softmax(0)

    def merge_rows(self, rows: torch.Tensor, index: torch.Tensor, s: torch.Tensor | None = None,
                   backend: str = "auto") -> torch.Tensor:
        """:meth:`forward` of x_kt = rows[:, index[k, t]] * s_t, (B, T, C): the scanned sequences as rows
        (B, R, C), before their reverse to token order, which ``index`` (K, T) gives
        (:meth:`~localmamba.scan.ScanPlan.reverse_rows`), and an optional gate s (B, T, C). The channel
        attention merge then runs as :func:`~localmamba.ops.channel_merge`: on GPUs its kernels read each
        direction's rows in place, with neither the (B, K, T, C) gather nor LayerNorm's output in memory.
        ``backend``: the mixer's, passed on to the op (the names it lacks run its "auto" choice)."""
        if index.shape[0] != self.num_directions:
            raise ValueError(f"expected {self.num_directions} directions, got {index.shape[0]}")
        if self.search:
            B, _, C = rows.shape
            xs = rows.index_select(1, index.flatten()).view(B, *index.shape, C)  # (B, K, T, C)
            return self(xs if s is None else xs * s.unsqueeze(1))
        return channel_merge(rows, index, self.attn.gate_from_mean, s=s, eps=self.attn.norm.eps, backend=backend)

    def forward(self, xs: torch.Tensor) -> torch.Tensor:
        B, K, T, C = xs.shape
        if K != self.num_directions:
            raise ValueError(f"expected {self.num_directions} directions, got {K}")
        if self.search:
            xs = F.layer_norm(self.attn(xs), (C,))  # (B, K, T, C)
            w = self.weights.softmax(0).view(1, K, 1, 1).to(xs.dtype)
            return (xs * w).sum(1)  # (B, T, C)
        if _recording(xs):
            return self.attn(xs).sum(1)  # (B, T, C)
        g = self.attn.gate(xs)  # (B, K, 1, C); sum_k x_k gate_k in place, outside autograd: no (B, K, T, C) product
        out = xs[:, 0] * g[:, 0]  # (B, T, C)
        for k in range(1, K):
            out.addcmul_(xs[:, k], g[:, k])
        return out
