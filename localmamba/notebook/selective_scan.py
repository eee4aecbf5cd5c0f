"""Notebook 02 (the selective scan): zero-order-hold discretisation, impulse responses of a one-channel
scan (time-invariant and selective), and the backends' agreement with the reference and speed.

Numbers first (numpy arrays, pandas DataFrames), then the plots that show them.
"""
from __future__ import annotations

import time
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import FormatStrFormatter, LogLocator

from ..ops import available_backends, selective_scan, selective_scan_ref
from .common import plain_log_axis

__all__ = ["zoh_discretize", "impulse_response", "plot_zoh", "plot_impulse_responses",
           "compare_backends", "time_backends", "plot_backend_timings"]

# --------------------------------------------------------------------------------------------------
# The state-space recurrence
# --------------------------------------------------------------------------------------------------

def zoh_discretize(A, B, delta):
    """Discretise h' = A h + B x with step delta, elementwise (numpy arrays or floats).

    Returns ``(A_bar, B_bar_zoh, B_bar_mamba)``: the exact zero-order hold
    ``A_bar = exp(delta A)``, ``B_bar = (exp(delta A) - 1) / A * B`` (-> delta B as A -> 0), and the
    simplification Mamba's kernels use, ``B_bar ~ delta B``.
    """
    A, B, delta = (np.asarray(v, dtype=float) for v in (A, B, delta))
    dA = delta * A
    A_bar = np.exp(dA)
    # (exp(dA) - 1) / A = delta * expm1(dA) / dA, with the limit delta when dA -> 0
    safe = np.where(dA == 0, 1.0, dA)
    ratio = np.where(dA == 0, 1.0, np.expm1(safe) / safe)
    return A_bar, delta * ratio * B, delta * B


def impulse_response(A: float, delta, length: int = 48, impulse_at: int | Sequence[int] = 4, B=1.0,
                     C=1.0, D: float = 0.0, u=None, backend: str = "ref") -> np.ndarray:
    """Output y_t of a one-channel, one-state selective scan driven by unit impulses.

    The input is 1 at step(s) ``impulse_at`` and 0 elsewhere (or ``u``, a length-``length`` array, if
    given). ``delta``, ``B`` and ``C`` are each a scalar (a plain, time-invariant SSM) or a
    length-``length`` array (the selective case: e.g. a spike of delta at one step overwrites the state
    there, B_t = 0 ignores the input at step t, C_t = 0 hides the state from the output). Runs
    :func:`localmamba.ops.selective_scan` with ``backend``, in float64. With B = C = 1 and D = 0, y_t is
    the state h_t.
    """
    if u is None:
        steps = np.atleast_1d(impulse_at)
        if ((steps < 0) | (steps >= length)).any():
            raise ValueError(f"impulse_at must be in [0, {length}), got {impulse_at}")
        u = np.zeros(length)
        u[steps] = 1.0
    u = np.asarray(u, dtype=np.float64)
    length = u.size

    def seq(v, name):  # a scalar or a length-l array -> (1, 1, l) float64 tensor
        a = np.asarray(v, dtype=np.float64)
        if a.ndim and a.shape != (length,):
            raise ValueError(f"{name} must be a scalar or have length {length}, got shape {a.shape}")
        return torch.as_tensor(np.broadcast_to(a, (length,)).copy()).view(1, 1, length)

    A_ = torch.tensor([[float(A)]], dtype=torch.float64)  # (d=1, n=1)
    D_ = torch.tensor([float(D)], dtype=torch.float64)  # (d,)
    with torch.no_grad():
        y = selective_scan(seq(u, "u"), seq(delta, "delta"), A_, seq(B, "B"), seq(C, "C"),
                           D=D_, backend=backend)  # u, delta: (b=1, d=1, l); B, C: (b=1, n=1, l)
    return y.view(-1).double().numpy()


