"""The channel merge's "triton" backend: the means and the weighted sum as two autograd Functions around the
gate (CUDA tensors); see :mod:`localmamba.ops.merge`."""
from __future__ import annotations

import weakref
from typing import Callable

import torch
from torch.autograd.function import once_differentiable

from ._checks import check_merge_inputs
from ._triton import TRITON_INSTALL_HINT, tl, triton

__all__ = ["channel_merge_triton", "Gate"]

Gate = Callable[[torch.Tensor], torch.Tensor]


# index tensors already checked (id -> (weakref, version)): the check syncs with the GPU, once per tensor
_CHECKED: dict = {}


def _check_rows_index(index: torch.Tensor, n_rows: int) -> None:
    """index reads rows in [0, n_rows) and never one row twice, which the kernels rely on (a repeated row's
    gradients would overwrite each other): checked once per index tensor (the layers pass cached ones)."""
    seen = _CHECKED.get(id(index))
    if seen is not None and seen[0]() is index and seen[1] == (index._version, n_rows):
        return
    flat = index.flatten()
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= n_rows):
        raise ValueError(f"index must lie in [0, {n_rows}) (the rows), got [{int(flat.min())}, {int(flat.max())}]")
    if torch.unique(flat).numel() != flat.numel():
        raise ValueError("index repeats a row: each row may belong to one (direction, token) only")
    if len(_CHECKED) > 256:
        _CHECKED.clear()
    _CHECKED[id(index)] = (weakref.ref(index), (index._version, n_rows))


