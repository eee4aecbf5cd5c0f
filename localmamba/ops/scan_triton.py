"""Triton selective scan: one program per (batch, block of channels), the sequence walked step by step.

(Over 500 lines on purpose: three kernels, their launchers and the autograd Function are one algorithm whose
helpers they share; split, a reader would chase the stride and checkpoint conventions across files.)

mamba-ssm's kernel runs, for each channel, a block-wide parallel scan over the sequence, state after
state: built for long sequences. Vision sequences are short (196 tokens at 224/16) and wide (K*D = 1536
channels per LocalVim-T layer), so here each program keeps the state of BLOCK_D channels in registers,
b*d/BLOCK_D independent programs fill the GPU, and the sequence is walked one step a loop iteration, its
loads issued one step ahead (each step is one exp and a few FMAs per state). In the forward and the step
backward the state is an (N, BLOCK_D) tile and a program's channels share one group's B_t and C_t, loaded
as (N,) rows: against (BLOCK_D, N) tiles with per-channel B and C, fewer registers a thread (more programs
resident to hide the loop's latency: ``benchmarks/kernel_resources.py`` counts them without a GPU; the forward
went from 158 to 89 at fp32 inputs), and on an H100 at the models' layer shapes forwards 1.2-1.7x and
step backwards 1.0-1.3x faster. The segmented backward keeps (BLOCK_D, N) tiles: in the other orientation
it ran 1.3-1.5x slower.

The forward (``_fwd_kernel``) writes the output. The backward recomputes the forward's states, then runs
the adjoint recurrence backwards in time, dh_t = C_t dy_t + a_{t+1} dh_{t+1}, in one of two ways
(:func:`backward_kernel` picks, from measurements):

- **step** (``_bwd_kernel``): every state recomputed into a (b, l, d, n) scratch first, in the inputs'
  16-bit dtype under autocast; the fastest for short 16-bit sequences (LocalVim-T in training).
- **segmented** (``_bwd_seg_kernel``): only the state before every ``SEG.seg``-th step is stored; the
  backward kernel recomputes each segment's states from its checkpoint into a small per-program buffer
  that stays in L2, beside the adjoint walk through the segment after it. A fraction of the scratch
  traffic and memory: the fastest for fp32 states and long sequences (LocalVMamba-T).

Reductions over channels (dB, dC) and over the batch (dA, dD, d delta_bias) are written as per-program
partial sums and added up afterwards: deterministic, no atomics. Any input strides work, but the
time-major ones are the fast ones: a (b, d, l) view of (b, l, d) storage, as the GPU mixers pass, lets a
step read its BLOCK_D channels in one coalesced load. The output takes u's layout; the scratch and the
gradients of u, delta and z are time-major.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from ._triton import TRITON_INSTALL_HINT, tl, triton, triton_available

__all__ = ["selective_scan_triton", "triton_available"]


if triton is not None:

    @triton.jit
    def _softplus(x):
        return tl.where(x <= 20.0, tl.log(1.0 + tl.exp(x)), x)

    @triton.jit
    def _channel_params(A_ptr, A_offs, mask_A, D_ptr, bias_ptr, offs_d, mask_d,
                        HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr):
        """A * log2(e) at ``A_offs`` (the kernel's tile of A), D and delta_bias (BLOCK_D,) of a program's channels
        (0 if absent)."""
        A2 = tl.load(A_ptr + A_offs, mask=mask_A, other=0.0).to(tl.float32) * 1.4426950408889634
        Dv = tl.zeros_like(offs_d.to(tl.float32))
        bias = tl.zeros_like(offs_d.to(tl.float32))
        if HAS_D:
            Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        return A2, Dv, bias

    @triton.jit
    def _fwd_kernel(
        u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, states_ptr,
        d, l, n, d_per_group,
        su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sz_b, sz_d, sz_l, so_b, so_d, so_l,
        sA_d, sA_n, sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
        STORE_STATES: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
        CKPT_EVERY: tl.constexpr = 0, WRITE_OUT: tl.constexpr = True,
    ):
        pid_b = tl.program_id(0).to(tl.int64)  # 64-bit offsets: the state scratch can pass 2**31 elements
        offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)  # (BLOCK_D,)
        offs_n = tl.arange(0, BLOCK_N)  # (BLOCK_N,)
        mask_d = offs_d < d
        mask_n = offs_n < n
        mask_nd = mask_n[:, None] & mask_d[None, :]
        grp = (tl.program_id(1) * BLOCK_D) // d_per_group  # one group per program (see _block_d)
        A2, Dv, bias = _channel_params(A_ptr, offs_d[None, :] * sA_d + offs_n[:, None] * sA_n, mask_nd, D_ptr,
                                       bias_ptr, offs_d, mask_d, HAS_D, HAS_BIAS)  # A * log2(e): exp(x) = exp2(x * log2 e)
        u_p = u_ptr + pid_b * su_b + offs_d * su_d
        dl_p = dl_ptr + pid_b * sdl_b + offs_d * sdl_d
        o_p = out_ptr + pid_b * so_b + offs_d * so_d
        B_p = B_ptr + pid_b * sB_b + grp * sB_g + offs_n * sB_n  # (BLOCK_N,): the program's group
        C_p = C_ptr + pid_b * sC_b + grp * sC_g + offs_n * sC_n
        if HAS_Z:
            z_p = z_ptr + pid_b * sz_b + offs_d * sz_d
        n_slots = l if CKPT_EVERY == 0 else (l + CKPT_EVERY - 1) // CKPT_EVERY
        s_p = states_ptr + (pid_b * n_slots * d + offs_d[None, :]) * n + offs_n[:, None]  # (b, slots, d, n) scratch
        h = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
        # step t's inputs are loaded during step t-1 (software prefetch: the loop is latency-bound)
        u_n = tl.load(u_p, mask=mask_d, other=0.0).to(tl.float32)
        dt_n = tl.load(dl_p, mask=mask_d, other=0.0).to(tl.float32)
        B_n = tl.load(B_p, mask=mask_n, other=0.0).to(tl.float32)
        C_n = tl.load(C_p, mask=mask_n & WRITE_OUT, other=0.0).to(tl.float32)
        if HAS_Z:
            z_n = tl.load(z_p, mask=mask_d & WRITE_OUT, other=0.0).to(tl.float32)
        for t in range(l):
            u, dt, Bt, Ct = u_n, dt_n, B_n, C_n
            if HAS_Z:
                zt = z_n
            nx = t + 1
            more = nx < l
            u_n = tl.load(u_p + nx * su_l, mask=mask_d & more, other=0.0).to(tl.float32)
            dt_n = tl.load(dl_p + nx * sdl_l, mask=mask_d & more, other=0.0).to(tl.float32)
            B_n = tl.load(B_p + nx * sB_l, mask=mask_n & more, other=0.0).to(tl.float32)
            C_n = tl.load(C_p + nx * sC_l, mask=mask_n & more & WRITE_OUT, other=0.0).to(tl.float32)
            if HAS_Z:
                z_n = tl.load(z_p + nx * sz_l, mask=mask_d & more & WRITE_OUT, other=0.0).to(tl.float32)
            if HAS_BIAS:
                dt += bias
            if SOFTPLUS:
                dt = _softplus(dt)
            h = tl.exp2(dt[None, :] * A2) * h + Bt[:, None] * (dt * u)[None, :]  # (BLOCK_N, BLOCK_D)
            if STORE_STATES:
                tl.store(s_p + t * d * n, h.to(states_ptr.dtype.element_ty), mask=mask_nd)
            if CKPT_EVERY > 0:  # checkpoints (b, l / CKPT_EVERY, d, n): slot s holds the state before step s * CKPT_EVERY
                tl.store(s_p + (t + 1) // CKPT_EVERY * d * n, h.to(states_ptr.dtype.element_ty),
                         mask=mask_nd & ((t + 1) % CKPT_EVERY == 0) & (t + 1 < l))
            if WRITE_OUT:
                y = tl.sum(h * Ct[:, None], axis=0)  # (BLOCK_D,)
                if HAS_D:
                    y += Dv * u
                if HAS_Z:
                    y = y * zt * tl.sigmoid(zt)
                tl.store(o_p + t * so_l, y.to(out_ptr.dtype.element_ty), mask=mask_d)

    @triton.jit
    def _adjoint_step(dh, h, h_prev, dy, u, draw, dt, Bt, Ct, A2, Dv, HAS_D: tl.constexpr, SOFTPLUS: tl.constexpr,
                      CH_AXIS: tl.constexpr = 1):
        """One step of the adjoint recurrence, given dy_t and the states h_t, h_{t-1} (tiles with channels along
        CH_AXIS: (BLOCK_N, BLOCK_D) by default): dh carried to step t-1 (a_t dh_t), and step t's dC and dB partial
        sums over the program's channels (BLOCK_N,), du, d delta (BLOCK_D,) and dA's term (a tile). Bt, Ct: the
        group's (BLOCK_N,) rows."""
        N_AXIS: tl.constexpr = 1 - CH_AXIS
        dy2 = tl.expand_dims(dy, N_AXIS)  # a per-channel vector against the tile
        dC_part = tl.sum(h * dy2, axis=CH_AXIS)
        dh += tl.expand_dims(Ct, CH_AXIS) * dy2  # dh_t = C_t dy_t + a_{t+1} dh_{t+1}
        dt2 = tl.expand_dims(dt, N_AXIS)
        a = tl.exp2(dt2 * A2)
        q = tl.sum(dh * tl.expand_dims(Bt, CH_AXIS), axis=N_AXIS)  # (BLOCK_D,); x_t = dt * B_t * u_t
        du = dt * q
        if HAS_D:
            du += Dv * dy
        dB_part = tl.sum(dh * tl.expand_dims(dt * u, N_AXIS), axis=CH_AXIS)
        w = dh * a * h_prev  # a_t = exp(dt A): w = dh * a * h_{t-1}
        ddt = u * q + tl.sum(w * A2, axis=N_AXIS) * 0.6931471805599453  # A = A2 * ln 2
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(draw)
        return dh * a, dC_part, dB_part, du, ddt, w * dt2

    @triton.jit
    def _bwd_kernel(
        u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, states_ptr, y_ptr,
        du_ptr, ddl_ptr, dz_ptr, dBp_ptr, dCp_ptr, dAp_ptr, dDp_ptr, dbiasp_ptr,
        d, l, n, d_per_group, n_dblocks,
        su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sz_b, sz_d, sz_l, sdo_b, sdo_d, sdo_l,
        sA_d, sA_n, sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
        BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    ):
        pid_b = tl.program_id(0).to(tl.int64)
        pid_d = tl.program_id(1)
        offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        offs_n = tl.arange(0, BLOCK_N)
        mask_d = offs_d < d
        mask_n = offs_n < n
        mask_nd = mask_n[:, None] & mask_d[None, :]
        grp = (pid_d * BLOCK_D) // d_per_group  # one group per program (see _block_d)
        A2, Dv, bias = _channel_params(A_ptr, offs_d[None, :] * sA_d + offs_n[:, None] * sA_n, mask_nd, D_ptr,
                                       bias_ptr, offs_d, mask_d, HAS_D, HAS_BIAS)  # A * log2(e): exp(x) = exp2(x * log2 e)
        u_p = u_ptr + pid_b * su_b + offs_d * su_d
        dl_p = dl_ptr + pid_b * sdl_b + offs_d * sdl_d
        do_p = dout_ptr + pid_b * sdo_b + offs_d * sdo_d
        B_p = B_ptr + pid_b * sB_b + grp * sB_g + offs_n * sB_n  # (BLOCK_N,): the program's group
        C_p = C_ptr + pid_b * sC_b + grp * sC_g + offs_n * sC_n
        if HAS_Z:
            z_p = z_ptr + pid_b * sz_b + offs_d * sz_d
        s_p = states_ptr + (pid_b * l * d + offs_d[None, :]) * n + offs_n[:, None]  # (b, l, d, n)
        sst_l = d * n
        # y (read) and du, ddelta, dz (written): time-major (b, l, d), so that a step's channels are
        # contiguous; partial sums of dB, dC per (b, d-block): (b, d-blocks, l, n)
        g_p = pid_b * l * d + offs_d  # (BLOCK_D,) step 0 of this program's channels in (b, l, d)
        part = pid_b * n_dblocks + pid_d  # index of this program's partial sums
        dh = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)  # a_{t+1} * dh_{t+1}, carried backwards
        dA_acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
        dD_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
        dbias_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
        # Prefetch: step t-1's inputs are loaded during step t, and h_t is carried over from step t+1
        # (where it was h_prev), so each stored state is read once.
        t0 = l - 1
        u_n = tl.load(u_p + t0 * su_l, mask=mask_d, other=0.0).to(tl.float32)
        dr_n = tl.load(dl_p + t0 * sdl_l, mask=mask_d, other=0.0).to(tl.float32)
        B_n = tl.load(B_p + t0 * sB_l, mask=mask_n, other=0.0).to(tl.float32)
        C_n = tl.load(C_p + t0 * sC_l, mask=mask_n, other=0.0).to(tl.float32)
        do_n = tl.load(do_p + t0 * sdo_l, mask=mask_d, other=0.0).to(tl.float32)
        h = tl.load(s_p + t0 * sst_l, mask=mask_nd, other=0.0).to(tl.float32)
        hp_n = tl.load(s_p + (t0 - 1) * sst_l, mask=mask_nd & (t0 > 0), other=0.0).to(tl.float32)
        if HAS_Z:
            z_n = tl.load(z_p + t0 * sz_l, mask=mask_d, other=0.0).to(tl.float32)
            y_n = tl.load(y_ptr + g_p + t0 * d, mask=mask_d, other=0.0)
        for i in range(l):
            t = l - 1 - i
            u, draw, Bt, Ct, dout, h_prev = u_n, dr_n, B_n, C_n, do_n, hp_n
            if HAS_Z:
                zt, y = z_n, y_n
            nx = t - 1
            more = nx >= 0
            u_n = tl.load(u_p + nx * su_l, mask=mask_d & more, other=0.0).to(tl.float32)
            dr_n = tl.load(dl_p + nx * sdl_l, mask=mask_d & more, other=0.0).to(tl.float32)
            B_n = tl.load(B_p + nx * sB_l, mask=mask_n & more, other=0.0).to(tl.float32)
            C_n = tl.load(C_p + nx * sC_l, mask=mask_n & more, other=0.0).to(tl.float32)
            do_n = tl.load(do_p + nx * sdo_l, mask=mask_d & more, other=0.0).to(tl.float32)
            hp_n = tl.load(s_p + (nx - 1) * sst_l, mask=mask_nd & (nx > 0), other=0.0).to(tl.float32)
            if HAS_Z:
                z_n = tl.load(z_p + nx * sz_l, mask=mask_d & more, other=0.0).to(tl.float32)
                y_n = tl.load(y_ptr + g_p + nx * d, mask=mask_d & more, other=0.0)
            if HAS_BIAS:
                draw += bias
            if SOFTPLUS:
                dt = _softplus(draw)
            else:
                dt = draw
            if HAS_Z:
                sz = tl.sigmoid(zt)  # y: the ungated output (D skip included), kept by the recompute pass
                dz = dout * y * sz * (1.0 + zt * (1.0 - sz))
                tl.store(dz_ptr + g_p + t * d, dz.to(dz_ptr.dtype.element_ty), mask=mask_d)
                dy = dout * zt * sz
            else:
                dy = dout
            if HAS_D:
                dD_acc += dy * u
            dh, dC_part, dB_part, du, ddt, dA_t = _adjoint_step(dh, h, h_prev, dy, u, draw, dt, Bt, Ct, A2, Dv,
                                                                HAS_D, SOFTPLUS)
            dA_acc += dA_t
            dbias_acc += ddt
            tl.store(dCp_ptr + (part * l + t) * n + offs_n, dC_part, mask=mask_n)
            tl.store(dBp_ptr + (part * l + t) * n + offs_n, dB_part, mask=mask_n)
            tl.store(du_ptr + g_p + t * d, du.to(du_ptr.dtype.element_ty), mask=mask_d)
            tl.store(ddl_ptr + g_p + t * d, ddt.to(ddl_ptr.dtype.element_ty), mask=mask_d)
            h = h_prev
        tl.store(dAp_ptr + (pid_b * d + offs_d[None, :]) * n + offs_n[:, None], dA_acc, mask=mask_nd)
        if HAS_D:
            tl.store(dDp_ptr + pid_b * d + offs_d, dD_acc, mask=mask_d)
        if HAS_BIAS:
            tl.store(dbiasp_ptr + pid_b * d + offs_d, dbias_acc, mask=mask_d)

    @triton.jit
    def _bwd_seg_kernel(
        u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, ckpt_ptr, buf_ptr,
        du_ptr, ddl_ptr, dz_ptr, dBp_ptr, dCp_ptr, dAp_ptr, dDp_ptr, dbiasp_ptr,
        d, l, n, d_per_group, n_dblocks, n_seg,
        su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sz_b, sz_d, sz_l, sdo_b, sdo_d, sdo_l,
        sA_d, sA_n, sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
        BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, SEG: tl.constexpr,
    ):
        # Iteration j runs two independent recurrences side by side (instruction-level parallelism for a
        # latency-bound loop): the forward recompute of segment sf = n_seg - 1 - j // SEG, from its checkpoint,
        # into one half of a small per-program buffer, and the adjoint walk, backwards, through segment
        # sf + 1, whose states the previous SEG iterations wrote into the other half. The buffer is rewritten
        # every 2 * SEG steps, so it stays in L2: the states never make a round trip through HBM.
        pid_b = tl.program_id(0).to(tl.int64)
        pid_d = tl.program_id(1)
        offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # (BLOCK_D,)
        offs_n = tl.arange(0, BLOCK_N)  # (BLOCK_N,)
        mask_d = offs_d < d
        mask_n = offs_n < n
        mask_dn = mask_d[:, None] & mask_n[None, :]
        grp = (pid_d * BLOCK_D) // d_per_group  # one group per program (see _block_d)
        A2, Dv, bias = _channel_params(A_ptr, offs_d[:, None] * sA_d + offs_n[None, :] * sA_n, mask_dn, D_ptr,
                                       bias_ptr, offs_d, mask_d, HAS_D, HAS_BIAS)  # (BLOCK_D, BLOCK_N) tiles here
        u_p = u_ptr + pid_b * su_b + offs_d * su_d
        dl_p = dl_ptr + pid_b * sdl_b + offs_d * sdl_d
        do_p = dout_ptr + pid_b * sdo_b + offs_d * sdo_d
        B_p = B_ptr + pid_b * sB_b + grp * sB_g + offs_n * sB_n  # (BLOCK_N,): the program's group
        C_p = C_ptr + pid_b * sC_b + grp * sC_g + offs_n * sC_n
        if HAS_Z:
            z_p = z_ptr + pid_b * sz_b + offs_d * sz_d
        ck_p = ckpt_ptr + (pid_b * n_seg * d + offs_d[:, None]) * n + offs_n[None, :]  # (b, n_seg, d, n)
        part = pid_b * n_dblocks + pid_d  # this program's partial sums and buffer
        SLOT: tl.constexpr = BLOCK_D * BLOCK_N
        # buffer (programs, 2, SEG + 1, BLOCK_D, BLOCK_N): slot 0 the state before the segment, slot k + 1 after its step k
        bf_p = buf_ptr + part * (2 * (SEG + 1) * SLOT) + tl.arange(0, BLOCK_D)[:, None] * BLOCK_N + offs_n[None, :]
        g_p = pid_b * l * d + offs_d  # (BLOCK_D,) step 0 of this program's channels in (b, l, d)
        dh = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)  # a_{t+1} * dh_{t+1}, carried backwards
        dA_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
        dD_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
        dbias_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
        h_f = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)  # the forward recompute's state
        h_r = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)  # h_t of the adjoint walk's step
        # iteration 0's inputs (prefetch: each iteration loads the next one's)
        sf = n_seg - 1
        tf = sf * SEG
        u_f = tl.load(u_p + tf * su_l, mask=mask_d & (tf < l), other=0.0).to(tl.float32)
        dr_f = tl.load(dl_p + tf * sdl_l, mask=mask_d & (tf < l), other=0.0).to(tl.float32)
        B_f = tl.load(B_p + tf * sB_l, mask=mask_n & (tf < l), other=0.0).to(tl.float32)
        h_ck = tl.load(ck_p + sf * d * n, mask=mask_dn & (sf > 0), other=0.0).to(tl.float32)
        u_r = tl.zeros((BLOCK_D,), dtype=tl.float32)  # the walk starts in segment n_seg: padding
        dr_r = tl.zeros((BLOCK_D,), dtype=tl.float32)
        do_r = tl.zeros((BLOCK_D,), dtype=tl.float32)
        z_r = tl.zeros((BLOCK_D,), dtype=tl.float32)
        B_r = tl.zeros((BLOCK_N,), dtype=tl.float32)
        C_r = tl.zeros((BLOCK_N,), dtype=tl.float32)
        hp_r = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
        for j in range((n_seg + 1) * SEG):
            kf = j % SEG
            sf = n_seg - 1 - j // SEG  # -1 in the last SEG iterations: nothing left to recompute
            tf = sf * SEG + kf
            kr = SEG - 1 - kf
            sr = sf + 1  # n_seg in the first SEG iterations: nothing to walk yet
            tr = sr * SEG + kr
            # -- forward recompute, step tf (padding past the sequence's end: delta 0, so a = 1 and x = 0)
            dt_f = dr_f
            if HAS_BIAS:
                dt_f += bias
            if SOFTPLUS:
                dt_f = _softplus(dt_f)
            dt_f = tl.where((tf >= 0) & (tf < l), dt_f, 0.0)
            h_in = tl.where(kf == 0, h_ck, h_f)  # a segment starts from its checkpoint (zeros for the first)
            h_f = tl.exp2(dt_f[:, None] * A2) * h_in + (dt_f * u_f)[:, None] * B_f[None, :]  # (BLOCK_D, BLOCK_N)
            half_f = bf_p + (sf & 1) * ((SEG + 1) * SLOT)
            tl.store(half_f, h_in, mask=mask_dn & (kf == 0))
            tl.store(half_f + (kf + 1) * SLOT, h_f, mask=mask_dn)
            # -- adjoint walk, step tr: h_t = h_r, h_{t-1} = hp_r
            u, draw, dout, zt, Bt, Ct, h, h_prev = u_r, dr_r, do_r, z_r, B_r, C_r, h_r, hp_r
            v_r = tr < l
            tl.debug_barrier()  # this iteration's buffer writes before the next iteration's reads (below)
            # -- prefetch iteration j + 1's inputs
            jn = j + 1
            kfn = jn % SEG
            sfn = n_seg - 1 - jn // SEG
            tfn = sfn * SEG + kfn
            vfn = (tfn >= 0) & (tfn < l)
            u_f = tl.load(u_p + tfn * su_l, mask=mask_d & vfn, other=0.0).to(tl.float32)
            dr_f = tl.load(dl_p + tfn * sdl_l, mask=mask_d & vfn, other=0.0).to(tl.float32)
            B_f = tl.load(B_p + tfn * sB_l, mask=mask_n & vfn, other=0.0).to(tl.float32)
            h_ck = tl.load(ck_p + sfn * d * n, mask=mask_dn & (kfn == 0) & (sfn > 0), other=0.0).to(tl.float32)
            krn = SEG - 1 - kfn
            srn = sfn + 1
            trn = srn * SEG + krn
            vrn = (trn >= 0) & (trn < l)  # past the last iteration trn < 0: nothing to load
            u_r = tl.load(u_p + trn * su_l, mask=mask_d & vrn, other=0.0).to(tl.float32)
            dr_r = tl.load(dl_p + trn * sdl_l, mask=mask_d & vrn, other=0.0).to(tl.float32)
            do_r = tl.load(do_p + trn * sdo_l, mask=mask_d & vrn, other=0.0).to(tl.float32)
            if HAS_Z:
                z_r = tl.load(z_p + trn * sz_l, mask=mask_d & vrn, other=0.0).to(tl.float32)
            B_r = tl.load(B_p + trn * sB_l, mask=mask_n & vrn, other=0.0).to(tl.float32)
            C_r = tl.load(C_p + trn * sC_l, mask=mask_n & vrn, other=0.0).to(tl.float32)
            # the next step's h_t: this step's h_{t-1}, or at a segment's end the state just recomputed
            h_r = tl.where(kfn == 0, h_f, h_prev)
            hp_r = tl.load(bf_p + (srn & 1) * ((SEG + 1) * SLOT) + krn * SLOT, mask=mask_dn & (srn < n_seg),
                           other=0.0)
            # -- the adjoint step itself (dh_t = C_t dy_t + a_{t+1} dh_{t+1})
            if HAS_BIAS:
                draw += bias
            if SOFTPLUS:
                dt = _softplus(draw)
            else:
                dt = draw
            dt = tl.where(v_r, dt, 0.0)
            if HAS_Z:
                y = tl.sum(h * Ct[None, :], axis=1)  # the ungated output, D skip included
                if HAS_D:
                    y += Dv * u
                sz = tl.sigmoid(zt)
                dz = dout * y * sz * (1.0 + zt * (1.0 - sz))
                tl.store(dz_ptr + g_p + tr * d, dz.to(dz_ptr.dtype.element_ty), mask=mask_d & v_r)
                dy = dout * zt * sz
            else:
                dy = dout
            if HAS_D:
                dD_acc += dy * u
            dh, dC_part, dB_part, du, ddt, dA_t = _adjoint_step(dh, h, h_prev, dy, u, draw, dt, Bt, Ct, A2, Dv,
                                                                HAS_D, SOFTPLUS, CH_AXIS=0)
            dA_acc += dA_t
            dbias_acc += tl.where(v_r, ddt, 0.0)
            tl.store(dCp_ptr + (part * l + tr) * n + offs_n, dC_part, mask=mask_n & v_r)
            tl.store(dBp_ptr + (part * l + tr) * n + offs_n, dB_part, mask=mask_n & v_r)
            tl.store(du_ptr + g_p + tr * d, du.to(du_ptr.dtype.element_ty), mask=mask_d & v_r)
            tl.store(ddl_ptr + g_p + tr * d, ddt.to(ddl_ptr.dtype.element_ty), mask=mask_d & v_r)
        tl.store(dAp_ptr + (pid_b * d + offs_d[:, None]) * n + offs_n[None, :], dA_acc, mask=mask_dn)
        if HAS_D:
            tl.store(dDp_ptr + pid_b * d + offs_d, dD_acc, mask=mask_d)
        if HAS_BIAS:
            tl.store(dbiasp_ptr + pid_b * d + offs_d, dbias_acc, mask=mask_d)


