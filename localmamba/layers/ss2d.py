"""LocalVMamba's token mixer: VMamba's SS2D with LocalMamba's scan directions."""
from __future__ import annotations

import contextlib
import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..scan import ORIGINAL_CANDIDATES, scan_plan
from .layout import Layout
from .merge import DirectionMerge
from .recompute import RecomputeScope, wanted
from .ssm import DirectionalSSM

__all__ = ["SS2D"]


class SS2D(nn.Module):
    """2-D selective scan over K directions, channels-last in and out: (B, H, W, C) -> (B, H, W, C).

    in_proj -> x, z halves; x: depthwise conv2d + SiLU -> scan in all K directions (zero-padded to
    the longest) -> one selective scan over K*D channels -> reverse -> channel attention per
    direction -> sum (or search mix) -> LayerNorm -> * silu(z) -> out_proj. ``directions=None``: a
    search layer over the 8 original candidates; ``search=True``: a search layer over ``directions``.
    """

    #: remake the scanned sequences and delta in the backward rather than keep them (None: on CUDA tensors;
    #: see :mod:`localmamba.layers.recompute` and ``set_activation_recompute`` of the models)
    recompute_activations: bool | None = None

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
        """x (B, H, W, C) -> (B, H, W, C); the scan runs in the :class:`Layout` for x's device and ``backend``
        (which reaches the scan and the merge), with an fp32 output as the original's ``.float()`` scan: its
        inputs stay in the conv's dtype (bf16 under autocast, exact, half the bytes of an fp32 copy)."""
        B, H, W, _ = x.shape
        D = self.d_inner
        x, z = self.in_proj(x).chunk(2, dim=-1)  # (B, H, W, D) each
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2)))  # (B, D, H, W)
        plan = scan_plan(self.directions, H, W)
        layout = Layout.for_device(x.device, backend)
        recompute = RecomputeScope() if wanted(x, self.recompute_activations) else None
        with recompute or contextlib.nullcontext():
            tokens = x.flatten(2).transpose(1, 2)  # (B, H*W, D)
            xs = layout.scan(tokens, plan)  # (B, K, D, L)
            if recompute is not None:  # the scan and the x projection keep these K scanned copies of x
                src = tokens.detach()
                recompute.add(xs, lambda: layout.scan(src, plan))
            y = self.ssm(xs, backend=backend, out_dtype=torch.float32, recompute=recompute)  # (B, K, D, L)
        if layout.interleaved:  # the merge reads the scan's rows in place, reversing them itself
            rows = layout.rows(y).flatten(1, 2)  # (B, L*K, D), a view
            y = self.merge.merge_rows(rows, plan.reverse_rows(y.device, layout.scan_layout), backend=backend)
        else:
            y = self.merge(layout.reverse(y, plan))  # (B, H*W, D)
        y = self.out_norm(y).view(B, H, W, D).to(z.dtype)  # (B, H, W, D)
        return self.dropout(self.out_proj(y * F.silu(z)))  # (B, H, W, d_model)

    def extra_repr(self) -> str:
        return f"directions={'search' if self.search else list(self.directions)}"
