"""The original's per-direction formulations of the two mixers, with the mixers' own parameters: a Python loop
over directions, each with its own scan, conv, projections, selective-scan call and reverse. The oracles the
tests compare the mixers' one production forward with, and the baseline the benchmarks time
(:func:`loop_forward` binds them to a module)."""
from __future__ import annotations

import types

import torch
import torch.nn.functional as F

from ..ops import selective_scan
from ..scan import local_reverse, local_scan
from .mamba import MultiDirectionMamba
from .ss2d import SS2D

__all__ = ["mamba_loop", "ss2d_loop", "loop_forward"]


def mamba_loop(m: MultiDirectionMamba, x: torch.Tensor, grid_size: tuple[int, int],
               cls_position: int | None = None, backend: str = "auto") -> torch.Tensor:
    """The original LocalVim mixer: per direction its own scan, conv1d, projections, selective-scan call
    and reverse, with ``m``'s parameters. The oracle for :meth:`MultiDirectionMamba.forward`."""
    D, N, R = m.d_inner, m.ssm.d_state, m.dt_rank
    xz = m.in_proj(x).transpose(1, 2)  # (B, 2D, T)
    c = cls_position
    if c is not None:
        cls, xz = xz[..., c:c + 1], torch.cat([xz[..., :c], xz[..., c + 1:]], -1)  # (B, 2D, 1), (B, 2D, H*W)
    outs = []
    for k, direction in enumerate(m.directions):
        s = local_scan(xz, direction, *grid_size)  # (B, 2D, L_k)
        if c is not None:
            s = torch.cat([s[..., :c], cls, s[..., c:]], -1)
        xk, zk = s.chunk(2, dim=1)  # (B, D, L_k) each
        L = xk.shape[-1]
        ch = slice(k * D, (k + 1) * D)
        xk = F.silu(F.conv1d(xk, m.conv1d.weight[ch], m.conv1d.bias[ch], padding=m.d_conv - 1,
                             groups=D)[..., :L])  # (B, D, L_k)
        dt, Bk, Ck = torch.split(F.linear(xk.transpose(1, 2), m.ssm.x_proj_weight[k]), [R, N, N], dim=-1)
        dt = F.linear(dt, m.ssm.dt_projs_weight[k]).transpose(1, 2)  # (B, D, L_k)
        y = selective_scan(xk, dt, -torch.exp(m.ssm.A_logs[ch].float()), Bk.transpose(1, 2).contiguous(),
                           Ck.transpose(1, 2).contiguous(), D=m.ssm.Ds[ch].float(), z=zk,
                           delta_bias=m.ssm.dt_projs_bias[k].float(), delta_softplus=True,
                           backend=backend)  # (B, D, L_k)
        if c is not None:
            yc, y = y[..., c:c + 1], torch.cat([y[..., :c], y[..., c + 1:]], -1)
        y = local_reverse(y, direction, *grid_size)  # (B, D, H*W)
        if c is not None:
            y = torch.cat([y[..., :c], yc, y[..., c:]], -1)
        outs.append(y.transpose(1, 2))  # (B, T, D)
    return m.out_proj(m.merge(torch.stack(outs, 1)))


def ss2d_loop(m: SS2D, x: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """The original SS2D: each direction scanned, padded and reversed in a Python loop around the one
    selective-scan call, with ``m``'s parameters. The oracle for :meth:`SS2D.forward`."""
    B, H, W, _ = x.shape
    D = m.d_inner
    x, z = m.in_proj(x).chunk(2, dim=-1)  # (B, H, W, D) each
    x = F.silu(m.conv2d(x.permute(0, 3, 1, 2)))  # (B, D, H, W)
    xs = [local_scan(x, d) for d in m.directions]  # K x (B, D, L_k)
    lengths = [t.shape[-1] for t in xs]
    L = max(lengths)
    xs = torch.stack([F.pad(t, (0, L - t.shape[-1])) for t in xs], 1).float()  # (B, K, D, L)
    y = m.ssm(xs, backend=backend)  # (B, K, D, L)
    ys = [local_reverse(y[:, k, :, :n], d, H, W).transpose(1, 2)
          for k, (d, n) in enumerate(zip(m.directions, lengths))]  # K x (B, H*W, D)
    y = m.out_norm(m.merge(torch.stack(ys, 1))).view(B, H, W, D).to(z.dtype)  # (B, H, W, D)
    return m.dropout(m.out_proj(y * F.silu(z)))


def loop_forward(m: torch.nn.Module) -> bool:
    """Make ``m`` (a MultiDirectionMamba or SS2D) run its per-direction loop as its forward (benchmarks);
    returns False for other modules."""
    loops = {MultiDirectionMamba: mamba_loop, SS2D: ss2d_loop}
    fn = loops.get(type(m))
    if fn is None:
        return False
    m.forward = types.MethodType(fn, m)
    return True
