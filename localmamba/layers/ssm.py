"""The selective-scan part shared by both mixers: K directions in one kernel call.

Each direction k has its own x_proj (input-dependent dt, B, C), dt_proj, A and D. Stacking the K
directions along channels (u: (B, K*D, L)) with B and C grouped per direction ((B, K, N, L)) turns
K scans into one call of the selective-scan op, as VMamba does; per-direction projections are one
einsum each instead of K matmuls.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..ops import selective_scan
from .recompute import RecomputeScope

__all__ = ["DirectionalSSM", "dt_bias_init"]


def dt_bias_init(shape, dt_min: float = 1e-3, dt_max: float = 0.1, floor: float = 1e-4) -> torch.Tensor:
    """Bias whose softplus is log-uniform in [dt_min, dt_max] (Mamba's initialisation)."""
    dt = torch.exp(torch.rand(shape) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))  # inverse of softplus


def _block_diagonal(W: torch.Tensor) -> torch.Tensor:
    """K linear maps W (K, out, in) as one (K*in, K*out) matrix, block k = W[k].T on the diagonal: one
    broadcast product with the identity (``torch.block_diag`` is K + 2 kernels and autograd nodes, and
    the mixers build two of these a layer at every step)."""
    K = W.shape[0]
    eye = torch.eye(K, device=W.device, dtype=W.dtype)  # (K, K)
    return (W.transpose(1, 2).unsqueeze(2) * eye[:, None, :, None]).flatten(2).flatten(0, 1)  # (K*in, K*out)


def _block_projection(rows: torch.Tensor) -> bool:
    """Whether the x and delta projections run as one GEMM each against the block-diagonal weights: on GPUs
    (see :meth:`DirectionalSSM.forward`; the FLOP counter, :func:`localmamba.models.flops.traceable`, turns it
    off to count the per-direction math)."""
    return rows.is_cuda


def _per_direction(a: torch.Tensor, W: torch.Tensor, block: bool) -> torch.Tensor:
    """K linear maps, one per direction: a (P, Q, K, in), W (K, out, in) -> (P, Q, K, out), rows as a's.
    ``block``: one GEMM against the block-diagonal stack, which reads channels-innermost rows as the plain
    (P*Q, K*in) matrix they are and writes (P, Q, K*out) in place, where the einsum copies a to (K, P*Q, in)
    first and its weight gradient is a strided bmm (LocalVMamba-T stage 1: 4.9 ms a layer at batch 128);
    K times the einsum's FLOPs, which GPUs afford and CPUs do not (LocalVim-T delta projection at batch 2,
    2 threads: 0.27-0.42 ms as einsum against 0.55-1.02), and a FLOP count must see the per-direction math."""
    if not block:
        return torch.einsum("pqki,koi->pqko", a, W)  # (P, Q, K, out)
    P, Q, K, _ = a.shape
    return (a.reshape(P * Q, -1) @ _block_diagonal(W)).view(P, Q, K, W.shape[1])  # (P, Q, K, out)