def plot_zoh(A: float = -1.0, B: float = 1.0, deltas=None, ax: plt.Axes | None = None,
             title: str | None = None) -> plt.Axes:
    """A_bar = exp(delta A) and the two B_bar of :func:`zoh_discretize`
    (exact zero-order hold and Mamba's delta B) against the step delta."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.2))
    deltas = np.linspace(0, 3, 121) if deltas is None else np.asarray(deltas, dtype=float)
    A_bar, B_zoh, B_mamba = zoh_discretize(A, B, deltas)
    ax.plot(deltas, A_bar, lw=2, label="A_bar = exp(delta A): share of the state kept")
    ax.plot(deltas, B_zoh, lw=2, label="B_bar, exact ZOH = (exp(delta A) - 1) / A * B")
    ax.plot(deltas, B_mamba, lw=2, ls="--", label="B_bar ~ delta B (Mamba's simplification)")
    ax.set_xlabel("step delta")
    ax.set_ylabel("value")
    ax.set_ylim(0, max(1.05, float(np.max(B_zoh)) * 1.1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or f"Zero-order hold discretisation (A = {A:g}, B = {B:g})")
    return ax


def plot_impulse_responses(responses: Mapping[str, np.ndarray], ax: plt.Axes | None = None,
                           impulse_at: int | Sequence[int] | None = None,
                           events: Mapping[str, int] | None = None, title: str | None = None,
                           ylabel: str = "output y_t (= state h_t)", marker: str | None = ".",
                           styles: Mapping[str, dict] | None = None, logy: bool = False) -> plt.Axes:
    """One curve per labelled response (e.g. from :func:`impulse_response`);
    dotted lines at the impulse step(s) and at labelled ``events`` (e.g. a delta spike).

    ``styles`` maps a label to extra ``ax.plot`` keyword arguments (e.g. a thick grey reference
    curve); ``logy`` puts the output on a log scale (zeros are then not drawn)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    for label, y in responses.items():
        kw = dict(marker=marker, ms=4, lw=1.5)
        kw.update((styles or {}).get(label, {}))
        ax.plot(np.arange(len(y)), y, label=label, **kw)
    if logy:
        plain_log_axis(ax.yaxis)
        ax.yaxis.set_major_locator(LogLocator(base=10, numticks=12))  # one tick per decade
    if impulse_at is not None:
        for k, t in enumerate(np.atleast_1d(impulse_at)):
            ax.axvline(t, color="0.4", ls=":", lw=1.2, label="input impulse" if k == 0 else None)
    for k, (name, t) in enumerate((events or {}).items()):
        ax.axvline(t, color=f"C{(k + 5) % 10}", ls="--", lw=1.2, label=name)
    ax.set_xlabel("step t")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax


# --------------------------------------------------------------------------------------------------
# Backends: agreement with the reference and speed
# --------------------------------------------------------------------------------------------------

