"""Selective scan, the S6 recurrence of Mamba, with one signature and several backends.

Per batch element and channel ``c`` (state size ``n``, group ``g(c) = c // (d // G)``)::

    delta_t = softplus(delta_t + delta_bias)          # each step optional
    h_t     = exp(delta_t * A) * h_{t-1} + delta_t * B_t[g(c)] * u_t     # h: (n,), fp32
    y_t     = sum_n C_t[g(c)] * h_t
    out_t   = (y_t + D * u_t) * silu(z_t)             # D and z optional

The signature and the semantics are those of mamba-ssm's ``selective_scan_fn`` (without
``return_last_state``), so the layers never care which backend runs:

- ``"ref"``: :func:`selective_scan_ref`, a plain loop over the sequence with autograd through it.
  Slow; it is the oracle every other backend is tested against.
- ``"torch"``: :class:`SelectiveScanTorchFn`, pure PyTorch (CPU, CUDA, anything). The forward runs the
  recurrence in chunks of ``T`` steps with in-place ops and keeps only the state at chunk boundaries;
  the backward recomputes one chunk at a time and walks the adjoint recurrence backwards.
  Activations never hold the (b, d, l, n) tensor of every state, only (b, d, l/T, n).
- ``"cpu"``: :func:`~localmamba.ops.selective_scan_cpu.selective_scan_cpu`, a fused C kernel for CPU tensors,
  forward and backward, compiled on first use with the system C compiler (``selective_scan_cpu.py``).
  fp64 inputs run the "torch" backend (the kernel computes in fp32).
- ``"cuda"``: mamba-ssm's fused kernel (``pip install mamba-ssm --no-build-isolation``).
- ``"triton"``: this package's Triton kernel (CUDA tensors; ``selective_scan_triton.py``).
- ``"auto"``: for CUDA tensors ``"cuda"`` when mamba-ssm imports, else ``"triton"``, else ``"torch"``; for
  CPU tensors ``"cpu"`` when its kernel builds, else ``"torch"`` (each fallback warns once).

Shapes (mamba-ssm's notation, ``r`` = real)::

    u, delta, z: r(b d l)    A: r(d n)    B, C: r(b n l) or r(b g n l)    D, delta_bias: r(d)

All arithmetic is in fp32 (fp64 for fp64 inputs) whatever the input dtype or autocast state; the
output has ``u.dtype``.
"""
from __future__ import annotations

import contextlib
import math
import warnings

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .selective_scan_cpu import CPU_KERNEL_INSTALL_HINT, _scan_cpu, cpu_kernel_available, cpu_kernel_error
from .selective_scan_triton import selective_scan_triton, triton_available

__all__ = [
    "selective_scan", "selective_scan_ref", "selective_scan_torch", "SelectiveScanTorchFn",
    "available_backends", "reads_time_major", "cpu_kernel_available", "BACKENDS", "DEFAULT_CHUNK_SIZE",
]

BACKENDS = ("auto", "ref", "torch", "cpu", "cuda", "triton")
#: Steps per chunk of the torch backend. Small chunks keep the (T, b, d, n) buffers in cache (6 MB each for
#: a LocalVim-T layer at T=8) and the saved boundary states at 1/T of all states. On a 2-core AMD EPYC,
#: T=6..8 ran fastest with the earlier layout (T=4: +10%, T=16: +15% forward time); with the channels-last
#: buffers, T=6 to 16 could not be told apart inside LocalVim-T.
DEFAULT_CHUNK_SIZE = 8

_CUDA_INSTALL_HINT = (
    "pip install mamba-ssm --no-build-isolation  (or the project extra: pip install -e .[cuda]); "
    "it needs a CUDA toolkit matching your PyTorch"
)


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
_mamba_fn = None          # mamba-ssm's selective_scan_fn once imported
_mamba_import_error = None  # the ImportError, once an import failed
_warned_fallback = False  # "auto" warned once that CUDA tensors fell back to torch
_warned_cpu_fallback = False  # "auto" warned once that CPU tensors fell back to torch


