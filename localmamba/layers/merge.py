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

__all__ = ["ChannelAttention", "DirectionMerge"]


def _recording(x: torch.Tensor) -> bool:
    """Whether autograd records ops on x (a training step), where the inference paths below are slower."""
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
        if x.dtype == torch.float32 and x.is_cuda and not _recording(x):
            g = self._mean_normalized(x)  # (..., 1, C)
        else:
            g = self.norm(x).mean(-2, keepdim=True)  # (..., 1, C)
        return torch.sigmoid(self.channel_select(F.gelu(self.global_reduce(g))))  # (..., 1, C)

    def _mean_normalized(self, x: torch.Tensor) -> torch.Tensor:
        """mean over tokens of LN(x), (..., 1, C), without LN's (..., T, C) output: with per-token mu_t and
        rstd_t, mean_t LN(x)_t = w * (mean_t rstd_t x_t - mean_t rstd_t mu_t) + b, the first term one
        matrix-vector product a (..., T, C) slice. In fp32 whatever autocast says (as LayerNorm under
        autocast), for fp32 inputs only (bf16 ones take LayerNorm, whose fp32 statistics this would round)
        and outside autograd: in a training step LayerNorm's backward was the faster one (H200,
        LocalVMamba-T at batch 128: 334 img/s against 302 with this path and the in-place sum). CUDA
        only: on CPU ``var_mean`` over the last dim took 2.1 ms where LayerNorm took 0.3 (LocalVim-T,
        batch 2, 2 threads)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            var, mu = torch.var_mean(x, -1, correction=0, keepdim=True)  # (..., T, 1)
            rstd = torch.rsqrt(var + self.norm.eps)  # (..., T, 1)
            m = (rstd.transpose(-1, -2) @ x - (rstd * mu).sum(-2, keepdim=True)) / x.shape[-2]  # (..., 1, C)
            return m * self.norm.weight + self.norm.bias  # (..., 1, C)

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
        g = self.attn.gate(xs)  # (B, K, 1, C); sum_k x_k gate_k in place: no (B, K, T, C) product
        out = xs[:, 0] * g[:, 0]  # (B, T, C)
        for k in range(1, K):
            out.addcmul_(xs[:, k], g[:, k])
        return out
