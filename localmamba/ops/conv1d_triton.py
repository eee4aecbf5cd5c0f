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


_BLOCK_L, _BLOCK_C, _WARPS = 32, 64, 4


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
        n_l = triton.cdiv(L, _BLOCK_L)
        dx = torch.empty_like(x)
        dwp = torch.empty((B * n_l, C, W), device=x.device, dtype=torch.float32)  # per-program partial sums
        dbp = torch.empty((B * n_l, C), device=x.device, dtype=torch.float32) if bias is not None else dwp
        _conv_bwd_kernel[(B, n_l, triton.cdiv(C, _BLOCK_C))](
            x, weight, bias if bias is not None else weight, dout, dx, dwp, dbp, C, L, n_l,
            *x.stride(), *dout.stride(), *dx.stride(), *weight.stride(),
            W=W, HAS_BIAS=bias is not None, SILU=ctx.silu, BLOCK_L=_BLOCK_L, BLOCK_C=_BLOCK_C, num_warps=_WARPS)
        return (dx, dwp.sum(0).to(weight.dtype), dbp.sum(0).to(bias.dtype) if bias is not None else None, None)


def causal_conv1d_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                         activation: str | None = None) -> torch.Tensor:
    """Triton backend (CUDA tensors); same signature and semantics as :func:`causal_conv1d_ref`."""
    if triton is None:
        raise RuntimeError(f"the triton causal conv needs triton: {TRITON_INSTALL_HINT}")
    check_conv_inputs(x, weight, bias, activation)
    return CausalConv1dTritonFn.apply(x, weight, bias, activation is not None)
