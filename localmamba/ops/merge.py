"""Channel-attention merge of K scan directions, read straight from the scanned sequences.

LocalMamba's merge (the paper's SCAttn) re-weights each direction's channels with a gate computed from
that direction's mean over tokens, then sums the directions. Per batch element, with ``x_kt`` the output
of direction k at token t::

    x_kt  = rows[index[k, t]] * s_t                      (s optional: the mixer's silu(z) gate)
    m_k   = mean_t LayerNorm(x_kt)                        (no affine: ``gate`` applies its own)
    out_t = sum_k gate(m)_k * x_kt

The output has the dtype of ``x_kt * gate_k`` (bf16 for bf16 rows under autocast, where autocast alone would
sum the bf16 terms into fp32; the next linear layer rounds to bf16 either way).

``rows`` (B, R, C) are the scanned sequences as rows, in whatever order the scan wrote them, and ``index``
(K, T) says which row holds direction k's token t: the reverse of the scan is part of the op, not a
gather before it. ``gate`` maps the (B, K, C) means to a (B, K, C) gate (autograd runs through it).

- ``"ref"``: :func:`channel_merge_ref`, the gather and the definition in plain PyTorch (autograd through
  them). Any device; the oracle.
- ``"triton"`` (``merge_triton.py``): two autograd Functions around the gate: the means (one pass over the rows, which keeps each
  token's mean and 1/std) and the weighted sum (one pass); each backward is one pass too. Every pass reads
  a direction's rows straight from the scan's layout and accumulates in fp32. The plain-PyTorch merge of a
  LocalVim-T training step spent about 30 ms of 170 (H200, batch 128) on the gather, LayerNorm, products and
  sum over (B, K, T, C) tensors and their gradients; these kernels about 9 ms.
  ``index`` must not repeat a row (the scan's reverse does not); rows no index reads get zero gradient.
- ``"auto"``: ``"triton"`` for CUDA tensors when triton imports, else ``"ref"``; the names without a merge of
  their own ("torch", "cpu", "cuda") take that choice too (:mod:`localmamba.ops._dispatch`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_merge_inputs
from ._dispatch import Op
from .merge_triton import Gate, channel_merge_triton

__all__ = ["channel_merge", "channel_merge_ref", "channel_merge_triton", "MERGE", "Gate"]


def channel_merge_ref(rows: torch.Tensor, index: torch.Tensor, gate: Gate, s: torch.Tensor | None = None,
                      eps: float = 1e-5) -> torch.Tensor:
    """Plain PyTorch: gather the K directions to (B, K, T, C), then the definition. -> (B, T, C)."""
    check_merge_inputs(rows, index, s)
    B, _, C = rows.shape
    K, T = index.shape
    x = rows.index_select(1, index.flatten()).view(B, K, T, C)  # (B, K, T, C), token order
    if s is not None:
        x = x * s.unsqueeze(1)
    m = F.layer_norm(x, (C,), eps=eps).mean(2)  # (B, K, C)
    xg = x * gate(m).unsqueeze(2)  # (B, K, T, C)
    return xg.sum(1).to(xg.dtype)  # (B, T, C), in x * gate's dtype (autocast would sum bf16 terms into fp32)


MERGE = Op("channel_merge", impls={"ref": channel_merge_ref, "triton": channel_merge_triton},
           auto={"cuda": ("triton", "ref"), None: ("ref",)})


def channel_merge(rows: torch.Tensor, index: torch.Tensor, gate: Gate, s: torch.Tensor | None = None,
                  eps: float = 1e-5, backend: str = "auto") -> torch.Tensor:
    """Channel-attention merge, rows (B, R, C), index (K, T) -> (B, T, C); see the module doc."""
    return MERGE(backend, rows.device)(rows, index, gate, s, eps)
