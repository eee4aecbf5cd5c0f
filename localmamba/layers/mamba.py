"""LocalVim's token mixer: one Mamba layer that reads the tokens in several scan directions."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import causal_conv1d, selective_scan
from ..scan import ORIGINAL_CANDIDATES, local_reverse, local_scan, multi_reverse, multi_scan, scan_plan
from .merge import DirectionMerge
from .ssm import DirectionalSSM, interleaved_layout

__all__ = ["MultiDirectionMamba"]


class MultiDirectionMamba(nn.Module):
    """Mamba mixer over K scan directions of an HxW token grid (the original ``MultiMamba``).

    in_proj -> scan x and z in every direction (one gather, sequences zero-padded to one length)
    -> per-direction causal depthwise conv1d + SiLU -> K selective scans in one call, gated by
    silu(z) -> reverse every direction to token order -> channel attention per direction -> sum
    -> out_proj. ``directions=None`` builds the search supernet over the 8 original candidates;
    ``search=True`` makes ``directions`` the candidates of a supernet layer instead.
    With ``cls_position`` set, the class token is kept out of the 2-D scan and inserted at that
    index of every scanned sequence (the middle-class-token model).
    """

    def __init__(self, d_model: int, directions: Sequence[str] | None = None, d_state: int = 16,
                 d_conv: int = 4, expand: int = 2, dt_rank: int | str = "auto", dt_init: str = "vim",
                 search: bool = False):
        super().__init__()
        self.search = directions is None or search
        self.directions = tuple(ORIGINAL_CANDIDATES if directions is None else directions)
        scan_plan(self.directions, 1, 1)  # validates the names now rather than at the first forward
        K = len(self.directions)
        self.d_model, self.d_inner, self.d_conv = d_model, int(expand * d_model), d_conv
        D = self.d_inner
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.in_proj = nn.Linear(d_model, 2 * D, bias=False)
        # K depthwise causal convolutions as one grouped conv over K*D channels
        self.conv1d = nn.Conv1d(K * D, K * D, d_conv, groups=K * D, padding=d_conv - 1)
        self.ssm = DirectionalSSM(D, K, d_state=d_state, dt_rank=self.dt_rank, dt_init=dt_init)
        self.merge = DirectionMerge(D, K, search=self.search)
        self.out_proj = nn.Linear(D, d_model, bias=False)

    def forward(self, x: torch.Tensor, grid_size: tuple[int, int], cls_position: int | None = None,
                backend: str = "auto") -> torch.Tensor:
        """x (B, T, d_model), T = H*W (+1 with a class token) -> (B, T, d_model)."""
        B, T, _ = x.shape
        K, D = len(self.directions), self.d_inner
        plan = scan_plan(self.directions, *grid_size, cls_position=cls_position)
        interleaved = interleaved_layout(x, backend)
        if interleaved or x.device.type == "cpu":
            return self._forward_channels_last(x, plan, backend, interleaved)
        xz = multi_scan(self.in_proj(x), plan)  # (B, K, L, 2D)
        L = plan.L
        xz = xz.transpose(-1, -2)  # (B, K, 2D, L)
        xs = xz[:, :, :D].reshape(B, K * D, L)  # (B, K*D, L)
        z = xz[:, :, D:]  # (B, K, D, L)
        xs = F.silu(self.conv1d(xs)[..., :L]).view(B, K, D, L)  # causal: keep the first L outputs
        y = self.ssm(xs, z=z, backend=backend)  # (B, K, D, L), already gated by silu(z)
        y = multi_reverse(y.transpose(-1, -2), plan)  # (B, K, T, D)
        return self.out_proj(self.merge(y))  # (B, T, d_model)

    def _forward_channels_last(self, x: torch.Tensor, plan, backend: str, interleaved: bool) -> torch.Tensor:
        """:meth:`forward` with channels innermost throughout (same math), for the scans that read
        time-major inputs fastest.

        The scan inputs live in channels-innermost storage seen as (B, K*D, L) views, so the selective
        scan neither transposes its inputs nor copies its output: (L, B, K, D) on CPU, the torch scan's
        own layout, or with ``interleaved`` the K sequences interleaved per position, (B, L, K, D), on GPUs,
        where each step of the kernel then reads and writes its K*D channels contiguously. The causal
        depthwise conv (:func:`~localmamba.ops.causal_conv1d`: a Triton kernel on GPUs) reads that layout
        too. The gate silu(z) is applied after the reverse, in token order: the reverse is a gather, so
        y*silu(z) gathered equals gathered y times silu of the unscanned z, computed once for all K
        directions instead of gathered K times. On GPUs the reverse, the gate and the merge are one op
        (:meth:`DirectionMerge.merge_rows`) that reads the scan's rows in place.
        """
        D = self.d_inner
        xz = self.in_proj(x)  # (B, T, 2D)
        if interleaved:
            xs = multi_scan(xz[..., :D], plan, layout="blkc")  # (B, L, K, D)
            to_bkdl, back, layout = (0, 2, 3, 1), (0, 3, 1, 2), "blkc"  # back: (B, K, D, L) -> (B, L, K, D)
        else:
            xs = multi_scan(xz[..., :D], plan).permute(2, 0, 1, 3).contiguous()  # (L, B, K, D)
            to_bkdl, back, layout = (1, 2, 3, 0), (0, 1, 3, 2), "bklc"  # back: -> (B, K, L, D)
        xs = xs.permute(*to_bkdl).flatten(1, 2)  # (B, K*D, L), a view of channels-innermost storage
        xs = causal_conv1d(xs, self.conv1d.weight.flatten(1), self.conv1d.bias, activation="silu")  # xs's layout
        y = self.ssm(xs.unflatten(1, (len(self.directions), D)), backend=backend)  # (B, K, D, L), in xs's layout
        s = F.silu(xz[..., D:])  # (B, T, D)
        if interleaved:  # the merge reads the scan's rows in place, reversing them itself
            rows = y.permute(*back).flatten(1, 2)  # (B, L*K, D), a view
            return self.out_proj(self.merge.merge_rows(rows, plan.reverse_rows(x.device, layout), s=s))
        y = multi_reverse(y.permute(*back), plan, layout=layout) * s.unsqueeze(1)  # (B, K, T, D)
        return self.out_proj(self.merge(y))  # (B, T, d_model)

    def forward_loop(self, x: torch.Tensor, grid_size: tuple[int, int], cls_position: int | None = None,
                     backend: str = "auto") -> torch.Tensor:
        """The original's formulation, same parameters: a Python loop over directions, each with its own
        scan, conv1d, projections, selective-scan call and reverse. The oracle for :meth:`forward`, and the
        baseline that the benchmarks compare it with."""
        D, N, R = self.d_inner, self.ssm.d_state, self.dt_rank
        xz = self.in_proj(x).transpose(1, 2)  # (B, 2D, T)
        c = cls_position
        if c is not None:
            cls, xz = xz[..., c:c + 1], torch.cat([xz[..., :c], xz[..., c + 1:]], -1)  # (B, 2D, 1), (B, 2D, H*W)
        outs = []
        for k, direction in enumerate(self.directions):
            s = local_scan(xz, direction, *grid_size)  # (B, 2D, L_k)
            if c is not None:
                s = torch.cat([s[..., :c], cls, s[..., c:]], -1)
            xk, zk = s.chunk(2, dim=1)  # (B, D, L_k) each
            L = xk.shape[-1]
            ch = slice(k * D, (k + 1) * D)
            xk = F.silu(F.conv1d(xk, self.conv1d.weight[ch], self.conv1d.bias[ch], padding=self.d_conv - 1,
                                 groups=D)[..., :L])  # (B, D, L_k)
            dt, Bk, Ck = torch.split(F.linear(xk.transpose(1, 2), self.ssm.x_proj_weight[k]), [R, N, N], dim=-1)
            dt = F.linear(dt, self.ssm.dt_projs_weight[k]).transpose(1, 2)  # (B, D, L_k)
            y = selective_scan(xk, dt, -torch.exp(self.ssm.A_logs[ch].float()), Bk.transpose(1, 2).contiguous(),
                               Ck.transpose(1, 2).contiguous(), D=self.ssm.Ds[ch].float(), z=zk,
                               delta_bias=self.ssm.dt_projs_bias[k].float(), delta_softplus=True,
                               backend=backend)  # (B, D, L_k)
            if c is not None:
                yc, y = y[..., c:c + 1], torch.cat([y[..., :c], y[..., c + 1:]], -1)
            y = local_reverse(y, direction, *grid_size)  # (B, D, H*W)
            if c is not None:
                y = torch.cat([y[..., :c], yc, y[..., c:]], -1)
            outs.append(y.transpose(1, 2))  # (B, T, D)
        return self.out_proj(self.merge(torch.stack(outs, 1)))

    def extra_repr(self) -> str:
        return f"directions={'search' if self.search else list(self.directions)}"
