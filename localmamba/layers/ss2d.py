"""LocalVMamba's token mixer: VMamba's SS2D with LocalMamba's scan directions."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..scan import ORIGINAL_CANDIDATES, local_reverse, local_scan, multi_reverse, multi_scan, scan_plan
from .merge import DirectionMerge
from .ssm import DirectionalSSM, interleaved_layout

__all__ = ["SS2D"]


class SS2D(nn.Module):
    """2-D selective scan over K directions, channels-last in and out: (B, H, W, C) -> (B, H, W, C).

    in_proj -> x, z halves; x: depthwise conv2d + SiLU -> scan in all K directions (zero-padded to
    the longest) -> one selective scan over K*D channels -> reverse -> channel attention per
    direction -> sum (or search mix) -> LayerNorm -> * silu(z) -> out_proj. ``directions=None``: a
    search layer over the 8 original candidates; ``search=True``: a search layer over ``directions``.
    """

    def __init__(self, d_model: int, directions: Sequence[str] | None = None, d_state: int = 16,
                 ssm_ratio: float = 2.0, dt_rank: int | str = "auto", d_conv: int = 3, conv_bias: bool = True,
                 dropout: float = 0.0, search: bool = False):
        super().__init__()
        self.search = directions is None or search
        self.directions = tuple(ORIGINAL_CANDIDATES if directions is None else directions)
        scan_plan(self.directions, 1, 1)  # validate names early
        K = len(self.directions)
        D = self.d_inner = int(ssm_ratio * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.in_proj = nn.Linear(d_model, 2 * D, bias=False)
        self.conv2d = nn.Conv2d(D, D, d_conv, padding=(d_conv - 1) // 2, groups=D, bias=conv_bias)
        self.ssm = DirectionalSSM(D, K, d_state=d_state, dt_rank=self.dt_rank, dt_init="mamba")
        self.merge = DirectionMerge(D, K, search=self.search)
        self.out_norm = nn.LayerNorm(D)
        self.out_proj = nn.Linear(D, d_model, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, backend: str = "auto") -> torch.Tensor:
        B, H, W, _ = x.shape
        D = self.d_inner
        x, z = self.in_proj(x).chunk(2, dim=-1)  # (B, H, W, D) each
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2)))  # (B, D, H, W)
        plan = scan_plan(self.directions, H, W)
        x = x.flatten(2).transpose(1, 2)  # (B, H*W, D)
        if interleaved_layout(x, backend):
            # the GPU kernels' layout: directions interleaved per position, channels-last (B, L, K*D)
            xs = multi_scan(x, plan, layout="blkc").float().permute(0, 2, 3, 1)  # (B, K, D, L), view of (B, L, K, D)
            back, layout = (0, 3, 1, 2), "blkc"  # (B, K, D, L) -> (B, L, K, D)
        else:
            xs = multi_scan(x, plan)  # (B, K, L, D)
            # fp32 for the scan, in one copy: on CPU into time-major (L, B, K, D), the torch scan's own layout
            fp32 = dict(dtype=torch.float32, memory_format=torch.contiguous_format, copy=True)
            if xs.device.type == "cpu":
                xs = xs.permute(2, 0, 1, 3).to(**fp32).permute(1, 2, 3, 0)  # (B, K, D, L), a view of (L, B, K, D)
            else:
                xs = xs.transpose(-1, -2).to(**fp32)  # (B, K, D, L), contiguous for mamba-ssm
            back, layout = (0, 1, 3, 2), "bklc"  # (B, K, D, L) -> (B, K, L, D)
        y = self.ssm(xs, backend=backend)  # (B, K, D, L), in xs's layout
        if layout == "blkc":  # the merge reads the scan's rows in place, reversing them itself
            rows = y.permute(*back).flatten(1, 2)  # (B, L*K, D), a view
            y = self.merge.merge_rows(rows, plan.reverse_rows(y.device, layout))  # (B, H*W, D)
        else:
            y = self.merge(multi_reverse(y.permute(*back), plan, layout=layout))  # (B, H*W, D)
        y = self.out_norm(y).view(B, H, W, D).to(z.dtype)  # (B, H, W, D)
        return self.dropout(self.out_proj(y * F.silu(z)))  # (B, H, W, d_model)

    def forward_loop(self, x: torch.Tensor, backend: str = "auto") -> torch.Tensor:
        """The original's formulation, same parameters: each direction scanned, padded and reversed in a
        Python loop around the one selective-scan call. Oracle and benchmark baseline for :meth:`forward`."""
        B, H, W, _ = x.shape
        D = self.d_inner
        x, z = self.in_proj(x).chunk(2, dim=-1)  # (B, H, W, D) each
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2)))  # (B, D, H, W)
        xs = [local_scan(x, d) for d in self.directions]  # K x (B, D, L_k)
        lengths = [t.shape[-1] for t in xs]
        L = max(lengths)
        xs = torch.stack([F.pad(t, (0, L - t.shape[-1])) for t in xs], 1).float()  # (B, K, D, L)
        y = self.ssm(xs, backend=backend)  # (B, K, D, L)
        ys = [local_reverse(y[:, k, :, :n], d, H, W).transpose(1, 2)
              for k, (d, n) in enumerate(zip(self.directions, lengths))]  # K x (B, H*W, D)
        y = self.out_norm(self.merge(torch.stack(ys, 1))).view(B, H, W, D).to(z.dtype)  # (B, H, W, D)
        return self.dropout(self.out_proj(y * F.silu(z)))

    def extra_repr(self) -> str:
        return f"directions={'search' if self.search else list(self.directions)}"
