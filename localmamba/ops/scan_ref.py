"""The selective scan's "ref" backend: mamba-ssm's ``selective_scan_ref``, the oracle every backend is tested
against."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_scan_inputs, compute_dtype, no_autocast

__all__ = ["selective_scan_ref"]


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False):
    """The oracle: mamba-ssm's ``selective_scan_ref`` (real A, variable B/C), a loop over seqlen.

    Autograd goes through the loop, so its backward stores every state; use it for tests only.
    Returns ``out: (b, d, l)`` in u.dtype, and ``last_state: (b, d, n)`` (fp32) if asked.
    """
    b, d, l, n = check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    dtype_in = u.dtype
    ct = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    with no_autocast(u):
        u = u.to(ct)
        delta = delta.to(ct)
        if delta_bias is not None:
            delta = delta + delta_bias[:, None].to(ct)                  # (b, d, l)
        if delta_softplus:
            delta = F.softplus(delta)
        A = A.to(ct)
        # one (b, d, n, l) slice per channel: channel c reads group c // (d // g)
        B = B.to(ct).unsqueeze(1) if B.dim() == 3 else B.to(ct)        # (b, g, n, l)
        C = C.to(ct).unsqueeze(1) if C.dim() == 3 else C.to(ct)
        B = B.repeat_interleave(d // B.shape[1], dim=1)                 # (b, d, n, l)
        C = C.repeat_interleave(d // C.shape[1], dim=1)                 # (b, d, n, l)
        deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))      # (b, d, l, n)
        deltaB_u = torch.einsum("bdl,bdnl,bdl->bdln", delta, B, u)      # (b, d, l, n)
        x = u.new_zeros((b, d, n))                                      # (b, d, n)
        ys = []
        for i in range(l):
            x = deltaA[:, :, i] * x + deltaB_u[:, :, i]                 # (b, d, n)
            ys.append(torch.einsum("bdn,bdn->bd", x, C[:, :, :, i]))    # (b, d)
        y = torch.stack(ys, dim=2)                                      # (b, d, l)
        out = y if D is None else y + u * D[:, None].to(ct)
        if z is not None:
            out = out * F.silu(z.to(ct))
        out = out.to(dtype_in)
    return (out, x) if return_last_state else out
