"""The "cpu" backend of the causal conv1d: a C kernel, forward and backward, for fp32 CPU tensors.

The torch backend runs W shifted multiply-adds and a SiLU as separate passes over the activations, and
autograd adds as many for the backward (a gradient copy per tap, a weight-gradient reduction per tap). Here
one pass per (batch element, block of 8 channels) walks the steps with the last W inputs in registers; the
backward walks back in time, recomputes the pre-activation for SiLU's derivative and writes dx, with dweight
and dbias summed in registers (per-batch-element partials, added up here). Nothing but the inputs is saved
for the backward; under ``torch.no_grad`` (or with no input requiring grad) nothing at all.

- Source: ``conv1d_cpu.c`` next to this file, built with the other CPU kernels on first use and run on
  torch's OpenMP threads (:mod:`._cpu_kernels`: the compiler, the build cache, the threads).
- Any strides: channels at stride 1 (the CPU mixers' (L, B, C) storage, or (B, L, C)) are read as whole
  vectors, other layouts lane by lane (correct, not fast); the output and dx take x's layout.
- fp32 x only, kernel width 1 to 8: other dtypes (bf16 under autocast, fp64 for gradcheck) and widths run
  :func:`~localmamba.ops.conv1d.causal_conv1d_torch` instead, computing in x's dtype as the reference does.
  The weight and bias are used in fp32; their gradients come back in their dtypes.
- ``LOCALMAMBA_CPU_KERNEL=0`` turns the CPU kernels off ("auto" then uses "torch").
"""
from __future__ import annotations

import ctypes
from typing import Callable

import torch
from torch.autograd.function import once_differentiable

from ._cpu_kernels import VL, KernelArgs, check_runnable, run

__all__ = ["causal_conv1d_cpu_checked", "CausalConv1dCpuFn", "MAX_WIDTH"]

MAX_WIDTH = 8  # WMAX of conv1d_cpu.c
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p


class _Args(KernelArgs):
    """``cc_args`` of conv1d_cpu.c, field for field."""
    _fields_ = [(k, _I64) for k in ("b", "c", "l", "w", "silu")] + [
        ("x", _PTR), ("sx", _I64 * 3), ("weight", _PTR), ("sweight", _I64 * 2), ("bias", _PTR), ("sbias", _I64),
        ("out", _PTR), ("sout", _I64 * 3), ("dout", _PTR), ("sdout", _I64 * 3), ("dx", _PTR), ("sdx", _I64 * 3),
        ("dweight", _PTR), ("dbias", _PTR),
    ]


def _args(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, silu: bool) -> tuple[_Args, list]:
    """The kernel's arguments with the inputs filled in, and the fp32 tensors they point to (keep them alive)."""
    weight = weight.float().t().contiguous().t()                         # (C, W), channels at stride 1
    bias = bias.float() if bias is not None else None                    # (C,)
    (b, c, l), w = x.shape, weight.shape[1]
    a = _Args(b=b, c=c, l=l, w=w, silu=int(silu))
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        a.set(name, t)
    return a, [x, weight, bias]


def _run(entry: str, a: _Args) -> None:
    if run(entry, a, a.b * -(-a.c // VL)):  # a task per (batch element, block of VL channels)
        raise RuntimeError(f"causal_conv1d (cpu backend): the kernel refused width {a.w}")


def _forward(x, weight, bias, silu) -> torch.Tensor:
    """out (B, C, L) in x's layout."""
    a, keep = _args(x, weight, bias, silu)
    out = torch.empty_like(x)                                            # (B, C, L), x's layout
    a.set("out", out)
    _run("cc_forward", a)
    return out


class CausalConv1dCpuFn(torch.autograd.Function):
    """The C kernel's forward and backward; saves only the inputs."""

    @staticmethod
    def forward(ctx, x, weight, bias, silu):
        ctx.save_for_backward(x, weight, bias)
        ctx.silu = silu
        return _forward(x, weight, bias, silu)

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        x, weight, bias = ctx.saved_tensors
        B, C, _ = x.shape
        W = weight.shape[1]
        a, keep = _args(x, weight, bias, ctx.silu)
        dout = dout.float()                                              # (B, C, L)
        if dout.stride(1) != 1 and x.stride(1) == 1:                     # whole vectors: channels at stride 1
            dout = torch.empty_like(x).copy_(dout)
        dx = torch.empty_like(x)                                         # (B, C, L), x's layout
        dweight, dbias = x.new_empty((B, W, C)), x.new_empty((B, C))     # per batch element
        for name, t in (("dout", dout), ("dx", dx), ("dweight", dweight), ("dbias", dbias)):
            a.set(name, t)
        _run("cc_backward", a)
        need = ctx.needs_input_grad
        return (dx if need[0] else None,
                dweight.sum(0).t().contiguous().to(weight.dtype) if need[1] else None,        # (C, W)
                dbias.sum(0).to(bias.dtype) if bias is not None and need[2] else None,  # (C,)
                None)


def causal_conv1d_cpu_checked(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                              activation: str | None, fallback: Callable) -> torch.Tensor:
    """The C kernel on checked inputs (:func:`~localmamba.ops.causal_conv1d` with ``backend="cpu"``);
    ``fallback`` (the torch path) runs what the kernel does not: non-fp32 x, widths above 8, empty tensors.

    Raises ValueError for tensors on another device, RuntimeError naming what to install when the kernel
    cannot be built, or under a torch.jit trace (which would not see the kernel's writes)."""
    tensors = [t for t in (x, weight, bias) if t is not None]
    check_runnable(tensors)
    if x.dtype != torch.float32 or not 1 <= weight.shape[1] <= MAX_WIDTH or x.numel() == 0:
        return fallback(x, weight, bias, activation)
    silu = activation is not None
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return CausalConv1dCpuFn.apply(x, weight, bias, silu)
    return _forward(x, weight, bias, silu)                               # nothing saved
