"""Selective scan, the S6 recurrence of Mamba, with one signature and several backends.

Per batch element and channel ``c`` (state size ``n``, group ``g(c) = c // (d // G)``)::

    delta_t = softplus(delta_t + delta_bias)          # each step optional
    h_t     = exp(delta_t * A) * h_{t-1} + delta_t * B_t[g(c)] * u_t     # h: (n,), fp32
    y_t     = sum_n C_t[g(c)] * h_t
    out_t   = (y_t + D * u_t) * silu(z_t)             # D and z optional

The signature and the semantics are those of mamba-ssm's ``selective_scan_fn`` (without
``return_last_state``), so the layers never care which backend runs:

- ``"ref"``: :func:`~localmamba.ops.scan_ref.selective_scan_ref` (``scan_ref.py``), a plain loop over the sequence with autograd through it.
  Slow; it is the oracle every other backend is tested against.
- ``"torch"``: :class:`~localmamba.ops.scan_torch.SelectiveScanTorchFn` (``scan_torch.py``), pure PyTorch (CPU, CUDA, anything). The forward runs the
  recurrence in chunks of ``T`` steps with in-place ops and keeps only the state at chunk boundaries;
  the backward recomputes one chunk at a time and walks the adjoint recurrence backwards.
  Activations never hold the (b, d, l, n) tensor of every state, only (b, d, l/T, n).
- ``"cpu"``: :func:`~localmamba.ops.scan_cpu.selective_scan_cpu`, a fused C kernel for CPU tensors,
  forward and backward, compiled on first use with the system C compiler (``scan_cpu.py``, ``scan_cpu.c``).
  fp64 inputs run the "torch" backend (the kernel computes in fp32).
- ``"cuda"``: mamba-ssm's fused kernel (``pip install mamba-ssm --no-build-isolation``; ``scan_cuda.py``).
- ``"triton"``: this package's Triton kernel (CUDA tensors; ``scan_triton.py``).
- ``"auto"``: for CUDA tensors ``"triton"`` when triton imports (the fastest for the models), else ``"cuda"``
  when mamba-ssm imports, else ``"torch"``; for CPU tensors ``"cpu"`` when its kernel builds, else ``"torch"``
  (each fallback warns once; the rules of every op are in :mod:`localmamba.ops._dispatch`).

Shapes (mamba-ssm's notation, ``r`` = real)::

    u, delta, z: r(b d l)    A: r(d n)    B, C: r(b n l) or r(b g n l)    D, delta_bias: r(d)

All arithmetic is in fp32 (fp64 for fp64 inputs) whatever the input dtype or autocast state; the
output has ``u.dtype``.
"""
from __future__ import annotations

import torch

from ._checks import check_scan_inputs, compute_dtype
from ._dispatch import BACKENDS, Op, backend_error
from ._triton import triton_available
from .scan_cpu import selective_scan_cpu_checked
from .scan_cuda import selective_scan_cuda
from .scan_ref import selective_scan_ref
from .scan_torch import selective_scan_torch
from .scan_triton import selective_scan_triton

__all__ = ["selective_scan", "available_backends", "reads_time_major", "SCAN", "BACKENDS"]


def _scan_cpu(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """The C kernel, except for fp64 CPU inputs (gradcheck), which keep their precision with "torch"."""
    if u.device.type == "cpu" and compute_dtype(u, delta, A, B, C, D, z, delta_bias) == torch.float64:
        return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return selective_scan_cpu_checked(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


SCAN = Op("selective_scan",
          impls={"ref": selective_scan_ref, "torch": selective_scan_torch, "cpu": _scan_cpu,
                 "cuda": selective_scan_cuda, "triton": selective_scan_triton},
          auto={"cuda": ("triton", "cuda", "torch"), "cpu": ("cpu", "torch"), None: ("torch",)})


def available_backends() -> list[str]:
    """Backends of the selective scan usable on this machine: always 'ref' and 'torch'; 'cpu' when its C kernel
    builds, 'cuda' with a GPU and mamba-ssm, 'triton' with a GPU and triton."""
    names = ["ref", "torch"]
    if backend_error("cpu") is None:
        names.append("cpu")
    if torch.cuda.is_available() and backend_error("cuda") is None:
        names.append("cuda")
    if triton_available():
        names.append("triton")
    return names


def reads_time_major(backend: str, device: torch.device | str) -> bool:
    """Whether ``backend`` on ``device`` is fastest on time-major inputs ((b, d, l) views of storage with
    the channels innermost): the torch scan and the Triton kernel are; mamba-ssm's kernel ("cuda") wants
    (b, d, l) contiguous and the "ref" loop does not care. The C kernel ("cpu") reads any layout with the
    channels innermost as whole vectors. Layers pick their layout with it."""
    return SCAN.resolve(backend, device) in ("torch", "cpu", "triton")


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   backend="auto", out_dtype=None):
    """Selective scan with mamba-ssm's ``selective_scan_fn`` signature; returns out: (b, d, l) in u.dtype.

    backend: one of :data:`BACKENDS` (see the module docstring); "auto" picks the fastest that runs here.
    out_dtype: the output's dtype instead of u's. LocalVMamba scans its 16-bit (autocast) activations with an
    fp32 output, as the original's ``.float()`` calls do: the inputs are exact in 16 bits, and the scan computes
    in fp32 anyway, so only the output's precision matters. The Triton kernel writes that dtype directly (the
    16-bit inputs are read as they are: half the bytes); the other backends cast their output.
    """
    name = SCAN.resolve(backend, u.device)
    check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    if out_dtype is None or out_dtype == u.dtype:
        return SCAN.impls[name](u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    if name == "triton":
        return selective_scan_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_dtype=out_dtype)
    return SCAN.impls[name](u, delta, A, B, C, D, z, delta_bias, delta_softplus).to(out_dtype)
