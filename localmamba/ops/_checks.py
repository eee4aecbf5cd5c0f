"""Input checks shared by the backends of each op (one place, one message per mistake), and the dtype rules
of the selective scan."""
from __future__ import annotations

import contextlib

import torch

__all__ = ["check_scan_inputs", "check_conv_inputs", "check_merge_inputs", "compute_dtype", "no_autocast",
           "ACTIVATIONS"]


def no_autocast(x: torch.Tensor):
    """Disable autocast for x's device, so that einsums/matmuls inside the op stay in fp32."""
    try:
        return torch.autocast(device_type=x.device.type, enabled=False)
    except RuntimeError:  # a device type without autocast support
        return contextlib.nullcontext()


def compute_dtype(*tensors) -> torch.dtype:
    """fp32, or fp64 when any input is fp64 (so that gradcheck can run in double precision)."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def check_scan_inputs(u, delta, A, B, C, D, z, delta_bias):
    """Validate shapes (mamba-ssm conventions); return (b, d, l, n). Raise ValueError on mismatch."""
    def shape(t):
        return tuple(t.shape)

    if u.dim() != 3:
        raise ValueError(f"u must be (batch, dim, seqlen), got shape {shape(u)}")
    b, d, l = u.shape
    if shape(delta) != (b, d, l):
        raise ValueError(f"delta must have the shape of u {shape(u)}, got {shape(delta)}")
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"A must be (dim, dstate) = ({d}, n), got {shape(A)}")
    if A.is_complex():
        raise ValueError("complex A is not supported; A must be real (dim, dstate)")
    n = A.shape[1]
    for name, M in (("B", B), ("C", C)):
        if M.dim() == 3:
            if shape(M) != (b, n, l):
                raise ValueError(f"{name} must be (batch, dstate, seqlen) = {(b, n, l)} "
                                 f"or (batch, groups, dstate, seqlen), got {shape(M)}")
        elif M.dim() == 4:
            g = M.shape[1]
            if M.shape[0] != b or M.shape[2:] != (n, l) or g < 1:
                raise ValueError(f"{name} must be (batch, groups, dstate, seqlen) = {(b, 'g', n, l)}, "
                                 f"got {shape(M)}")
            if d % g != 0:
                raise ValueError(f"{name} has {g} groups, which does not divide dim={d}")
        else:
            raise ValueError(f"{name} must be (batch, dstate, seqlen) or (batch, groups, dstate, seqlen), "
                             f"got shape {shape(M)} (input-independent B/C are not supported)")
    if D is not None and shape(D) != (d,):
        raise ValueError(f"D must be (dim,) = ({d},), got {shape(D)}")
    if delta_bias is not None and shape(delta_bias) != (d,):
        raise ValueError(f"delta_bias must be (dim,) = ({d},), got {shape(delta_bias)}")
    if z is not None and shape(z) != (b, d, l):
        raise ValueError(f"z must have the shape of u {shape(u)}, got {shape(z)}")
    devices = {t.device for t in (u, delta, A, B, C, D, z, delta_bias) if t is not None}
    if len(devices) > 1:
        raise ValueError(f"all inputs must be on one device, got {sorted(map(str, devices))}")
    return b, d, l, n


ACTIVATIONS = (None, "silu", "swish")


def check_conv_inputs(x, weight, bias, activation):
    if x.dim() != 3:
        raise ValueError(f"x must be (batch, dim, seqlen), got shape {tuple(x.shape)}")
    if weight.dim() != 2 or weight.shape[0] != x.shape[1]:
        raise ValueError(f"weight must be (dim, width) = ({x.shape[1]}, W), got {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (x.shape[1],):
        raise ValueError(f"bias must be (dim,) = ({x.shape[1]},), got {tuple(bias.shape)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def check_merge_inputs(rows, index, s):
    if rows.dim() != 3:
        raise ValueError(f"rows must be (batch, rows, channels), got shape {tuple(rows.shape)}")
    if index.dim() != 2 or index.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"index must be an integer (directions, tokens) tensor, got {index.dtype} "
                         f"{tuple(index.shape)}")
    if index.device != rows.device:
        raise ValueError(f"index is on {index.device}, rows on {rows.device}")
    B, _, C = rows.shape
    T = index.shape[1]
    if s is not None and tuple(s.shape) != (B, T, C):
        raise ValueError(f"s must be (batch, tokens, channels) = ({B}, {T}, {C}), got {tuple(s.shape)}")
