"""The "cpu" backend of the selective scan: a fused C kernel, forward and backward, for CPU tensors.

The torch backend runs the recurrence as many elementwise passes over (b, d, T, n) buffers; here one pass
per (batch, block of 8 channels) keeps the state in registers and does everything (bias, softplus, exp,
the recurrence, y, D, the silu gate) in it. The backward recomputes the states of a block into a small
per-thread scratch (h_{t-1} and exp(delta_t A) of every step: 2*l*n vectors of 8 floats), walks the
adjoint recurrence backwards, and writes every gradient; nothing but the inputs is saved for it.

- Source: ``scan_cpu.c`` next to this file, plain C, built with the other CPU kernels on first use and run
  on torch's OpenMP threads (:mod:`._cpu_kernels`: the compiler, the build cache, the threads).
- Arithmetic in fp32 for fp32/bf16/fp16 inputs (they are converted first); fp64 inputs are refused here,
  and :func:`~localmamba.ops.selective_scan` sends them to the "torch" backend. The output is in u.dtype,
  each gradient in its input's dtype. Any strides work; channels at stride 1 (the CPU mixers' time-major
  (l, b, d) storage, or (b, l, d)) are read as whole vectors, and the output takes u's layout.
- ``LOCALMAMBA_CPU_KERNEL=0`` turns the CPU kernels off ("auto" then uses "torch"), for A/B comparisons.
"""
from __future__ import annotations

import ctypes
import math

import torch
from torch.autograd.function import once_differentiable

from ._checks import check_scan_inputs
from ._cpu_kernels import (CPU_KERNEL_INSTALL_HINT, VL, KernelArgs, check_runnable, cpu_kernel_available,
                           cpu_kernel_error, run)

__all__ = ["selective_scan_cpu", "cpu_kernel_available", "cpu_kernel_error", "SelectiveScanCpuFn",
           "CPU_KERNEL_INSTALL_HINT", "selective_scan_cpu_checked"]

_I64, _PTR = ctypes.c_int64, ctypes.c_void_p


class _Args(KernelArgs):
    """``ss_args`` of scan_cpu.c, field for field."""
    _fields_ = [(k, _I64) for k in ("b", "d", "l", "n", "gB", "gC", "G", "S", "softplus")] + [
        ("u", _PTR), ("su", _I64 * 3), ("delta", _PTR), ("sdelta", _I64 * 3), ("A", _PTR), ("sA", _I64 * 2),
        ("B", _PTR), ("sB", _I64 * 4), ("C", _PTR), ("sC", _I64 * 4), ("D", _PTR), ("sD", _I64),
        ("z", _PTR), ("sz", _I64 * 3), ("bias", _PTR), ("sbias", _I64), ("out", _PTR), ("sout", _I64 * 3),
        ("dout", _PTR), ("sdout", _I64 * 3), ("du", _PTR), ("sdu", _I64 * 3), ("ddelta", _PTR),
        ("sddelta", _I64 * 3), ("dz", _PTR), ("sdz", _I64 * 3), ("dA", _PTR), ("dD", _PTR), ("dbias", _PTR),
        ("dB", _PTR), ("dC", _PTR),
    ]


def _run(entry: str, args: _Args, tasks: int) -> None:
    if run(entry, args, tasks):
        raise MemoryError("selective_scan (cpu backend): could not allocate the kernel's scratch")


def _prepare(u, delta, A, B, C, D, z, delta_bias, softplus):
    """fp32 inputs ((b, g, n, l) B and C) and the kernel's arguments with the inputs filled in."""
    f32 = [None if t is None else t.float() for t in (u, delta, A, B, C, D, z, delta_bias)]
    u, delta, A, B, C, D, z, delta_bias = f32
    B = B if B.dim() == 4 else B.unsqueeze(1)                            # (b, gB, n, l)
    C = C if C.dim() == 4 else C.unsqueeze(1)                            # (b, gC, n, l)
    b, d, l = u.shape
    gB, gC = B.shape[1], C.shape[1]
    a = _Args(b=b, d=d, l=l, n=A.shape[1], gB=gB, gC=gC, G=math.lcm(gB, gC), S=1, softplus=int(bool(softplus)))
    for name, t in zip(("u", "delta", "A", "B", "C", "D", "z", "bias"), (u, delta, A, B, C, D, z, delta_bias)):
        a.set(name, t)
    return (u, delta, A, B, C, D, z, delta_bias), a


