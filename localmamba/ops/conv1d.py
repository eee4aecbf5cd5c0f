"""Causal depthwise conv1d with an optional SiLU: the short convolution of a Mamba mixer.

Per batch element and channel ``c``, kernel width ``W`` (the signature of the causal-conv1d package)::

    out_t = act(bias + sum_{s < W} weight[c, W-1-s] * x_{t-s})        x_{t<0} = 0, act: identity or SiLU

``x`` is (batch, dim, seqlen) in any layout; the output keeps it. The mixers pass channels-innermost views,
(B, L, C) or (L, B, C) storage, so that a time step is one contiguous row of channels:

- ``"ref"``: :func:`causal_conv1d_ref`, W shifted multiply-adds in plain PyTorch (autograd through them),
  in x's dtype as ``nn.Conv1d`` under autocast. Any device; the oracle.
- ``"torch"``: :func:`causal_conv1d_torch`, the same multiply-adds with each tap's weights as a contiguous row
  (the reference's taps are columns of the (dim, W) weight, strided by W, which in the channels-innermost
  layouts keeps the multiply-adds from vectorising). Any device. A LocalVim-T layer at batch 2 on the
  2-core CPU, (L, B, C) storage: 0.70 ms against the reference's 1.21 (medians, 2 threads).
- ``"cpu"``: :func:`causal_conv1d_cpu`, a C kernel for fp32 CPU tensors, forward and backward (``conv1d_cpu.py``,
  ``conv1d_cpu.c``, built on first use with the system C compiler as the selective scan's): one pass over x per
  direction, the last W steps in registers, the SiLU and the weight and bias gradients fused. Other dtypes
  and widths above 8 run "torch".
- ``"triton"``: one kernel forward, one backward (CUDA; ``conv1d_triton.py``). The reference spends on a GPU ~2.7 ms a LocalVim-T
  layer of a training step at batch 128 (H200): the in-place shifted adds on views make autograd copy the
  gradient once per tap, and every tap, its weight gradient and the SiLU are a pass over the activations.
  The kernels read x once (a tile and its W-1 rows of history from cache) and accumulate in fp32.
- ``"auto"``: ``"triton"`` for CUDA tensors when triton imports, ``"cpu"`` for CPU tensors when a C compiler
  built the kernel, else ``"torch"``; "cuda", which has no conv of its own, takes that choice too
  (:mod:`localmamba.ops._dispatch`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import ACTIVATIONS, check_conv_inputs
from ._dispatch import Op
from .conv1d_cpu import causal_conv1d_cpu_checked
from .conv1d_triton import causal_conv1d_triton

__all__ = ["causal_conv1d", "causal_conv1d_ref", "causal_conv1d_torch", "causal_conv1d_cpu", "causal_conv1d_triton",
           "CONV1D", "ACTIVATIONS"]


def _shifted_adds(x: torch.Tensor, taps, bias: torch.Tensor | None, activation: str | None) -> torch.Tensor:
    """out_t = act(bias + sum_s taps[W-1-s] * x_{t-s}) as W shifted multiply-adds along the last dim, in
    x's layout; taps: W per-channel weight tensors (C, 1), already in x's dtype."""
    W, L = len(taps), x.shape[-1]
    if bias is not None:
        out = torch.addcmul(bias.to(x.dtype)[:, None], x, taps[-1])  # (B, C, L), x's layout
    else:
        out = x * taps[-1]
    for s in range(1, min(W, L)):
        out.narrow(-1, s, L - s).addcmul_(x.narrow(-1, 0, L - s), taps[-1 - s])
    return F.silu(out, inplace=True) if activation else out


def causal_conv1d_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                      activation: str | None = None) -> torch.Tensor:
    """Plain PyTorch: W shifted multiply-adds along the last dim, in x's dtype; output in x's layout."""
    check_conv_inputs(x, weight, bias, activation)
    return _shifted_adds(x, weight.to(x.dtype)[..., None].unbind(1), bias, activation)  # taps: (C, 1) columns


def causal_conv1d_torch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                        activation: str | None = None) -> torch.Tensor:
    """:func:`causal_conv1d_ref`'s multiply-adds (same order, same result) with the weight transposed once
    to (W, dim): each tap is then a contiguous row that broadcasts along x's channels. Any device."""
    check_conv_inputs(x, weight, bias, activation)
    taps = weight.to(x.dtype).t().contiguous()[..., None].unbind(0)  # W x (C, 1), each contiguous
    return _shifted_adds(x, taps, bias, activation)


def causal_conv1d_cpu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                      activation: str | None = None) -> torch.Tensor:
    """The C kernel (fp32 CPU tensors; ``conv1d_cpu.py``), output in x's layout; other dtypes and widths above 8
    run :func:`causal_conv1d_torch`. Raises RuntimeError naming what to install when it cannot be built."""
    check_conv_inputs(x, weight, bias, activation)
    return causal_conv1d_cpu_checked(x, weight, bias, activation, fallback=causal_conv1d_torch)


CONV1D = Op("causal_conv1d", impls={"ref": causal_conv1d_ref, "torch": causal_conv1d_torch, "cpu": causal_conv1d_cpu,
                                    "triton": causal_conv1d_triton},
            auto={"cuda": ("triton", "torch"), "cpu": ("cpu", "torch"), None: ("torch",)})


def causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  activation: str | None = None, backend: str = "auto") -> torch.Tensor:
    """Causal depthwise conv1d, x (batch, dim, seqlen), weight (dim, width), bias (dim,); see the module doc."""
    return CONV1D(backend, x.device)(x, weight, bias, activation)