if triton is not None:

    @triton.jit
    def _offsets(pid_t, T, C, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
        """A program's tokens and channels, their masks, and the tile's mask (BLOCK_T, BLOCK_C)."""
        offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
        offs_c = tl.arange(0, BLOCK_C)
        mask_t = offs_t < T
        mask_c = offs_c < C
        return offs_t, offs_c, mask_t, mask_c, mask_t[:, None] & mask_c[None, :]

    @triton.jit
    def _tile(ptr, offs_t, offs_c, m2, s_b, s_t):
        """A (BLOCK_T, BLOCK_C) tile of a (B, T, C) tensor with C contiguous, as fp32 (0 outside m2)."""
        return tl.load(ptr + s_b + offs_t[:, None] * s_t + offs_c[None, :], mask=m2, other=0.0).to(tl.float32)

    @triton.jit
    def _direction_rows(rows_ptr, idx_ptr, k, T, offs_t, offs_c, mask_t, m2, s_b, s_r):
        """Direction k's tokens offs_t: their rows' indices (BLOCK_T,) and the rows, a (BLOCK_T, BLOCK_C)
        fp32 tile."""
        idx = tl.load(idx_ptr + k * T + offs_t, mask=mask_t, other=0).to(tl.int64)
        return idx, _tile(rows_ptr, idx, offs_c, m2, s_b, s_r)

    @triton.jit
    def _stats_kernel(rows_ptr, idx_ptr, s_ptr, part_ptr, mu_ptr, rstd_ptr, T, C, K, n_tb, eps,
                      sr_b, sr_r, ss_b, ss_t,
                      HAS_S: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
        """Per direction and token: mean and 1/std over channels (kept for the backward); per program: the
        sum over its tokens of the normalised rows, (B, token blocks, K, C) partial sums of m."""
        pid_b = tl.program_id(0).to(tl.int64)
        pid_t = tl.program_id(1)
        offs_t, offs_c, mask_t, mask_c, m2 = _offsets(pid_t, T, C, BLOCK_T, BLOCK_C)  # (BLOCK_T,), (BLOCK_C,), ...
        if HAS_S:
            s = _tile(s_ptr, offs_t, offs_c, m2, pid_b * ss_b, ss_t)  # (BLOCK_T, BLOCK_C)
        for k in range(K):
            idx, x = _direction_rows(rows_ptr, idx_ptr, k, T, offs_t, offs_c, mask_t, m2, pid_b * sr_b, sr_r)
            if HAS_S:
                x = x * s
            mu = tl.sum(x, axis=1) / C  # (BLOCK_T,)
            xc = tl.where(m2, x - mu[:, None], 0.0)
            rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / C + eps)  # (BLOCK_T,)
            tl.store(part_ptr + ((pid_b * n_tb + pid_t) * K + k) * C + offs_c, tl.sum(xc * rstd[:, None], axis=0),
                     mask=mask_c)
            st = (pid_b * K + k) * T + offs_t
            tl.store(mu_ptr + st, mu, mask=mask_t)
            tl.store(rstd_ptr + st, rstd, mask=mask_t)

    @triton.jit
    def _sum_kernel(rows_ptr, idx_ptr, s_ptr, g_ptr, out_ptr, T, C, K, sr_b, sr_r, ss_b, ss_t, so_b, so_t,
                    HAS_S: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
        """out_t = s_t * sum_k g_k * rows[index[k, t]]."""
        pid_b = tl.program_id(0).to(tl.int64)
        offs_t, offs_c, mask_t, mask_c, m2 = _offsets(tl.program_id(1), T, C, BLOCK_T, BLOCK_C)
        acc = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
        for k in range(K):
            idx, r = _direction_rows(rows_ptr, idx_ptr, k, T, offs_t, offs_c, mask_t, m2, pid_b * sr_b, sr_r)
            gk = tl.load(g_ptr + (pid_b * K + k) * C + offs_c, mask=mask_c, other=0.0).to(tl.float32)  # (BLOCK_C,)
            acc += r * gk[None, :]
        if HAS_S:
            acc = acc * _tile(s_ptr, offs_t, offs_c, m2, pid_b * ss_b, ss_t)
        tl.store(out_ptr + pid_b * so_b + offs_t[:, None] * so_t + offs_c[None, :], acc.to(out_ptr.dtype.element_ty),
                 mask=m2)

    @triton.jit
    def _dsum_kernel(rows_ptr, idx_ptr, s_ptr, g_ptr, dout_ptr, drows_ptr, ds_ptr, dgp_ptr, T, C, K, n_tb,
                     sr_b, sr_r, ss_b, ss_t, sd_b, sd_t, sdr_b, sdr_r, sds_b, sds_t,
                     HAS_S: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
        """Backward of the weighted sum: d rows[index[k, t]] = g_k s_t dout_t, ds_t = dout_t sum_k g_k
        rows[index[k, t]], and per program the partial sums over its tokens of dg_k = sum_t x_kt dout_t."""
        pid_b = tl.program_id(0).to(tl.int64)
        pid_t = tl.program_id(1)
        offs_t, offs_c, mask_t, mask_c, m2 = _offsets(pid_t, T, C, BLOCK_T, BLOCK_C)  # (BLOCK_T,), (BLOCK_C,), ...
        do = _tile(dout_ptr, offs_t, offs_c, m2, pid_b * sd_b, sd_t)  # (BLOCK_T, BLOCK_C)
        dx = do
        if HAS_S:
            dx = do * _tile(s_ptr, offs_t, offs_c, m2, pid_b * ss_b, ss_t)  # dL/dx_kt / g_k
            gr = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)  # sum_k g_k rows_kt
        for k in range(K):
            idx, r = _direction_rows(rows_ptr, idx_ptr, k, T, offs_t, offs_c, mask_t, m2, pid_b * sr_b, sr_r)
            gk = tl.load(g_ptr + (pid_b * K + k) * C + offs_c, mask=mask_c, other=0.0).to(tl.float32)
            tl.store(dgp_ptr + ((pid_b * n_tb + pid_t) * K + k) * C + offs_c, tl.sum(r * dx, axis=0), mask=mask_c)
            tl.store(drows_ptr + pid_b * sdr_b + idx[:, None] * sdr_r + offs_c[None, :],
                     (dx * gk[None, :]).to(drows_ptr.dtype.element_ty), mask=m2)
            if HAS_S:
                gr += r * gk[None, :]
        if HAS_S:
            tl.store(ds_ptr + pid_b * sds_b + offs_t[:, None] * sds_t + offs_c[None, :],
                     (gr * do).to(ds_ptr.dtype.element_ty), mask=m2)

    @triton.jit
    def _dstats_kernel(rows_ptr, idx_ptr, s_ptr, dm_ptr, mu_ptr, rstd_ptr, drows_ptr, ds_ptr, T, C, K,
                       sr_b, sr_r, ss_b, ss_t, sdr_b, sdr_r, sds_b, sds_t,
                       HAS_S: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
        """Backward of m_k = mean_t LayerNorm(x_kt): LayerNorm's backward of dm_k / T at every token, dx_kt,
        written to the rows the forward read (times s_t); ds_t = sum_k dx_kt rows[index[k, t]]."""
        pid_b = tl.program_id(0).to(tl.int64)
        offs_t, offs_c, mask_t, mask_c, m2 = _offsets(tl.program_id(1), T, C, BLOCK_T, BLOCK_C)
        if HAS_S:
            s = _tile(s_ptr, offs_t, offs_c, m2, pid_b * ss_b, ss_t)
            ds = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
        for k in range(K):
            idx, r = _direction_rows(rows_ptr, idx_ptr, k, T, offs_t, offs_c, mask_t, m2, pid_b * sr_b, sr_r)
            x = r
            if HAS_S:
                x = r * s
            st = (pid_b * K + k) * T + offs_t
            mu = tl.load(mu_ptr + st, mask=mask_t, other=0.0)
            rstd = tl.load(rstd_ptr + st, mask=mask_t, other=0.0)
            xhat = tl.where(m2, (x - mu[:, None]) * rstd[:, None], 0.0)
            dmk = tl.load(dm_ptr + (pid_b * K + k) * C + offs_c, mask=mask_c, other=0.0).to(tl.float32) / T
            proj = tl.sum(xhat * dmk[None, :], axis=1) / C  # (BLOCK_T,)
            dx = rstd[:, None] * (dmk[None, :] - tl.sum(dmk, axis=0) / C - xhat * proj[:, None])
            if HAS_S:
                ds += dx * r
                dx = dx * s
            tl.store(drows_ptr + pid_b * sdr_b + idx[:, None] * sdr_r + offs_c[None, :],
                     dx.to(drows_ptr.dtype.element_ty), mask=m2)
        if HAS_S:
            tl.store(ds_ptr + pid_b * sds_b + offs_t[:, None] * sds_t + offs_c[None, :], ds.to(ds_ptr.dtype.element_ty),
                     mask=m2)


def _tiles(T: int, C: int) -> tuple[int, int, int]:
    """(BLOCK_T, BLOCK_C, token blocks): all channels of a token in one tile (the LayerNorm's reductions),
    about 2048 elements a tile."""
    BLOCK_C = triton.next_power_of_2(C)
    BLOCK_T = max(1, min(16, 2048 // BLOCK_C))
    return BLOCK_T, BLOCK_C, triton.cdiv(T, BLOCK_T)


_WARPS = 4


def _s_args(s, rows) -> tuple:
    """s and its batch and token strides; rows and zeros (never read) without s."""
    return (s, s.stride(0), s.stride(1)) if s is not None else (rows, 0, 0)


def _geometry(rows, index) -> tuple:
    """(B, C, K, T) and the launch's (BLOCK_T, BLOCK_C, token blocks)."""
    B, _, C = rows.shape
    K, T = index.shape
    return (B, C, K, T, *_tiles(T, C))


def _grads_of_inputs(rows, index, s) -> tuple:
    """A backward's outputs drows, ds and the kernel arguments of s and ds: drows zero where no (direction,
    token) reads a row (padding), else left empty."""
    new = torch.empty_like if index.numel() == rows.shape[1] else torch.zeros_like
    drows = new(rows, memory_format=torch.contiguous_format)
    ds = torch.empty_like(s, memory_format=torch.contiguous_format) if s is not None else None
    return drows, ds, _s_args(s, rows), _s_args(ds, drows)


class MergeStatsTritonFn(torch.autograd.Function):
    """(rows, index, s) -> m (B, K, C): each direction's mean over tokens of LayerNorm(x_kt), no affine."""

    @staticmethod
    def forward(ctx, rows, index, s, eps):
        B, C, K, T, BLOCK_T, BLOCK_C, n_tb = _geometry(rows, index)
        f32 = dict(device=rows.device, dtype=torch.float32)
        part = torch.empty((B, n_tb, K, C), **f32)  # per-program partial sums of m
        mu, rstd = torch.empty((B, K, T), **f32), torch.empty((B, K, T), **f32)
        s_args = _s_args(s, rows)
        _stats_kernel[(B, n_tb)](rows, index, s_args[0], part, mu, rstd, T, C, K, n_tb, eps, rows.stride(0),
                                 rows.stride(1), *s_args[1:], HAS_S=s is not None, BLOCK_T=BLOCK_T, BLOCK_C=BLOCK_C,
                                 num_warps=_WARPS)
        ctx.save_for_backward(rows, index, s, mu, rstd)
        m = part.sum(1) / T  # (B, K, C), fp32 as LayerNorm's output under autocast; else in x's dtype, as LayerNorm's
        if not torch.is_autocast_enabled(rows.device.type):
            m = m.to(rows.dtype if s is None else torch.promote_types(rows.dtype, s.dtype))
        return m

    @staticmethod
    @once_differentiable
    def backward(ctx, dm):
        rows, index, s, mu, rstd = ctx.saved_tensors
        B, C, K, T, BLOCK_T, BLOCK_C, n_tb = _geometry(rows, index)
        drows, ds, s_args, ds_args = _grads_of_inputs(rows, index, s)
        _dstats_kernel[(B, n_tb)](rows, index, s_args[0], dm.contiguous(), mu, rstd, drows, ds_args[0], T, C, K,
                                  rows.stride(0), rows.stride(1), *s_args[1:], drows.stride(0), drows.stride(1),
                                  *ds_args[1:], HAS_S=s is not None, BLOCK_T=BLOCK_T, BLOCK_C=BLOCK_C,
                                  num_warps=_WARPS)
        return drows, None, ds, None


class WeightedSumTritonFn(torch.autograd.Function):
    """(rows, index, s, g) -> out (B, T, C) = sum_k g_k * x_kt."""

    @staticmethod
    def forward(ctx, rows, index, s, g):
        B, C, K, T, BLOCK_T, BLOCK_C, n_tb = _geometry(rows, index)
        g = g.contiguous()  # (B, K, C)
        dtype = torch.promote_types(torch.promote_types(rows.dtype, g.dtype), rows.dtype if s is None else s.dtype)
        out = torch.empty((B, T, C), device=rows.device, dtype=dtype)
        s_args = _s_args(s, rows)
        _sum_kernel[(B, n_tb)](rows, index, s_args[0], g, out, T, C, K, rows.stride(0), rows.stride(1), *s_args[1:],
                               out.stride(0), out.stride(1), HAS_S=s is not None, BLOCK_T=BLOCK_T, BLOCK_C=BLOCK_C,
                               num_warps=_WARPS)
        ctx.save_for_backward(rows, index, s, g)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        rows, index, s, g = ctx.saved_tensors
        B, C, K, T, BLOCK_T, BLOCK_C, n_tb = _geometry(rows, index)
        drows, ds, s_args, ds_args = _grads_of_inputs(rows, index, s)
        dgp = torch.empty((B, n_tb, K, C), device=rows.device, dtype=torch.float32)  # partial sums of dg
        _dsum_kernel[(B, n_tb)](rows, index, s_args[0], g, dout, drows, ds_args[0], dgp, T, C, K, n_tb,
                                rows.stride(0), rows.stride(1), *s_args[1:], dout.stride(0), dout.stride(1),
                                drows.stride(0), drows.stride(1), *ds_args[1:], HAS_S=s is not None,
                                BLOCK_T=BLOCK_T, BLOCK_C=BLOCK_C, num_warps=_WARPS)
        return drows, None, ds, dgp.sum(1).to(g.dtype)


def channel_merge_triton(rows: torch.Tensor, index: torch.Tensor, gate: Gate, s: torch.Tensor | None = None,
                         eps: float = 1e-5) -> torch.Tensor:
    """Triton backend (CUDA tensors); same signature and semantics as :func:`channel_merge_ref`. Two autograd
    Functions around the gate, which autograd differentiates as any module: the means, and the weighted sum."""
    if triton is None:
        raise RuntimeError(f"the triton channel merge needs triton: {TRITON_INSTALL_HINT}")
    check_merge_inputs(rows, index, s)
    if rows.stride(-1) != 1 or (s is not None and s.stride(-1) != 1):
        raise ValueError("the triton channel merge needs rows and s with contiguous channels (stride 1 in the "
                         "last dim)")
    if not torch.compiler.is_compiling():  # compile_model's eager warm-up forward checks the plans' indices
        _check_rows_index(index, rows.shape[1])
    m = MergeStatsTritonFn.apply(rows, index, s, float(eps))  # (B, K, C)
    return WeightedSumTritonFn.apply(rows, index, s, gate(m))  # (B, T, C)
