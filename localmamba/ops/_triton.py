"""triton, imported once for every Triton backend (scan, conv, merge), or None where it does not import."""
from __future__ import annotations

import torch

from ._dispatch import register_backend

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch
    triton = tl = None

__all__ = ["triton", "tl", "triton_available", "TRITON_INSTALL_HINT"]

TRITON_INSTALL_HINT = "pip install triton (it ships with the CUDA builds of torch)"


def triton_error() -> str | None:
    """Why the "triton" backend cannot run, or None."""
    return None if triton is not None else "triton does not import"


def triton_available() -> bool:
    """Whether the Triton kernels can run here: triton imports and a CUDA GPU is present."""
    return triton_error() is None and torch.cuda.is_available()


register_backend("triton", lambda: triton_error(), TRITON_INSTALL_HINT, what="this package's Triton kernels")
