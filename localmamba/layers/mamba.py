"""LocalVim's token mixer: one Mamba layer that reads the tokens in several scan directions."""
from __future__ import annotations

import contextlib
import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import causal_conv1d
from ..scan import ORIGINAL_CANDIDATES, scan_plan
from .layout import Layout
from .merge import DirectionMerge
from .recompute import RecomputeScope, wanted
from .ssm import DirectionalSSM

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

    #: remake the gathered sequences and delta in the backward rather than keep them (None: on CUDA tensors;
    #: see :mod:`localmamba.layers.recompute` and ``set_activation_recompute`` of the models)
    recompute_activations: bool | None = None

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
        """x (B, T, d_model), T = H*W (+1 with a class token) -> (B, T, d_model).

        Channels innermost throughout: the scan inputs live in the storage of a :class:`Layout` (chosen for
        x's device and ``backend``) seen as (B, K*D, L) views, so the selective scan neither transposes its
        inputs nor copies its output, and the causal depthwise conv (:func:`~localmamba.ops.causal_conv1d`)
        reads that layout too. The gate silu(z) is applied after the reverse, in token order: the reverse is
        a gather, so y*silu(z) gathered equals gathered y times silu of the unscanned z, computed once for
        all K directions instead of gathered K times. With the interleaved layout (GPUs) the reverse, the
        gate and the merge are one op (:meth:`DirectionMerge.merge_rows`) that reads the scan's rows in place.
        ``backend`` reaches every op: the conv, the scan and the merge.
        """
        K, D = len(self.directions), self.d_inner
        plan = scan_plan(self.directions, *grid_size, cls_position=cls_position)
        layout = Layout.for_device(x.device, backend)
        xz = self.in_proj(x)  # (B, T, 2D)
        recompute = RecomputeScope() if wanted(xz, self.recompute_activations) else None
        with recompute or contextlib.nullcontext():
            tokens = xz[..., :D]  # (B, T, D)
            xs = layout.scan(tokens, plan).flatten(1, 2)  # (B, K*D, L), a view of the layout's storage
            if recompute is not None:  # the conv keeps its input, K gathered copies of xz's first half (kept anyway)
                src = tokens.detach()
                recompute.add(xs, lambda: layout.scan(src, plan).flatten(1, 2))
            xs = causal_conv1d(xs, self.conv1d.weight.flatten(1), self.conv1d.bias, activation="silu",
                               backend=backend)  # (B, K*D, L), xs's layout
            y = self.ssm(xs.unflatten(1, (K, D)), backend=backend, recompute=recompute)  # (B, K, D, L), xs's layout
        s = F.silu(xz[..., D:])  # (B, T, D)
        if layout.interleaved:  # the merge reads the scan's rows in place, reversing them itself
            rows = layout.rows(y).flatten(1, 2)  # (B, L*K, D), a view
            return self.out_proj(self.merge.merge_rows(rows, plan.reverse_rows(x.device, layout.scan_layout), s=s,
                                                       backend=backend))
        y = layout.reverse(y, plan) * s.unsqueeze(1)  # (B, K, T, D)
        return self.out_proj(self.merge(y))  # (B, T, d_model)

    def extra_repr(self) -> str:
        return f"directions={'search' if self.search else list(self.directions)}"