def _mamba_selective_scan_fn():
    """mamba-ssm's ``selective_scan_fn``, or None; imported lazily (it pulls in triton and CUDA)."""
    global _mamba_fn, _mamba_import_error
    if _mamba_fn is None and _mamba_import_error is None:
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
            _mamba_fn = selective_scan_fn
        except ImportError as e:  # not installed, or built against another torch/CUDA
            _mamba_import_error = e
    return _mamba_fn


def available_backends() -> list[str]:
    """Backends usable on this machine: always 'ref' and 'torch'; 'cpu' when its C kernel builds, 'cuda' with a
    GPU and mamba-ssm, 'triton' with a GPU and triton."""
    names = ["ref", "torch"]
    if cpu_kernel_available():
        names.append("cpu")
    if torch.cuda.is_available() and _mamba_selective_scan_fn() is not None:
        names.append("cuda")
    if triton_available():
        names.append("triton")
    return names


def _no_autocast(x: torch.Tensor):
    """Disable autocast for x's device, so that einsums/matmuls inside the op stay in fp32."""
    try:
        return torch.autocast(device_type=x.device.type, enabled=False)
    except RuntimeError:  # a device type without autocast support
        return contextlib.nullcontext()


def _compute_dtype(*tensors) -> torch.dtype:
    """fp32, or fp64 when any input is fp64 (so that gradcheck can run in double precision)."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def _check_inputs(u, delta, A, B, C, D, z, delta_bias):
    """Validate shapes (mamba-ssm conventions); return (b, d, l, n). Raise ValueError on mismatch."""
    def shape(t):
        return tuple(t.shape)

    if u.dim() != 3:
        raise ValueError(f"u must be (batch, dim, seqlen), got shape {shape(u)}")
    b, d, l = u.shape
    if shape(delta) != (b, d, l):
        raise ValueError(f"delta must have the shape of u {shape(u)}, got {shape(delta)}")
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"A must be (dim, dstate) = ({d}, n), got {shape(A)}")
    if A.is_complex():
        raise ValueError("complex A is not supported; A must be real (dim, dstate)")
    n = A.shape[1]
    for name, M in (("B", B), ("C", C)):
        if M.dim() == 3:
            if shape(M) != (b, n, l):
                raise ValueError(f"{name} must be (batch, dstate, seqlen) = {(b, n, l)} "
                                 f"or (batch, groups, dstate, seqlen), got {shape(M)}")
        elif M.dim() == 4:
            g = M.shape[1]
            if M.shape[0] != b or M.shape[2:] != (n, l) or g < 1:
                raise ValueError(f"{name} must be (batch, groups, dstate, seqlen) = {(b, 'g', n, l)}, "
                                 f"got {shape(M)}")
            if d % g != 0:
                raise ValueError(f"{name} has {g} groups, which does not divide dim={d}")
        else:
            raise ValueError(f"{name} must be (batch, dstate, seqlen) or (batch, groups, dstate, seqlen), "
                             f"got shape {shape(M)} (input-independent B/C are not supported)")
    if D is not None and shape(D) != (d,):
        raise ValueError(f"D must be (dim,) = ({d},), got {shape(D)}")
    if delta_bias is not None and shape(delta_bias) != (d,):
        raise ValueError(f"delta_bias must be (dim,) = ({d},), got {shape(delta_bias)}")
    if z is not None and shape(z) != (b, d, l):
        raise ValueError(f"z must have the shape of u {shape(u)}, got {shape(z)}")
    devices = {t.device for t in (u, delta, A, B, C, D, z, delta_bias) if t is not None}
    if len(devices) > 1:
        raise ValueError(f"all inputs must be on one device, got {sorted(map(str, devices))}")
    return b, d, l, n


# --------------------------------------------------------------------------------------------------
# "ref": the oracle
# --------------------------------------------------------------------------------------------------
def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False):
    """The oracle: mamba-ssm's ``selective_scan_ref`` (real A, variable B/C), a loop over seqlen.

    Autograd goes through the loop, so its backward stores every state; use it for tests only.
    Returns ``out: (b, d, l)`` in u.dtype, and ``last_state: (b, d, n)`` (fp32) if asked.
    """
    b, d, l, n = _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    dtype_in = u.dtype
    ct = _compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    with _no_autocast(u):
        u = u.to(ct)
        delta = delta.to(ct)
        if delta_bias is not None:
            delta = delta + delta_bias[:, None].to(ct)                  # (b, d, l)
        if delta_softplus:
            delta = F.softplus(delta)
        A = A.to(ct)
        # one (b, d, n, l) slice per channel: channel c reads group c // (d // g)
        B = B.to(ct).unsqueeze(1) if B.dim() == 3 else B.to(ct)        # (b, g, n, l)
        C = C.to(ct).unsqueeze(1) if C.dim() == 3 else C.to(ct)
        B = B.repeat_interleave(d // B.shape[1], dim=1)                 # (b, d, n, l)
        C = C.repeat_interleave(d // C.shape[1], dim=1)                 # (b, d, n, l)
        deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))      # (b, d, l, n)
        deltaB_u = torch.einsum("bdl,bdnl,bdl->bdln", delta, B, u)      # (b, d, l, n)
        x = u.new_zeros((b, d, n))                                      # (b, d, n)
        ys = []
        for i in range(l):
            x = deltaA[:, :, i] * x + deltaB_u[:, :, i]                 # (b, d, n)
            ys.append(torch.einsum("bdn,bdn->bd", x, C[:, :, :, i]))    # (b, d)
        y = torch.stack(ys, dim=2)                                      # (b, d, l)
        out = y if D is None else y + u * D[:, None].to(ct)
        if z is not None:
            out = out * F.silu(z.to(ct))
        out = out.to(dtype_in)
    return (out, x) if return_last_state else out


# --------------------------------------------------------------------------------------------------
# "torch": chunked recurrence with a hand-written backward
# --------------------------------------------------------------------------------------------------
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

    dt, dtu: (T, b, d); A2 = A*log2(e) as (G, n, d/G) (exp2 is about twice as fast as exp on CPU, and
    exp2(delta*A*log2 e) = exp(delta*A) with one extra rounding); Bt: (T, b, G, n);
    a, x: (T, b, G, n, d/G), written in place. Channels innermost, so every op runs along d/G contiguous
    floats rather than along n.
    """
    T, b, G, n, dG = a.shape
    torch.mul(dt.view(T, b, G, 1, dG), A2, out=a)                       # (T, b, G, n, d/G)
    a.exp2_()
    torch.mul(dtu.view(T, b, G, 1, dG), Bt[..., None], out=x)           # (T, b, G, n, d/G)


