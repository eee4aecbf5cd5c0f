"""The selective scan's "torch" backend: the chunked recurrence in pure PyTorch with a hand-written backward
(any device). See :class:`SelectiveScanTorchFn`."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ._checks import check_scan_inputs, compute_dtype, no_autocast

__all__ = ["selective_scan_torch", "SelectiveScanTorchFn", "DEFAULT_CHUNK_SIZE"]

#: Steps per chunk of the torch backend. Small chunks keep the (T, b, d, n) buffers in cache (6 MB each for
#: a LocalVim-T layer at T=8) and the saved boundary states at 1/T of all states. On a 2-core AMD EPYC,
#: T=6..8 ran fastest with the earlier layout (T=4: +10%, T=16: +15% forward time); with the channels-last
#: buffers, T=6 to 16 could not be told apart inside LocalVim-T.
DEFAULT_CHUNK_SIZE = 8


def _time_major(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(b, ..., l) -> (l, b, ...) contiguous in `dtype`: one time step is then one contiguous slice."""
    return x.movedim(-1, 0).to(dtype, memory_format=torch.contiguous_format).contiguous()


def _groups_time_major(M: torch.Tensor, G: int, dtype: torch.dtype) -> torch.Tensor:
    """B or C, (b, n, l) or (b, g, n, l) -> (l, b, G, n): one row per internal group (G a multiple of g)."""
    Mt = _time_major(M if M.dim() == 4 else M[:, None], dtype)          # (l, b, g, n)
    return Mt.repeat_interleave(G // Mt.shape[2], dim=2) if Mt.shape[2] != G else Mt  # (l, b, G, n)


def _sum_groups(x: torch.Tensor, g: int) -> torch.Tensor:
    """(l, b, G, n) per internal group -> (l, b, g, n) per group of the input (the inverse of the repeat)."""
    l, b, G, n = x.shape
    return x if G == g else x.view(l, b, g, G // g, n).sum(3)


def _chunks(l: int, T: int):
    """(index, t0, t1) of each chunk of T steps (the last one may be shorter)."""
    return [(c, t0, min(t0 + T, l)) for c, t0 in enumerate(range(0, l, T))]


_LOG2E = 1.4426950408889634


def _decay_and_input(dt, dtu, A2, Bt, a, x):
    """Fill a = exp(delta*A) and x = delta*B*u for one chunk, in the preallocated buffers.

    dt, dtu: (T, b, G, 1, d/G) views of the chunk's (T, b, d) rows; A2 = A*log2(e) as (G, n, d/G) (exp2 is
    about twice as fast as exp on CPU, and exp2(delta*A*log2 e) = exp(delta*A) with one extra rounding);
    Bt: (T, b, G, n, 1); a, x: (T, b, G, n, d/G), written in place. Channels innermost, so every op runs along
    d/G contiguous floats rather than along n. The callers make the views (the forward once for all chunks:
    reshaping chunk by chunk in its loop cost about 0.5 ms of a 9 ms LocalVim-T layer on CPU).
    """
    torch.mul(dt, A2, out=a).exp2_()                                     # (T, b, G, n, d/G)
    torch.mul(dtu, Bt, out=x)                                            # (T, b, G, n, d/G)


def _recurrence(a, h, steps, prev):
    """In place: h[t] <- a[t] * h[t-1] + h[t] for t < steps, where h[-1] = prev (None: zero, the first chunk).

    a, h: sequences of (b, G, n, d/G) views (``unbind`` of the chunk buffers, made once: indexing a tensor
    in the loop would cost a view per step); prev: the state before the chunk, or None.
    """
    if prev is not None:
        h[0].addcmul_(a[0], prev)                                        # (b, G, n, d/G)
    for t in range(1, steps):
        h[t].addcmul_(a[t], h[t - 1])                                    # (b, G, n, d/G)


def _contract_state(v, h, out):
    """out[t, b, c] = sum_n h[t, b, G(c), n, c'] * v[t, b, G(c), n], as one batched (1, n) @ (n, d/G) matmul.

    v: (T*b*G, 1, n); h: (T, b, G, n, d/G); out: (T*b*G, 1, d/G), a view of (T, b, d), written in place.
    """
    n, dG = h.shape[-2:]
    torch.bmm(v, h.view(-1, n, dG), out=out)                             # (T*b*G, 1, d/G)


def _contract_channels(w, h, out):
    """out[t, b, G, n] = sum_{c in group G} w[t, b, c] * h[t, b, G, n, c'], as one batched matmul.

    w: (T, b, d); h: (T, b, G, n, d/G); out: (T, b, G, n), written in place.
    """
    T, b, G, n, dG = h.shape
    torch.bmm(h.view(T * b * G, n, dG), w.reshape(T * b * G, dG, 1),
              out=out.view(T * b * G, n, 1))                             # (T*b*G, n, 1)


class SelectiveScanTorchFn(torch.autograd.Function):
    """Chunked selective scan in pure PyTorch with a memory-lean, recomputing backward.

    Forward: for each chunk of T steps, a = exp(delta*A) and x = delta*B*u fill (T, b, G, n, d/G)
    buffers, the recurrence runs in place (one fused multiply-add per step on a contiguous state), and y
    for the chunk is one batched matmul. Saved: the (fp32) inputs, delta after bias and softplus, and the
    state at the start of each chunk, (l/T, b, G, n, d/G).

    Backward, chunks in reverse: recompute the chunk's states from its saved start state, run
    dh_t = C_t*dy_t + exp(delta_{t+1} A)*dh_{t+1} in place, and form every gradient with batched
    matmuls and reductions over the chunk. No closed form and no exp of a cumulative sum is used, so
    nothing can overflow that the recurrence itself does not.

    Layout: per-step tensors are time-major, (l, b, d) and (T, b, G, n, d/G), so that one step is one
    contiguous slice. G = lcm(groups of B, groups of C): each internal group of d/G channels reads one
    row of B and one of C, so the states keep channels innermost (fast elementwise ops, and y as a
    (1, n) @ (n, d/G) matmul). The output takes u's layout and the gradients come back as time-major
    views: a caller that passes (b, d, l) views of time-major (l, b, d) storage pays no transpose at all
    (and y is computed in the output's memory); contiguous inputs pay it inside ops that run anyway.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size, grad_enabled=True):
        b, d, l, n = check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
        ct = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
        T = max(1, min(int(chunk_size), l))
        gB, gC = (M.shape[1] if M.dim() == 4 else 1 for M in (B, C))
        G = math.lcm(gB, gC)
        dG = d // G
        training = grad_enabled and any(ctx.needs_input_grad[:8])     # else nothing needs saving
        need_ddelta = training and (ctx.needs_input_grad[1] or ctx.needs_input_grad[7])
        with no_autocast(u), torch.no_grad():
            uf = u.to(ct)                                                # (b, d, l)
            dt = u.new_empty((l, b, d), dtype=ct)                        # (l, b, d) time-major
            if delta_bias is not None:
                torch.add(delta.movedim(-1, 0), delta_bias.to(ct), out=dt)
            else:
                dt.copy_(delta.movedim(-1, 0))
            dsp = None                                                   # softplus'(delta) = sigmoid(delta)
            if delta_softplus:
                dsp = torch.sigmoid(dt) if need_ddelta else None         # (l, b, d)
                dt = F.softplus(dt)
            dtu = torch.mul(dt, uf.movedim(-1, 0), out=torch.empty_like(dt))  # (l, b, d)
            Bt = _groups_time_major(B, G, ct)                            # (l, b, G, n)
            Ct = _groups_time_major(C, G, ct)                            # (l, b, G, n)
            Af = A.to(ct)                                                # (d, n)
            A2 = (Af * _LOG2E).view(G, dG, n).transpose(1, 2).contiguous()  # (G, n, d/G)

            states = dt.new_empty((-(-l // T), b, G, n, dG)) if training else None  # (l/T, b, G, n, d/G)
            a = dt.new_empty((T, b, G, n, dG))                           # exp(delta*A)
            # the states of a chunk, in two buffers used in turn: the last state of one chunk stays where it
            # is while the next chunk fills the other (no copy of the state between chunks)
            hs = dt.new_empty((2, T, b, G, n, dG))                       # (2, T, b, G, n, d/G)
            a_steps, h_steps = a.unbind(0), [h.unbind(0) for h in hs]
            prev = None                                                  # the state before the chunk (zero)
            out = torch.empty_like(uf)                                   # (b, d, l), u's layout
            y = out.movedim(-1, 0)                                       # (l, b, d): y is computed in place
            if not y.is_contiguous():                                    # unless u is time-innermost
                y = dt.new_empty((l, b, d))
            # every chunk's operands as views made once, in the shapes that the chunk helpers take
            dt_c = dt.view(l, b, G, 1, dG).split(T)                      # (T, b, G, 1, d/G) each
            dtu_c = dtu.view(l, b, G, 1, dG).split(T)                    # (T, b, G, 1, d/G)
            B_c = Bt.unsqueeze(-1).split(T)                              # (T, b, G, n, 1)
            C_c = Ct.view(l * b * G, 1, n).split(T * b * G)              # (T*b*G, 1, n)
            y_c = y.view(l * b * G, 1, dG).split(T * b * G)              # (T*b*G, 1, d/G)
            for c in range(len(dt_c)):
                Tc = dt_c[c].shape[0]
                ac, hc, h_c = a[:Tc], hs[c % 2, :Tc], h_steps[c % 2]     # (Tc, b, G, n, d/G)
                if training and prev is not None:
                    states[c].copy_(prev)
                elif training:
                    states[c].zero_()
                _decay_and_input(dt_c[c], dtu_c[c], A2, B_c[c], ac, hc)  # exp(delta*A), delta*B*u
                _recurrence(a_steps, h_c, Tc, prev)
                _contract_state(C_c[c], hc, y_c[c])                      # (Tc*b*G, 1, d/G)
                prev = h_c[Tc - 1]

            if D is not None:                                            # may alias y: same strides
                torch.addcmul(y.permute(1, 2, 0), uf, D.to(ct)[:, None], out=out)
            else:
                out.copy_(y.permute(1, 2, 0))
            zf = None
            if z is not None:
                zf = z.to(ct)                                            # (b, d, l)
                out.mul_(F.silu(zf))
            out = out.to(u.dtype)

        ctx.save_for_backward(uf, dt, Af, Bt, Ct, D, zf, states, dsp)
        ctx.meta = dict(T=T, gB=gB, gC=gC, has_bias=delta_bias is not None,
                        B3=B.dim() == 3, C3=C.dim() == 3,
                        dtypes=[t.dtype if t is not None else None
                                for t in (u, delta, A, B, C, D, z, delta_bias)])
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        uf, dt, Af, Bt, Ct, D, zf, states, dsp = ctx.saved_tensors
        meta = ctx.meta
        T = meta["T"]
        l, b, d = dt.shape
        n = Af.shape[1]
        G = Bt.shape[2]
        dG = d // G
        need = ctx.needs_input_grad
        with no_autocast(dt):
            dout = dout.to(dt.dtype)                                     # (b, d, l)
            Df = D.to(dt.dtype)[:, None] if D is not None else None      # (d, 1)
            if zf is not None:
                sz = torch.sigmoid(zf)                                   # (b, d, l)
                dy_nat = dout * (zf * sz)                                # dL/dy = dout * silu(z)
            else:
                dy_nat = dout
            dy = dt.new_empty((l, b, d)).copy_(dy_nat.movedim(-1, 0))    # (l, b, d)
            du = torch.empty_like(dt)                                    # (l, b, d), scan part of du
            ddt = torch.empty_like(dt)                                   # (l, b, d)
            y = torch.empty_like(dt) if zf is not None else None         # (l, b, d), for dz
            dA = dt.new_zeros((G, n, dG))                                # (G, n, d/G)
            dB = dt.new_empty((l, b, G, n))                              # (l, b, G, n)
            dC = dt.new_empty((l, b, G, n))                              # (l, b, G, n)
            Ag = Af.view(G, dG, n).transpose(1, 2).contiguous()          # (G, n, d/G)
            A2 = Ag * _LOG2E                                             # (G, n, d/G)

            q = dt.new_empty((T, b, d))                                  # (T, b, d)
            dtu = dt.new_empty((T, b, d))                                # (T, b, d)
            a = dt.new_empty((T, b, G, n, dG))                           # exp(delta*A), then dh*a*h_prev
            hs = dt.new_empty((T + 1, b, G, n, dG))                      # hs[0] = h_{t0-1}, hs[1:] = states
            dh = dt.new_empty((T, b, G, n, dG))                          # adjoint dL/dh_t
            carry = dt.new_zeros((b, G, n, dG))                          # exp(delta_{t1} A) * dh_{t1}
            a_steps, h_steps, dh_steps = a.unbind(0), hs.unbind(0), dh.unbind(0)
            for c, t0, t1 in reversed(_chunks(l, T)):
                Tc = t1 - t0
                ac, hc, dhc, qc = a[:Tc], hs[1:Tc + 1], dh[:Tc], q[:Tc]
                uc = uf[:, :, t0:t1].permute(2, 0, 1)                    # (Tc, b, d), strided
                dtc = dt[t0:t1].view(Tc, b, G, 1, dG)                    # (Tc, b, G, 1, d/G)
                # recompute the chunk's states from the saved state at its start
                hs[0].copy_(states[c])
                torch.mul(dt[t0:t1], uc, out=dtu[:Tc])                   # (Tc, b, d)
                _decay_and_input(dtc, dtu[:Tc].view(Tc, b, G, 1, dG), A2, Bt[t0:t1, ..., None], ac, hc)
                _recurrence(a_steps, h_steps[1:], Tc, hs[0])
                if y is not None:
                    _contract_state(Ct[t0:t1].reshape(-1, 1, n), hc, y[t0:t1].view(-1, 1, dG))  # (Tc, b, d)
                # dC_t = sum over the group's channels of dy_t * h_t
                _contract_channels(dy[t0:t1], hc, dC[t0:t1])
                # adjoint recurrence: dh_t = C_t*dy_t + a_{t+1}*dh_{t+1}
                torch.mul(dy[t0:t1].view(Tc, b, G, 1, dG), Ct[t0:t1, ..., None], out=dhc)  # (Tc, b, G, n, d/G)
                dhc[-1].add_(carry)
                for t in range(Tc - 2, -1, -1):
                    dh_steps[t].addcmul_(a_steps[t + 1], dh_steps[t + 1])  # (b, G, n, d/G)
                # input x_t = delta_t*B_t*u_t: du = delta*(dh.B), ddelta = u*(dh.B), dB = sum_c dh*delta*u
                _contract_state(Bt[t0:t1].reshape(-1, 1, n), dhc, qc.view(-1, 1, dG))  # (Tc, b, d)
                torch.mul(dt[t0:t1], qc, out=du[t0:t1])
                torch.mul(uc, qc, out=ddt[t0:t1])
                _contract_channels(dtu[:Tc], dhc, dB[t0:t1])
                # decay a_t = exp(delta_t*A): w = dh_t*a_t*h_{t-1}; ddelta += w.A, dA += sum_{t,b} w*delta
                ac.mul_(dhc)
                carry.copy_(ac[0])
                ac.mul_(hs[:Tc])                                         # w: (Tc, b, G, n, d/G)
                torch.mul(ac, dtc, out=dhc)                              # dh is free now
                dA += dhc.sum(dim=(0, 1))                                # (G, n, d/G)
                ac.mul_(Ag)
                ddt[t0:t1].view(Tc, b, G, dG).add_(ac.sum(dim=3))        # (Tc, b, G, d/G)

            if dsp is not None:                                          # through delta = softplus(delta + bias)
                ddt.mul_(dsp)
            dbias = ddt.sum(dim=(0, 1)) if meta["has_bias"] and need[7] else None  # (d,)
            dD = (dy_nat * uf).sum(dim=(0, 2)) if D is not None and need[5] else None  # (d,)
            du_nat = dz = None
            if need[0]:                                                  # du = dy*D + scan part
                du_nat = torch.empty_like(uf)                            # (b, d, l), u's layout
                if Df is not None:
                    torch.addcmul(du.permute(1, 2, 0), dy_nat, Df, out=du_nat)
                else:
                    du_nat.copy_(du.permute(1, 2, 0))
            if zf is not None and need[6]:                               # dz = dout*silu'(z)*(y + D*u)
                dz = torch.empty_like(uf)                                # (b, d, l), u's layout
                if Df is not None:
                    torch.addcmul(y.permute(1, 2, 0), uf, Df, out=dz)
                else:
                    dz.copy_(y.permute(1, 2, 0))
                dz.mul_(dout).mul_(sz * (1 + zf * (1 - sz)))
            dA = dA.transpose(1, 2).reshape(d, n)                        # (d, n)
            dB, dC = _sum_groups(dB, meta["gB"]), _sum_groups(dC, meta["gC"])  # (l, b, g, n)

        dtypes = meta["dtypes"]

        def cast(x, i):
            return x.to(dtypes[i]) if x is not None and need[i] else None

        def back(x, i, squeeze=False):
            """(l, b, ...) -> the input's (b, ..., l) shape and dtype, as a view (no transposing copy)."""
            if not need[i]:
                return None
            x = x.movedim(0, -1)
            return (x.squeeze(1) if squeeze else x).to(dtypes[i])

        return (cast(du_nat, 0), back(ddt, 1), cast(dA, 2), back(dB, 3, meta["B3"]), back(dC, 4, meta["C3"]),
                cast(dD, 5), cast(dz, 6), cast(dbias, 7), None, None, None)


def selective_scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         chunk_size=DEFAULT_CHUNK_SIZE):
    """The pure-PyTorch backend (any device); ``chunk_size`` trades speed for saved memory."""
    return SelectiveScanTorchFn.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size,
                                      torch.is_grad_enabled())
