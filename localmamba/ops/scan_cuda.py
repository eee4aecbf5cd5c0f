"""The selective scan's "cuda" backend: mamba-ssm's fused kernel, imported lazily (it pulls in triton and CUDA)."""
from __future__ import annotations

import torch

from ._dispatch import register_backend

__all__ = ["selective_scan_cuda", "mamba_ssm_error", "CUDA_INSTALL_HINT"]

CUDA_INSTALL_HINT = (
    "pip install mamba-ssm --no-build-isolation  (or the project extra: pip install -e .[cuda]); "
    "it needs a CUDA toolkit matching your PyTorch"
)

_mamba_fn = None          # mamba-ssm's selective_scan_fn once imported
_mamba_import_error = None  # the ImportError, once an import failed


def _mamba_selective_scan_fn():
    """mamba-ssm's ``selective_scan_fn``, or None; imported lazily (it pulls in triton and CUDA)."""
    global _mamba_fn, _mamba_import_error
    if _mamba_fn is None and _mamba_import_error is None:
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
            _mamba_fn = selective_scan_fn
        except ImportError as e:  # not installed, or built against another torch/CUDA
            _mamba_import_error = e
    return _mamba_fn


def mamba_ssm_error() -> str | None:
    """Why mamba-ssm's kernel cannot be used, or None."""
    return None if _mamba_selective_scan_fn() is not None else f"mamba-ssm does not import ({_mamba_import_error})"


register_backend("cuda", lambda: mamba_ssm_error(), CUDA_INSTALL_HINT, what="mamba-ssm's selective scan")


def selective_scan_cuda(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """mamba-ssm's kernel; casts to the dtypes it accepts (delta, z like u; A, D, delta_bias fp32)."""
    fn = _mamba_selective_scan_fn()
    if fn is None:
        raise RuntimeError(f"backend='cuda' needs mamba-ssm, which failed to import "
                           f"({_mamba_import_error}). Install it with: {CUDA_INSTALL_HINT}")
    if u.device.type != "cuda":
        raise ValueError(f"backend='cuda' needs CUDA tensors, got u on {u.device}; "
                         f"use backend='torch' (or 'auto') on other devices")
    f32 = torch.float32
    delta = delta.to(u.dtype)
    z = z.to(u.dtype) if z is not None else None
    B = B if B.dtype in (f32, u.dtype) else B.to(u.dtype)
    C = C if C.dtype in (f32, u.dtype) else C.to(u.dtype)
    D = D.to(f32) if D is not None else None
    delta_bias = delta_bias.to(f32) if delta_bias is not None else None
    if delta_bias is not None and not delta_softplus:
        # mamba-ssm's backward pads the last chunk with delta = 0 + delta_bias instead of 0, so that
        # exp(delta*A) != 1 past the end and the gradients are wrong when l is not a multiple of the chunk
        # (state-spaces/mamba#368; measured here on an H200, mamba-ssm 2.3.2.post1): add the bias ourselves
        delta, delta_bias = (delta.to(f32) + delta_bias[:, None]).to(u.dtype), None  # (B, D, L)
    return fn(u, delta, A.to(f32), B, C, D, z, delta_bias, delta_softplus)