def _block_d(d_per_group: int, cap: int | None = None) -> int:
    """Channels per program: the largest power of two <= cap (default _BLOCK_D) that divides d/g, so that no
    program straddles two groups (each program's partial dB/dC then belongs to one group)."""
    return min(_BLOCK_D if cap is None else cap, d_per_group & -d_per_group)


def _block_n(n: int) -> int:
    return max(2, triton.next_power_of_2(n))


def _strides3(x):
    return x.stride(0), x.stride(1), x.stride(2)


def _io_args(u, delta, A, B4, C4, D, z, delta_bias, dummy) -> tuple:
    """Every kernel's first eight arguments; an absent optional input passes ``dummy`` (never read)."""
    return (u, delta, A, B4, C4, *(t if t is not None else dummy for t in (D, z, delta_bias)))


def _seq_strides(u, delta, z) -> tuple:
    """Strides of the (b, d, l) inputs u, delta and z (zeros for an absent z)."""
    return (*_strides3(u), *_strides3(delta), *(_strides3(z) if z is not None else (0, 0, 0)))


def _param_strides(A, B4, C4) -> tuple:
    return (A.stride(0), A.stride(1), *B4.stride(), *C4.stride())


def _flags(D, z, delta_bias, softplus) -> dict:
    return dict(HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(softplus))