def _recurrence(a, h, steps, prev):
    """In place: h[t] <- a[t] * h[t-1] + h[t] for t < steps, where h[-1] = prev (None: zero, the first chunk).

    a, h: sequences of (b, G, n, d/G) views (``unbind`` of the chunk buffers, made once: indexing a tensor
    in the loop would cost a view per step); prev: the state before the chunk, or None.
    """
    if prev is not None:
        h[0].addcmul_(a[0], prev)                                        # (b, G, n, d/G)
    for t in range(1, steps):
        h[t].addcmul_(a[t], h[t - 1])                                    # (b, G, n, d/G)


def _contract_state(h, v, out):
    """out[t, b, c] = sum_n h[t, b, G(c), n, c'] * v[t, b, G(c), n], as one batched (1, n) @ (n, d/G) matmul.

    h: (T, b, G, n, d/G); v: (T, b, G, n); out: (T, b, d), written in place.
    """
    T, b, G, n, dG = h.shape
    torch.bmm(v.reshape(T * b * G, 1, n), h.view(T * b * G, n, dG),
              out=out.view(T * b * G, 1, dG))                            # (T*b*G, 1, d/G)


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
        b, d, l, n = _check_inputs(u, delta, A, B, C, D, z, delta_bias)
        ct = _compute_dtype(u, delta, A, B, C, D, z, delta_bias)
        T = max(1, min(int(chunk_size), l))
        gB, gC = (M.shape[1] if M.dim() == 4 else 1 for M in (B, C))
        G = math.lcm(gB, gC)
        dG = d // G
        training = grad_enabled and any(ctx.needs_input_grad[:8])     # else nothing needs saving
        need_ddelta = training and (ctx.needs_input_grad[1] or ctx.needs_input_grad[7])
        with _no_autocast(u), torch.no_grad():
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
            # every chunk's operands as views made once, in the shapes of the ops below (the bodies of
            # _decay_and_input and _contract_state, inlined): slicing and reshaping them chunk by chunk in
            # the loop cost about 0.5 ms of a 9 ms LocalVim-T layer on CPU
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
                torch.mul(dt_c[c], A2, out=ac).exp2_()                   # exp(delta*A)
                torch.mul(dtu_c[c], B_c[c], out=hc)                      # delta*B*u
                _recurrence(a_steps, h_c, Tc, prev)
                torch.bmm(C_c[c], hc.view(-1, n, dG), out=y_c[c])        # (Tc*b*G, 1, d/G)
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
        with _no_autocast(dt):
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
                _decay_and_input(dt[t0:t1], dtu[:Tc], A2, Bt[t0:t1], ac, hc)
                _recurrence(a_steps, h_steps[1:], Tc, hs[0])
                if y is not None:
                    _contract_state(hc, Ct[t0:t1], y[t0:t1])             # (Tc, b, d)
                # dC_t = sum over the group's channels of dy_t * h_t
                _contract_channels(dy[t0:t1], hc, dC[t0:t1])
                # adjoint recurrence: dh_t = C_t*dy_t + a_{t+1}*dh_{t+1}
                torch.mul(dy[t0:t1].view(Tc, b, G, 1, dG), Ct[t0:t1, ..., None], out=dhc)  # (Tc, b, G, n, d/G)
                dhc[-1].add_(carry)
                for t in range(Tc - 2, -1, -1):
                    dh_steps[t].addcmul_(a_steps[t + 1], dh_steps[t + 1])  # (b, G, n, d/G)
                # input x_t = delta_t*B_t*u_t: du = delta*(dh.B), ddelta = u*(dh.B), dB = sum_c dh*delta*u
                _contract_state(dhc, Bt[t0:t1], qc)                      # (Tc, b, d)
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


