"""The causal conv1d's "triton" backend: one kernel forward, one backward (CUDA tensors)."""
from __future__ import annotations

import torch

from ._checks import check_conv_inputs
from ._triton import TRITON_INSTALL_HINT, tl, triton

__all__ = ["causal_conv1d_triton", "CausalConv1dTritonFn"]


if triton is not None:

    @triton.jit
    def _conv_fwd_kernel(x_ptr, w_ptr, b_ptr, out_ptr, C, L, sx_b, sx_c, sx_l, so_b, so_c, so_l, sw_c, sw_w,
                         W: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
                         BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr):
        pid_b = tl.program_id(0).to(tl.int64)
        offs_l = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)  # (BLOCK_L,)
        offs_c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)  # (BLOCK_C,)
        mask_c = offs_c < C
        x_p = x_ptr + pid_b * sx_b + offs_c[None, :] * sx_c  # (1, BLOCK_C)
        acc = tl.zeros((BLOCK_L, BLOCK_C), dtype=tl.float32)
        if HAS_BIAS:
            acc += tl.load(b_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        for s in tl.static_range(W):
            t = offs_l - s
            m = ((t >= 0) & (t < L))[:, None] & mask_c[None, :]
            xv = tl.load(x_p + t[:, None] * sx_l, mask=m, other=0.0).to(tl.float32)  # (BLOCK_L, BLOCK_C)
            wv = tl.load(w_ptr + offs_c * sw_c + (W - 1 - s) * sw_w, mask=mask_c, other=0.0).to(tl.float32)
            acc += xv * wv[None, :]
        if SILU:
            acc = acc * tl.sigmoid(acc)
        m = (offs_l < L)[:, None] & mask_c[None, :]
        tl.store(out_ptr + pid_b * so_b + offs_l[:, None] * so_l + offs_c[None, :] * so_c,
                 acc.to(out_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _conv_bwd_kernel(x_ptr, w_ptr, b_ptr, dout_ptr, dx_ptr, dwp_ptr, dbp_ptr, C, L, n_lblocks,
                         sx_b, sx_c, sx_l, sd_b, sd_c, sd_l, sdx_b, sdx_c, sdx_l, sw_c, sw_w,
                         W: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
                         BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr):
        """dx_t = sum_s w[W-1-s] g_{t+s}, g = dout * act'(pre); per-program partial sums of dw and dbias.
        g at the W-1 rows after the tile is recomputed here (from x, cached) rather than stored."""
        pid_b = tl.program_id(0).to(tl.int64)
        pid_l = tl.program_id(1)
        offs_l = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
        offs_c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        x_p = x_ptr + pid_b * sx_b + offs_c[None, :] * sx_c
        d_p = dout_ptr + pid_b * sd_b + offs_c[None, :] * sd_c
        part = (pid_b * n_lblocks + pid_l) * C + offs_c  # (BLOCK_C,) this program's row of the partial sums
        if HAS_BIAS:
            bias = tl.load(b_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
        dx = tl.zeros((BLOCK_L, BLOCK_C), dtype=tl.float32)
        for s in tl.static_range(W):  # g at rows t + s
            tt = offs_l + s
            pre = tl.zeros((BLOCK_L, BLOCK_C), dtype=tl.float32)
            if HAS_BIAS:
                pre += bias[None, :]
            if SILU:
                for r in tl.static_range(W):
                    tr = tt - r
                    m = ((tr >= 0) & (tr < L))[:, None] & mask_c[None, :]
                    xv = tl.load(x_p + tr[:, None] * sx_l, mask=m, other=0.0).to(tl.float32)
                    wv = tl.load(w_ptr + offs_c * sw_c + (W - 1 - r) * sw_w, mask=mask_c, other=0.0).to(tl.float32)
                    pre += xv * wv[None, :]
            m = (tt < L)[:, None] & mask_c[None, :]
            g = tl.load(d_p + tt[:, None] * sd_l, mask=m, other=0.0).to(tl.float32)
            if SILU:
                sg = tl.sigmoid(pre)
                g = g * sg * (1.0 + pre * (1.0 - sg))
            ws = tl.load(w_ptr + offs_c * sw_c + (W - 1 - s) * sw_w, mask=mask_c, other=0.0).to(tl.float32)
            dx += g * ws[None, :]
            if s == 0:  # this tile's own rows: dw[W-1-r] += sum_t g_t x_{t-r}, dbias += sum_t g_t
                if HAS_BIAS:
                    tl.store(dbp_ptr + part, tl.sum(g, axis=0), mask=mask_c)
                for r in tl.static_range(W):
                    tr = offs_l - r
                    m = ((tr >= 0) & (tr < L))[:, None] & mask_c[None, :]
                    xv = tl.load(x_p + tr[:, None] * sx_l, mask=m, other=0.0).to(tl.float32)
                    tl.store(dwp_ptr + part * W + (W - 1 - r), tl.sum(g * xv, axis=0), mask=mask_c)
        m = (offs_l < L)[:, None] & mask_c[None, :]
        tl.store(dx_ptr + pid_b * sdx_b + offs_l[:, None] * sdx_l + offs_c[None, :] * sdx_c,
                 dx.to(dx_ptr.dtype.element_ty), mask=m)


    @triton.jit
    def _conv4_bwd_kernel(x_ptr, w_ptr, b_ptr, dout_ptr, dx_ptr, dwp_ptr, dbp_ptr, C, L, n_segs,
                          sx_b, sx_c, sx_l, sd_b, sd_c, sd_l, sdx_b, sdx_c, sdx_l, sw_c, sw_w,
                          HAS_BIAS: tl.constexpr, SILU: tl.constexpr, SEG: tl.constexpr, BLOCK_C: tl.constexpr):
        """The backward of a width-4 conv as one walk back in time over SEG rows (and the 3 rows after them,
        whose g the first rows' dx needs): x and dout are read once, where the tiled kernel reads each x row
        up to 20 times and recomputes each g up to 4 times. Windows in registers: x_t .. x_{t-3} and
        g_{t+1} .. g_{t+3}; the next row's x and dout are loaded a step ahead (the walk is latency-bound)."""
        pid_b = tl.program_id(0).to(tl.int64)
        pid_s = tl.program_id(1)
        offs_c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)  # (BLOCK_C,)
        mask_c = offs_c < C
        x_p = x_ptr + pid_b * sx_b + offs_c * sx_c
        d_p = dout_ptr + pid_b * sd_b + offs_c * sd_c
        dx_p = dx_ptr + pid_b * sdx_b + offs_c * sdx_c
        w3 = tl.load(w_ptr + offs_c * sw_c + 3 * sw_w, mask=mask_c, other=0.0).to(tl.float32)  # weighs x_t
        w2 = tl.load(w_ptr + offs_c * sw_c + 2 * sw_w, mask=mask_c, other=0.0).to(tl.float32)  # x_{t-1}
        w1 = tl.load(w_ptr + offs_c * sw_c + 1 * sw_w, mask=mask_c, other=0.0).to(tl.float32)  # x_{t-2}
        w0 = tl.load(w_ptr + offs_c * sw_c, mask=mask_c, other=0.0).to(tl.float32)  # x_{t-3}
        bias = tl.zeros((BLOCK_C,), dtype=tl.float32)
        if HAS_BIAS:
            bias = tl.load(b_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
        t0 = pid_s * SEG  # this program's rows: [t0, t0 + SEG) within [0, L)
        top = t0 + SEG + 2  # the walk starts 3 rows above them
        x0 = tl.load(x_p + top * sx_l, mask=mask_c & (top < L), other=0.0).to(tl.float32)
        x1 = tl.load(x_p + (top - 1) * sx_l, mask=mask_c & (top - 1 < L), other=0.0).to(tl.float32)
        x2 = tl.load(x_p + (top - 2) * sx_l, mask=mask_c & (top - 2 < L), other=0.0).to(tl.float32)
        x3 = tl.load(x_p + (top - 3) * sx_l, mask=mask_c & (top - 3 < L), other=0.0).to(tl.float32)
        do_n = tl.load(d_p + top * sd_l, mask=mask_c & (top < L), other=0.0).to(tl.float32)
        x_n = tl.load(x_p + (top - 4) * sx_l, mask=mask_c & (top - 4 < L) & (top - 4 >= 0), other=0.0).to(tl.float32)
        g1 = tl.zeros((BLOCK_C,), dtype=tl.float32)
        g2 = tl.zeros((BLOCK_C,), dtype=tl.float32)
        g3 = tl.zeros((BLOCK_C,), dtype=tl.float32)
        dw0 = tl.zeros((BLOCK_C,), dtype=tl.float32)
        dw1 = tl.zeros((BLOCK_C,), dtype=tl.float32)
        dw2 = tl.zeros((BLOCK_C,), dtype=tl.float32)
        dw3 = tl.zeros((BLOCK_C,), dtype=tl.float32)
        db = tl.zeros((BLOCK_C,), dtype=tl.float32)
        for i in range(SEG + 3):
            t = top - i
            do = do_n
            x4 = x_n
            do_n = tl.load(d_p + (t - 1) * sd_l, mask=mask_c & (t - 1 < L) & (t >= 1), other=0.0).to(tl.float32)
            x_n = tl.load(x_p + (t - 5) * sx_l, mask=mask_c & (t - 5 < L) & (t >= 5), other=0.0).to(tl.float32)
            g0 = do
            if SILU:
                pre = bias + w3 * x0 + w2 * x1 + w1 * x2 + w0 * x3
                sg = tl.sigmoid(pre)
                g0 = do * sg * (1.0 + pre * (1.0 - sg))
            own = (t < t0 + SEG) & (t < L)
            g_own = tl.where(own, g0, 0.0)
            dw3 += g_own * x0
            dw2 += g_own * x1
            dw1 += g_own * x2
            dw0 += g_own * x3
            db += g_own
            dx = w3 * g0 + w2 * g1 + w1 * g2 + w0 * g3
            tl.store(dx_p + t * sdx_l, dx.to(dx_ptr.dtype.element_ty), mask=mask_c & own)
            g3, g2, g1 = g2, g1, g0
            x0, x1, x2, x3 = x1, x2, x3, x4
        part = (pid_b * n_segs + pid_s) * C + offs_c  # (BLOCK_C,) this program's row of the partial sums
        tl.store(dwp_ptr + part * 4, dw0, mask=mask_c)
        tl.store(dwp_ptr + part * 4 + 1, dw1, mask=mask_c)
        tl.store(dwp_ptr + part * 4 + 2, dw2, mask=mask_c)
        tl.store(dwp_ptr + part * 4 + 3, dw3, mask=mask_c)
        if HAS_BIAS:
            tl.store(dbp_ptr + part, db, mask=mask_c)


_BLOCK_L, _BLOCK_C, _WARPS = 32, 64, 4
#: The width-4 backward walk: rows per program (the 3 rows after them are walked again by the next program) and
#: channels per program, one per thread.
_SEG, _SEG_C, _SEG_WARPS = 64, 128, 4


class CausalConv1dTritonFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, silu):
        B, C, L = x.shape
        W = weight.shape[1]
        out = torch.empty_like(x)  # x's layout
        grid = (B, triton.cdiv(L, _BLOCK_L), triton.cdiv(C, _BLOCK_C))
        _conv_fwd_kernel[grid](
            x, weight, bias if bias is not None else weight, out, C, L, *x.stride(), *out.stride(), *weight.stride(),
            W=W, HAS_BIAS=bias is not None, SILU=silu, BLOCK_L=_BLOCK_L, BLOCK_C=_BLOCK_C, num_warps=_WARPS)
        ctx.save_for_backward(x, weight, bias)
        ctx.silu = silu
        return out

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias = ctx.saved_tensors
        B, C, L = x.shape
        W = weight.shape[1]
        dx = torch.empty_like(x)
        args = (x, weight, bias if bias is not None else weight, dout, dx)
        strides = (*x.stride(), *dout.stride(), *dx.stride(), *weight.stride())
        if W == 4:  # the models' width: one walk back in time per program, each input read once
            n_p = triton.cdiv(L, _SEG)
            grid = (B, n_p, triton.cdiv(C, _SEG_C))
        else:
            n_p = triton.cdiv(L, _BLOCK_L)
            grid = (B, n_p, triton.cdiv(C, _BLOCK_C))
        dwp = torch.empty((B * n_p, C, W), device=x.device, dtype=torch.float32)  # per-program partial sums
        dbp = torch.empty((B * n_p, C), device=x.device, dtype=torch.float32) if bias is not None else dwp
        if W == 4:
            _conv4_bwd_kernel[grid](*args, dwp, dbp, C, L, n_p, *strides, HAS_BIAS=bias is not None, SILU=ctx.silu,
                                    SEG=_SEG, BLOCK_C=_SEG_C, num_warps=_SEG_WARPS)
        else:
            _conv_bwd_kernel[grid](*args, dwp, dbp, C, L, n_p, *strides, W=W, HAS_BIAS=bias is not None,
                                   SILU=ctx.silu, BLOCK_L=_BLOCK_L, BLOCK_C=_BLOCK_C, num_warps=_WARPS)
        return (dx, dwp.sum(0).to(weight.dtype), dbp.sum(0).to(bias.dtype) if bias is not None else None, None)


def causal_conv1d_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                         activation: str | None = None) -> torch.Tensor:
    """Triton backend (CUDA tensors); same signature and semantics as :func:`causal_conv1d_ref`."""
    if triton is None:
        raise RuntimeError(f"the triton causal conv needs triton: {TRITON_INSTALL_HINT}")
    check_conv_inputs(x, weight, bias, activation)
    return CausalConv1dTritonFn.apply(x, weight, bias, activation is not None)