def _launch_fwd_step(u, delta, A, B4, C4, D, z, delta_bias, softplus, out, states=None, ckpt_every: int = 0):
    """The step-by-step forward into ``out`` (b, d, l), any strides (None: no output); with ``states``, also
    every state, (b, l, d, n), or with ``ckpt_every`` the state before every ckpt_every-th step,
    (b, l / ckpt_every, d, n)."""
    b, d, l = u.shape
    n = A.shape[1]
    g = B4.shape[1]
    BLOCK_D = _block_d(d // g)
    dummy = out if out is not None else states
    _fwd_kernel[(b, triton.cdiv(d, BLOCK_D))](
        *_io_args(u, delta, A, B4, C4, D, z, delta_bias, dummy), dummy, states if states is not None else dummy,
        d, l, n, d // g,
        *_seq_strides(u, delta, z), *(_strides3(out) if out is not None else (0, 0, 0)), *_param_strides(A, B4, C4),
        **_flags(D, z, delta_bias, softplus), STORE_STATES=states is not None and not ckpt_every, BLOCK_D=BLOCK_D,
        BLOCK_N=_block_n(n), CKPT_EVERY=ckpt_every, WRITE_OUT=out is not None, num_warps=_NUM_WARPS,
    )


def _groups(B: torch.Tensor, C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """B and C as (b, g, n, l) views (g = 1 for the (b, n, l) form)."""
    B4 = B if B.dim() == 4 else B.unsqueeze(1)  # (b, g, n, l)
    C4 = C if C.dim() == 4 else C.unsqueeze(1)
    if B4.shape[1] != C4.shape[1]:
        raise ValueError("the triton backend needs B and C with the same number of groups")
    return B4, C4


def _scan_forward(u, delta, A, B, C, D, z, delta_bias, softplus: bool, out_dtype) -> torch.Tensor:
    """The forward kernel's output, (b, d, l) in u's layout (time-major u gives a time-major output)."""
    B4, C4 = _groups(B, C)
    out = torch.empty_like(u, dtype=out_dtype)  # (b, d, l)
    _launch_fwd_step(u, delta, A, B4, C4, D, z, delta_bias, softplus, out)
    return out


def _scan_backward(u, delta, A, B, C, D, z, delta_bias, softplus: bool, dout) -> tuple:
    """Gradients of u, delta, A, B, C, D, z, delta_bias (None for an absent input), in the inputs' dtypes and
    B's and C's shapes; u's, delta's and z's time-major (see :func:`_gradient_layouts`)."""
    B4, C4 = _groups(B, C)
    b, d, l = u.shape
    n = A.shape[1]
    # The backward keeps states of a batch slice in a scratch, (bs, l, d, n) for the step kernel and
    # (bs, l / SEG.seg, d, n) for the segmented one: slice the batch to stay under _SCRATCH_ELEMENTS, into
    # slices of equal size (a small last slice would leave most of the GPU idle)
    kind = backward_kernel(l, _scratch_dtype(u))
    per_image = d * n * (l if kind == "step" else triton.cdiv(l, SEG.seg))
    n_slices = triton.cdiv(b, max(1, _SCRATCH_ELEMENTS // max(1, per_image)))
    bs = triton.cdiv(b, n_slices)
    slice_grads = _backward_slice_step if kind == "step" else _backward_slice_seg
    parts = [slice_grads(u[i:i + bs], delta[i:i + bs], A, B4[i:i + bs], C4[i:i + bs], D,
                         None if z is None else z[i:i + bs], delta_bias, dout[i:i + bs], softplus)
             for i in range(0, b, bs)]
    du, ddelta, dA, dB, dC, dD, dz, dbias = parts[0] if len(parts) == 1 else (
        None if p[0] is None else (torch.cat(p) if k in (0, 1, 3, 4, 6) else sum(p))
        for k, p in enumerate(zip(*parts)))  # slices: per-image grads joined, shared ones summed
    dB = dB.squeeze(1) if B.dim() == 3 else dB
    dC = dC.squeeze(1) if C.dim() == 3 else dC
    return (du.to(u.dtype), ddelta.to(delta.dtype), dA.to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
            dD.to(D.dtype) if D is not None else None, dz.to(z.dtype) if z is not None else None,
            dbias.to(delta_bias.dtype) if delta_bias is not None else None)


class SelectiveScanTritonFn(torch.autograd.Function):
    """The eager path: the kernels called directly (a custom op's dispatch costs the host time that bounds small
    models; under torch.compile the same two functions run as the custom ops below)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_dtype=None):
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
        ctx.softplus = delta_softplus
        return _scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_dtype)

    @staticmethod
    def backward(ctx, dout):
        return (*_scan_backward(*ctx.saved_tensors, ctx.softplus, dout), None, None)


#: Cap of the backward's fp32 state scratch, in elements (8 GiB). At batch 128 a LocalVim-T layer needs
#: 2.4 GiB, a LocalVMamba-T stage-3 layer 4.9 GiB: under a 4 GiB cap the latter ran in two slices.
_SCRATCH_ELEMENTS = 2 ** 31
#: Launch settings of the step kernels: one warp per program of 32 channels. The channel reductions of the
#: backward (dB, dC) then stay within a warp (shuffles, no shared memory or barrier at each step). H200,
#: the models' own scan inputs at batch 128, backward kernel alone: LocalVim-T 1.45 ms against 1.92 with
#: 4 warps and 64 channels, LocalVMamba-T stage 1 11.5 against 15.8, stage 3 2.85 against 3.87; the
#: forward 0.54 against 0.64 (LocalVim-T).
_NUM_WARPS = 1
_BLOCK_D = 32


class SegConfig(NamedTuple):
    """Launch settings of the segmented backward: steps per segment, channels per program, warps."""
    seg: int
    block_d: int
    warps: int


#: The fastest of a grid (segments of 4, 8 or 16 steps, 16 or 32 channels, 1 or 2 warps) at a LocalVim-T
#: layer and LocalVMamba-T's stage-1 and stage-3 layers, batch 128 at 224, fp32, time-major, H100
#: (backward ms: 3.40 / 26.9 / 6.68; (8, 32, 1) 3.77 / 30.1 / 7.37; (4, 16, 1) 3.90 / 31.5 / 7.51).
SEG = SegConfig(4, 32, 1)


def backward_kernel(l: int, scratch_dtype: torch.dtype) -> str:
    """Which backward runs a sequence of l steps whose states are kept in ``scratch_dtype``: "step" or "seg".

    Measured on an H100 at the models' own scan inputs, batch 128 at 224 (``bench_triton_scan.py --policy``,
    backward ms): the segmented backward wins wherever the states are fp32 (LocalVim-T 2.87 against 3.42 for the
    step kernel; LocalVMamba-T's 3136-, 784- and 196-step stages 21.4 / 11.0 / 5.59 against 37.0 / 16.9 / 6.20)
    and for long 16-bit sequences (LocalVMamba-T's stages 1-2 under autocast: 22.2 / 11.1 against 30.3 / 12.8,
    whose step scratch would also grow with l); the step kernel where the states are 16-bit and short, its
    scratch then half the traffic (LocalVim-T under autocast 2.26 against 3.11; LocalVMamba-T's stages 3-4 4.16 /
    2.65 / 2.24 against 5.42 / 3.55 / 2.99). Where the two are within a few percent (the 49- and 64-step fp32
    scans) the rule takes the segmented one for its memory.
    """
    return "step" if scratch_dtype in (torch.bfloat16, torch.float16) and l < 512 else "seg"


def _grad_buffers(u, n: int, nblk: int, delta, z, D, delta_bias) -> list:
    """A backward kernel's outputs, in its argument order: du, ddelta, dz (time-major (b, l, d), in the dtypes
    of u, delta and z: the kernel rounds its fp32 values once, with no cast afterwards), and in fp32 the
    per-program partial sums of dB and dC (b, d-blocks, l, n), and per-image dA, dD, d delta_bias."""
    b, d, l = u.shape

    def empty(*shape, keep=True, like=None):
        dtype = torch.float32 if like is None else like.dtype
        return torch.empty(shape, device=u.device, dtype=dtype) if keep else None
    return [empty(b, l, d, like=u), empty(b, l, d, like=delta), empty(b, l, d, keep=z is not None, like=z),
            empty(b, nblk, l, n),
            empty(b, nblk, l, n), empty(b, d, n), empty(b, d, keep=D is not None),
            empty(b, d, keep=delta_bias is not None)]


def _finish_grads(du, ddelta, dz, dBp, dCp, dAp, dDp, dbp, g: int) -> tuple:
    """Partial sums -> gradients (programs never straddle groups); (b, l, d) storage -> (b, d, l) views."""
    b, nblk, l, n = dBp.shape
    dB = dBp.view(b, g, nblk // g, l, n).sum(2).transpose(-1, -2)  # (b, g, n, l)
    dC = dCp.view(b, g, nblk // g, l, n).sum(2).transpose(-1, -2)
    tm = (lambda x: None if x is None else x.transpose(1, 2))
    return (tm(du), tm(ddelta), dAp.sum(0), dB, dC, dDp.sum(0) if dDp is not None else None, tm(dz),
            dbp.sum(0) if dbp is not None else None)


def _scratch_dtype(u: torch.Tensor) -> torch.dtype:
    """The dtype of the backward's state scratch: u's for 16-bit inputs, else fp32. The scratch is the backward's
    largest traffic (LocalVim-T, batch 128: 2.4 GiB written and read back a layer in fp32); the recurrence itself
    always runs in fp32 registers, and only the gradient terms that read a stored state (dB, dC, dA, delta's)
    see it rounded to the precision the 16-bit inputs already have."""
    return u.dtype if u.dtype in (torch.bfloat16, torch.float16) else torch.float32


def _backward_slice_step(u, delta, A, B4, C4, D, z, delta_bias, dout, softplus):
    """Gradients for one batch slice: recompute all states into scratch, then the adjoint kernel."""
    b, d, l = u.shape
    n = A.shape[1]
    g = B4.shape[1]
    BLOCK_D = _block_d(d // g)
    nblk = triton.cdiv(d, BLOCK_D)
    # time-major scratch and outputs: each step of a program reads and writes contiguous channels
    states = torch.empty((b, l, d, n), device=u.device, dtype=_scratch_dtype(u))
    y = torch.empty((b, l, d), device=u.device, dtype=torch.float32)  # ungated output: dz needs it
    _launch_fwd_step(u, delta, A, B4, C4, D, None, delta_bias, softplus, y.transpose(1, 2), states)
    grads = _grad_buffers(u, n, nblk, delta, z, D, delta_bias)
    _bwd_kernel[(b, nblk)](
        *_io_args(u, delta, A, B4, C4, D, z, delta_bias, states), dout, states, y,
        *(x if x is not None else states for x in grads),
        d, l, n, d // g, nblk,
        *_seq_strides(u, delta, z), *_strides3(dout), *_param_strides(A, B4, C4),
        **_flags(D, z, delta_bias, softplus), BLOCK_D=BLOCK_D, BLOCK_N=_block_n(n), num_warps=_NUM_WARPS,
    )
    del states
    return _finish_grads(*grads, g)


def _backward_slice_seg(u, delta, A, B4, C4, D, z, delta_bias, dout, softplus):
    """Gradients for one batch slice: a checkpoint every SEG.seg states into scratch, then the adjoint kernel,
    which recomputes each segment's states into an L2-sized buffer as it walks back."""
    b, d, l = u.shape
    n = A.shape[1]
    g = B4.shape[1]
    BLOCK_D, BLOCK_N = _block_d(d // g, SEG.block_d), _block_n(n)
    nblk = triton.cdiv(d, BLOCK_D)
    n_seg = triton.cdiv(l, SEG.seg)
    ckpt = torch.empty((b, n_seg, d, n), device=u.device, dtype=torch.float32)  # (b, segments, d, n)
    _launch_fwd_step(u, delta, A, B4, C4, D, None, delta_bias, softplus, None, ckpt, ckpt_every=SEG.seg)
    buf = torch.empty((b * nblk, 2, SEG.seg + 1, BLOCK_D, BLOCK_N), device=u.device, dtype=torch.float32)
    grads = _grad_buffers(u, n, nblk, delta, z, D, delta_bias)
    _bwd_seg_kernel[(b, nblk)](
        *_io_args(u, delta, A, B4, C4, D, z, delta_bias, ckpt), dout, ckpt, buf,
        *(x if x is not None else ckpt for x in grads),
        d, l, n, d // g, nblk, n_seg,
        *_seq_strides(u, delta, z), *_strides3(dout), *_param_strides(A, B4, C4),
        **_flags(D, z, delta_bias, softplus), BLOCK_D=BLOCK_D, BLOCK_N=BLOCK_N, SEG=SEG.seg, num_warps=SEG.warps,
    )
    del ckpt, buf
    return _finish_grads(*grads, g)


def _gradient_layouts(u, delta, A, B, C, D, z, delta_bias) -> list[torch.Tensor]:
    """Empty tensors on the meta device with the shapes, dtypes and strides of :func:`_scan_backward`'s gradients
    of the inputs present: the custom op's fake kernel, and the layout its real kernel promises the compiler."""
    b, d, l = u.shape

    def meta(*shape, dtype):
        return torch.empty(shape, dtype=dtype, device="meta")

    def of_bn(X):  # dB, dC: (b, g, l, n) storage as (b, g, n, l), squeezed like X
        Y = meta(b, 1 if X.dim() == 3 else X.shape[1], l, X.shape[-2], dtype=X.dtype).transpose(-1, -2)
        return Y.squeeze(1) if X.dim() == 3 else Y
    grads = [meta(b, l, d, dtype=u.dtype).transpose(1, 2), meta(b, l, d, dtype=delta.dtype).transpose(1, 2),
             meta(*A.shape, dtype=A.dtype), of_bn(B), of_bn(C)]
    grads += [meta(*D.shape, dtype=D.dtype)] if D is not None else []
    grads += [meta(b, l, d, dtype=z.dtype).transpose(1, 2)] if z is not None else []
    grads += [meta(*delta_bias.shape, dtype=delta_bias.dtype)] if delta_bias is not None else []
    return grads


# Under torch.compile the scan is two opaque custom ops with fake kernels and an autograd formula: the graph
# holds them as calls, and neither dynamo nor AOTAutograd traces the Python around the kernel launches (in
# training, tracing SelectiveScanTritonFn failed inside inductor: "Unexpected fake buffer").
@torch.library.custom_op("localmamba::selective_scan_triton", mutates_args=())
def _scan_op(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
             delta_softplus: bool, out_dtype: Optional[torch.dtype]) -> torch.Tensor:
    return _scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_dtype)


@_scan_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_dtype):
    _groups(B, C)
    return torch.empty_like(u, dtype=out_dtype)


@torch.library.custom_op("localmamba::selective_scan_triton_backward", mutates_args=())
def _scan_backward_op(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                      D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
                      delta_softplus: bool, dout: torch.Tensor) -> list[torch.Tensor]:
    """The gradients of the inputs present, in :func:`_gradient_layouts`' layouts (a rare batch-sliced result in
    another layout is copied into them)."""
    grads = [g for g in _scan_backward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, dout) if g is not None]
    want = _gradient_layouts(u, delta, A, B, C, D, z, delta_bias)
    return [g if g.stride() == w.stride() else torch.empty_strided(w.shape, w.stride(), dtype=w.dtype,
                                                                   device=g.device).copy_(g)
            for g, w in zip(grads, want)]


@_scan_backward_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, dout):
    return [torch.empty_strided(w.shape, w.stride(), dtype=w.dtype, device=u.device)
            for w in _gradient_layouts(u, delta, A, B, C, D, z, delta_bias)]


def _scan_op_setup(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, _ = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
    ctx.softplus = delta_softplus


def _scan_op_backward(ctx, dout):
    saved = ctx.saved_tensors
    grads = iter(_scan_backward_op(*saved, ctx.softplus, dout))
    return (*(None if x is None else next(grads) for x in saved), None, None)


_scan_op.register_autograd(_scan_op_backward, setup_context=_scan_op_setup)


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, out_dtype=None):
    """Triton backend (CUDA tensors); same signature and semantics as :func:`selective_scan_ref`, and
    ``out_dtype`` (default u's) written directly by the kernels."""
    if triton is None:
        raise RuntimeError(f"backend='triton' needs triton: {TRITON_INSTALL_HINT}")
    if torch.compiler.is_compiling():
        return _scan_op(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), out_dtype)
    return SelectiveScanTritonFn.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_dtype)