def _forward(u, delta, A, B, C, D, z, delta_bias, softplus) -> torch.Tensor:
    """out (b, d, l) in u's layout and dtype."""
    f32, a = _prepare(u, delta, A, B, C, D, z, delta_bias, softplus)
    out = torch.empty_like(f32[0])                                       # (b, d, l), u's layout
    a.set("out", out)
    _run("ss_forward", a, a.b * a.G * -(-(a.d // a.G) // VL))
    return out.to(u.dtype)


def _splits(b: int, G: int, nblk: int) -> int:
    """Splits of each group's channel blocks in the backward: enough (batch, group, split) tasks to keep
    every thread busy (each split costs a partial (l, b, G, n) dB and dC to add up)."""
    target = 4 * torch.get_num_threads()
    return max(1, min(nblk, -(-target // (b * G)))) if b * G < target else 1


class SelectiveScanCpuFn(torch.autograd.Function):
    """The C kernel's forward and backward; saves only the inputs."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
        ctx.softplus = delta_softplus
        return _forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus)

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        inputs = ctx.saved_tensors
        (u, delta, A, B, C, D, z, delta_bias), a = _prepare(*inputs, ctx.softplus)
        b, d, l, n, G = a.b, a.d, a.l, a.n, a.G
        a.S = S = _splits(b, G, -(-(d // G) // VL))
        dout = dout.float()                                              # (b, d, l)
        du, ddelta = torch.empty_like(u), torch.empty_like(delta)        # (b, d, l), the inputs' layouts
        dz = torch.empty_like(z) if z is not None else None
        dA = u.new_empty((b, d, n))                                      # per batch element
        dD = u.new_empty((b, d)) if D is not None else None
        dbias = u.new_empty((b, d)) if delta_bias is not None else None
        dB, dC = u.new_empty((S, l, b, G, n)), u.new_empty((S, l, b, G, n))  # per split of a group
        for name, t in (("dout", dout), ("du", du), ("ddelta", ddelta), ("dz", dz), ("dA", dA), ("dD", dD),
                        ("dbias", dbias), ("dB", dB), ("dC", dC)):
            a.set(name, t)
        _run("ss_backward", a, b * G * S)

        def groups(x, g, squeeze):
            """(S, l, b, G, n) partials -> (b, g, n, l) (or (b, n, l)), a view of time-major storage."""
            x = x.sum(0) if S > 1 else x[0]                              # (l, b, G, n)
            x = x.view(l, b, g, G // g, n).sum(3) if g != G else x       # (l, b, g, n)
            x = x.movedim(0, -1)                                         # (b, g, n, l)
            return x.squeeze(1) if squeeze else x

        grads = (du, ddelta, dA.sum(0), groups(dB, B.shape[1], inputs[3].dim() == 3),
                 groups(dC, C.shape[1], inputs[4].dim() == 3), dD.sum(0) if dD is not None else None, dz,
                 dbias.sum(0) if dbias is not None else None)
        return tuple(g.to(x.dtype) if g is not None and need else None
                     for g, x, need in zip(grads, inputs, ctx.needs_input_grad)) + (None,)


def selective_scan_cpu(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The C kernel (CPU tensors, fp32/bf16/fp16); same signature and semantics as ``selective_scan_ref``.

    Raises RuntimeError naming what to install when the kernel cannot be built, ValueError for tensors on
    another device or fp64 inputs (which :func:`~localmamba.ops.selective_scan` sends to "torch")."""
    check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    return selective_scan_cpu_checked(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


def selective_scan_cpu_checked(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """:func:`selective_scan_cpu` on inputs whose shapes are checked (the entry point checks them once)."""
    tensors = [t for t in (u, delta, A, B, C, D, z, delta_bias) if t is not None]
    check_runnable(tensors)
    if any(t.dtype == torch.float64 for t in tensors):
        raise ValueError("backend='cpu' computes in fp32; fp64 inputs run with backend='torch' "
                         "(selective_scan(..., backend='cpu') sends them there)")
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return SelectiveScanCpuFn.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return _forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus)  # nothing saved