# --------------------------------------------------------------------------------------------------
# "cuda": mamba-ssm
# --------------------------------------------------------------------------------------------------
def _selective_scan_cuda(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """mamba-ssm's kernel; casts to the dtypes it accepts (delta, z like u; A, D, delta_bias fp32)."""
    fn = _mamba_selective_scan_fn()
    if fn is None:
        raise RuntimeError(f"backend='cuda' needs mamba-ssm, which failed to import "
                           f"({_mamba_import_error}). Install it with: {_CUDA_INSTALL_HINT}")
    if u.device.type != "cuda":
        raise ValueError(f"backend='cuda' needs CUDA tensors, got u on {u.device}; "
                         f"use backend='torch' (or 'auto') on other devices")
    f32 = torch.float32
    delta = delta.to(u.dtype)
    z = z.to(u.dtype) if z is not None else None
    B = B if B.dtype in (f32, u.dtype) else B.to(u.dtype)
    C = C if C.dtype in (f32, u.dtype) else C.to(u.dtype)
    D = D.to(f32) if D is not None else None
    delta_bias = delta_bias.to(f32) if delta_bias is not None else None
    if delta_bias is not None and not delta_softplus:
        # mamba-ssm's backward pads the last chunk with delta = 0 + delta_bias instead of 0, so that
        # exp(delta*A) != 1 past the end and the gradients are wrong when l is not a multiple of the chunk
        # (state-spaces/mamba#368; measured here on an H200, mamba-ssm 2.3.2.post1): add the bias ourselves
        delta, delta_bias = (delta.to(f32) + delta_bias[:, None]).to(u.dtype), None  # (B, D, L)
    return fn(u, delta, A.to(f32), B, C, D, z, delta_bias, delta_softplus)


# --------------------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------------------
def _resolve_backend(backend: str, is_cuda: bool, on_cpu: bool = True) -> str:
    """Map "auto" to a concrete backend; warn once when CUDA tensors cannot use mamba-ssm, and once when CPU
    tensors cannot use the C kernel (unless LOCALMAMBA_CPU_KERNEL=0 turned it off on purpose). Tensors on
    other devices (meta, mps, ...) and torch.jit traces, which cannot see the C kernel's writes, get "torch"."""
    global _warned_fallback, _warned_cpu_fallback
    if backend not in BACKENDS:
        raise ValueError(f"unknown selective-scan backend {backend!r}; choose one of {list(BACKENDS)}")
    if backend != "auto":
        return backend
    if not is_cuda:
        if not on_cpu or torch.jit.is_tracing():
            return "torch"
        err = cpu_kernel_error()
        if err is None:
            return "cpu"
        if not _warned_cpu_fallback and "LOCALMAMBA_CPU_KERNEL" not in err:
            _warned_cpu_fallback = True
            warnings.warn(f"the selective scan's C kernel is unavailable ({err}), so CPU tensors use the slower "
                          f"pure-PyTorch backend. To build it, {CPU_KERNEL_INSTALL_HINT}", RuntimeWarning,
                          stacklevel=3)
        return "torch"
    if _mamba_selective_scan_fn() is not None:
        return "cuda"
    fallback = "triton" if triton_available() else "torch"
    if not _warned_fallback:
        _warned_fallback = True
        what = ("this package's Triton kernel" if fallback == "triton" else "the slower pure-PyTorch backend")
        warnings.warn(f"mamba-ssm is not importable, so the selective scan of CUDA tensors uses {what}. "
                      f"For mamba-ssm's fused kernel: {_CUDA_INSTALL_HINT}", RuntimeWarning, stacklevel=3)
    return fallback


def reads_time_major(backend: str, device: torch.device | str) -> bool:
    """Whether ``backend`` on ``device`` is fastest on time-major inputs ((b, d, l) views of storage with
    the channels innermost): the torch scan and the Triton kernel are; mamba-ssm's kernel ("cuda") wants
    (b, d, l) contiguous and the "ref" loop does not care. The C kernel ("cpu") reads any layout with the
    channels innermost as whole vectors. Layers pick their layout with it."""
    device = torch.device(device)
    return _resolve_backend(backend, device.type == "cuda", device.type == "cpu") in ("torch", "cpu", "triton")


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   backend="auto"):
    """Selective scan with mamba-ssm's ``selective_scan_fn`` signature; returns out: (b, d, l) in u.dtype.

    backend: one of :data:`BACKENDS` (see the module docstring); "auto" picks the fastest that runs here.
    """
    backend = _resolve_backend(backend, u.is_cuda, u.device.type == "cpu")
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    if backend == "cpu":
        if u.device.type == "cpu" and _compute_dtype(u, delta, A, B, C, D, z, delta_bias) == torch.float64:
            # the C kernel computes in fp32; fp64 (gradcheck) keeps its precision with "torch"
            return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        return _scan_cpu(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    if backend == "torch":
        return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    if backend == "cuda":
        return _selective_scan_cuda(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    if backend == "triton":
        return selective_scan_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