class DirectionalSSM(nn.Module):
    """Parameters and forward of K stacked selective scans over d_inner channels each.

    x_proj_weight: (K, R + 2N, D)   dt_projs_weight: (K, D, R)   dt_projs_bias: (K, D)
    A_logs: (K*D, N)                Ds: (K*D,)
    """

    def __init__(self, d_inner: int, num_directions: int, d_state: int = 16, dt_rank: int = 1,
                 dt_init: str = "mamba"):
        super().__init__()
        K, D, N, R = num_directions, d_inner, d_state, dt_rank
        self.d_inner, self.num_directions, self.d_state, self.dt_rank = D, K, N, R
        bound = D ** -0.5  # nn.Linear's default initialisation
        self.x_proj_weight = nn.Parameter(torch.empty(K, R + 2 * N, D).uniform_(-bound, bound))
        std = R ** -0.5
        self.dt_projs_weight = nn.Parameter(torch.empty(K, D, R).uniform_(-std, std))
        self.dt_projs_bias = nn.Parameter(dt_bias_init((K, D)))
        if dt_init == "vim":
            # The original LocalVim re-initialises every nn.Linear after construction (ViT-style
            # trunc-normal weights, zero biases), dt_proj and x_proj included: reproduce it.
            nn.init.trunc_normal_(self.x_proj_weight, std=0.02)
            nn.init.trunc_normal_(self.dt_projs_weight, std=0.02)
            nn.init.zeros_(self.dt_projs_bias)
        elif dt_init != "mamba":
            raise ValueError(f"dt_init must be 'mamba' or 'vim', got {dt_init!r}")
        A = torch.arange(1, N + 1, dtype=torch.float32).repeat(K * D, 1)  # (K*D, N)
        self.A_logs = nn.Parameter(torch.log(A))
        self.Ds = nn.Parameter(torch.ones(K * D))
        self.A_logs._no_weight_decay = True
        self.Ds._no_weight_decay = True

    def forward(self, xs: torch.Tensor, z: torch.Tensor | None = None, backend: str = "auto",
                out_dtype: torch.dtype | None = None, recompute: RecomputeScope | None = None) -> torch.Tensor:
        """xs (B, K, D, L) scanned inputs, z (B, K, D, L) optional gate -> y (B, K, D, L), in ``out_dtype``
        (default xs's; see :func:`~localmamba.ops.selective_scan`).

        xs may also be a view of channels-innermost storage, (B, L, K, D) (the GPU mixers' layout) or
        (L, B, K, D) (the CPU mixers'): the projections then run in that row order, delta comes out in
        xs's layout, and the selective scan reads every (B, K*D, L) input without a transpose. Given an open
        ``recompute`` scope, delta is remade from the x projection's output in the backward instead of kept.
        """
        B, K, D, L = xs.shape
        N, R = self.d_state, self.dt_rank
        batch_outer = xs.stride(0) >= xs.stride(3)
        rows = xs.permute(0, 3, 1, 2) if batch_outer else xs.permute(3, 0, 1, 2)  # (B, L, K, D) or (L, B, K, D)
        block = _block_projection(rows)
        x_dbl = _per_direction(rows, self.x_proj_weight, block)  # (P, Q, K, R+2N), rows as xs's
        # B and C in xs's dtype (under autocast bf16, the projection's own dtype: no copy), cast as one
        # projection so that the scan reads them as views in its layout: a step's N values contiguous
        x_dbl = x_dbl.to(xs.dtype)
        dts, Bs, Cs = torch.split(x_dbl, [R, N, N], dim=3)
        back = (0, 2, 3, 1) if batch_outer else (1, 2, 3, 0)  # (P, Q, K, *) -> (B, K, *, L)
        shape, stride, dtype = xs.shape, xs.stride(), xs.dtype  # not xs itself: a recipe must not keep it alive

        def delta(dts: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
            # with ``block`` the delta projection's (P, Q, K*D) output is already xs's channels-innermost layout;
            # the einsum's comes out direction-major and costs a copy into it
            d = _per_direction(dts, W, block).permute(*back)  # (B, K, D, L)
            if d.stride() != stride or d.dtype != dtype:  # delta in xs's dtype and layout: the scan reads both alike
                d = torch.empty_strided(shape, stride, dtype=dtype, device=d.device).copy_(d)
            return d
        delta_in = dts.detach()
        dts = delta(dts, self.dt_projs_weight)  # (B, K, D, L)
        if recompute is not None:  # K*D channels made from R, whose x_dbl the scan keeps (B and C are views of it)
            recompute.add(dts, lambda: delta(delta_in, self.dt_projs_weight.detach()))
        y = selective_scan(
            xs.reshape(B, K * D, L),  # (B, K*D, L)
            dts.reshape(B, K * D, L),  # (B, K*D, L)
            -torch.exp(self.A_logs.float()),  # (K*D, N)
            Bs.permute(*back),  # (B, K, N, L), a group each: a view of x_dbl
            Cs.permute(*back),  # (B, K, N, L)
            D=self.Ds.float(),
            z=None if z is None else z.reshape(B, K * D, L),
            delta_bias=self.dt_projs_bias.reshape(-1).float(),
            delta_softplus=True,
            backend=backend,
            out_dtype=out_dtype,
        )  # (B, K*D, L)
        return y.view(B, K, D, L)