def _random_scan_inputs(b: int, d: int, n: int, l: int, *, dtype=torch.float32, device="cpu",
                        seed: int = 0, with_D: bool = True, with_z: bool = True,
                        with_delta_bias: bool = True, groups: int | None = None) -> dict:
    """Mamba-like random inputs: A = -exp(.) (stable), delta ~ softplus-range values."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype)

    bc_shape = (b, groups, n, l) if groups else (b, n, l)  # grouped: channel c reads group c // (d // g)
    inputs = {
        "u": r(b, d, l),  # (b, d, l)
        "delta": r(b, d, l, scale=0.5),  # (b, d, l), softplus'ed below
        "A": -torch.exp(r(d, n, scale=0.5)),  # (d, n), negative: a decaying state
        "B": r(*bc_shape),
        "C": r(*bc_shape),
    }
    if with_D:
        inputs["D"] = r(d)  # (d,)
    if with_z:
        inputs["z"] = r(b, d, l)  # (b, d, l)
    if with_delta_bias:
        inputs["delta_bias"] = r(d, scale=0.5)  # (d,)
    return inputs


def compare_backends(backends: Sequence[str] | None = None, b: int = 2, d: int = 4, n: int = 8,
                     l: int = 64, dtype=torch.float32, device=None, seed: int = 0,
                     groups: int | None = None) -> "pd.DataFrame":
    """Max |backend - ref| of the output and of every input's gradient, one row per backend.

    Inputs are random (with D, z, delta_bias and delta_softplus=True, the way Mamba calls the op);
    the reference runs in float64 on the CPU, so the ``ref`` row shows the error of ``dtype`` itself.
    With ``groups`` = g, B and C are (b, g, n, l) (d must be a multiple of g).
    The upstream gradient is a fixed random tensor. Backends run on ``device`` (default: CUDA for
    the GPU kernels 'cuda' and 'triton', the CPU for the others).
    """
    import pandas as pd

    backends = list(available_backends() if backends is None else backends)
    if groups and d % groups:
        raise ValueError(f"d = {d} must be a multiple of groups = {groups}")
    base = _random_scan_inputs(b, d, n, l, dtype=torch.float64, seed=seed, groups=groups)
    grad_out = torch.randn(b, d, l, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)

    def run(fn, inputs):
        leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()}
        out = fn(**leaves, delta_softplus=True)  # (b, d, l)
        out.backward(grad_out.to(out.device, out.dtype))
        return out.detach().double().cpu(), {k: v.grad.double().cpu() for k, v in leaves.items()}

    ref_out, ref_grads = run(selective_scan_ref, base)
    rows = []
    for be in backends:
        dev = device or ("cuda" if be in GPU_BACKENDS else "cpu")
        cast = {k: v.to(device=dev, dtype=dtype) for k, v in base.items()}
        out, grads = run(lambda **kw: selective_scan(**kw, backend=be), cast)
        row = {"backend": be, "out": (out - ref_out).abs().max().item()}
        for k in base:
            row[f"d{k}"] = (grads[k] - ref_grads[k]).abs().max().item()
        rows.append(row)
    return pd.DataFrame(rows).set_index("backend")


#: Backends that take CUDA tensors only (mamba-ssm's kernel, the Triton kernel) and CPU tensors only (the C kernel).
GPU_BACKENDS = ("cuda", "triton")
CPU_BACKENDS = ("cpu",)


def _runs_on(backend: str, device) -> bool:
    on_cuda = torch.device(device).type == "cuda"
    return on_cuda if backend in GPU_BACKENDS else not on_cuda if backend in CPU_BACKENDS else True


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_backends(backends: Sequence[str] | None = None, lengths: Sequence[int] = (16, 32, 64, 128, 256),
                  b: int = 1, d: int = 16, n: int = 8, repeat: int = 5, warmup: int = 1,
                  backward: bool = False, dtype=torch.float32, devices: Sequence[str] | None = None,
                  threads: int | None = None, progress: bool = True) -> "pd.DataFrame":
    """Wall-clock time of ``selective_scan`` per backend, device and sequence length.

    ``devices`` defaults to the CPU, plus CUDA when a GPU is present; the GPU kernels ('cuda', 'triton')
    run on CUDA only and the C kernel ('cpu') on the CPU only. Returns a long DataFrame with columns ``backend``, ``device``, ``length``, ``ms`` (median over
    ``repeat`` calls after ``warmup`` calls), ``ms_min``, ``tokens_per_s`` (b*l / median time) and
    ``threads`` (PyTorch's CPU threads). With
    ``backward=True`` a call is forward + backward. ``threads`` sets PyTorch's CPU threads for the
    measurement (restored afterwards); the default keeps the current setting. The ``ref`` backend's
    many tiny ops are sensitive to it when other processes share the cores.
    """
    import pandas as pd

    backends = list(available_backends() if backends is None else backends)
    if devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    jobs = [(be, dev, l) for be in backends for dev in devices for l in lengths
            if _runs_on(be, dev)]
    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        rows = _time_jobs(jobs, b, d, n, repeat, warmup, backward, dtype, progress)
    finally:
        torch.set_num_threads(saved_threads)
    return pd.DataFrame(rows, columns=["backend", "device", "length", "ms", "ms_min", "tokens_per_s", "threads"])


def _time_jobs(jobs, b, d, n, repeat, warmup, backward, dtype, progress) -> list[dict]:
    from tqdm.auto import tqdm


    rows = []
    for be, dev, l in tqdm(jobs, desc="timing backends", disable=not progress):
        inputs = _random_scan_inputs(b, d, n, l, dtype=dtype, device=dev)
        if backward:
            inputs = {k: v.requires_grad_(True) for k, v in inputs.items()}

        def call():
            out = selective_scan(**inputs, delta_softplus=True, backend=be)
            if backward:
                out.sum().backward()

        times = []
        with torch.enable_grad() if backward else torch.no_grad():
            for i in range(warmup + repeat):
                _sync(dev)
                t0 = time.perf_counter()
                call()
                _sync(dev)
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
        ms = 1e3 * float(np.median(times))
        rows.append({"backend": be, "device": str(dev), "length": l, "ms": ms,
                     "ms_min": 1e3 * min(times), "tokens_per_s": b * l / (ms / 1e3),
                     "threads": torch.get_num_threads()})
    return rows


def plot_backend_timings(timings, ax: plt.Axes | None = None, title: str | None = None) -> plt.Axes:
    """ms per call against sequence length, one line per (backend, device), log-log, from
    :func:`time_backends`."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    for (be, dev), grp in timings.groupby(["backend", "device"], sort=False):
        grp = grp.sort_values("length")
        ax.plot(grp["length"], grp["ms"], marker="o", lw=1.8, label=f"{be} ({dev})")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FormatStrFormatter("%d"))
    ax.set_xticks(sorted(timings["length"].unique()))
    plain_log_axis(ax.yaxis)
    ax.set_xlabel("sequence length l")
    ax.set_ylabel("time per call (ms, median)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(title="backend")
    ax.set_title(title or "selective_scan speed by backend")
    return ax
