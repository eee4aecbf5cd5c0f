"""Measurements behind the notebooks: scan locality, padding cost, impulse responses, backend timings,
model size and cost, direction-merge gates, effective receptive fields.

Everything here returns plain numbers, numpy arrays or pandas DataFrames; the plots that show them
live in :mod:`localmamba.viz`.

Scan locality (the paper's motivation). A scan direction turns the HxW token grid into a sequence;
``t(p)`` is the step at which token ``p`` is visited. Two tokens that touch in 2-D (4-neighbours)
end up ``|t(p) - t(q)|`` steps apart in 1-D. A row-major scan keeps horizontal neighbours 1 apart but
puts vertical neighbours W apart; a windowed scan (``wK``) keeps every neighbour pair inside a window
close, at the price of a few long jumps across window borders. A layer that scans in several
directions sees each pair at the smallest distance over its directions.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np
import torch

from .models import model_from_arch  # noqa: F401  (re-exported for notebook 03)
from .models.local_vim import LOCAL_VIM_DIRECTIONS, LocalVim
from .scan import parse_direction, scan_length, scan_positions

__all__ = [
    "direction_label", "sequence_positions", "neighbour_pairs", "neighbour_distances",
    "neighbour_distance_stats", "neighbourhood_span",
    "neighbourhood_span_stats", "padding_overhead", "padding_overhead_table",
    "zoh_discretize", "impulse_response", "compare_backends", "time_backends",
    "model_summary", "MergeGates", "merge_gates", "gate_summary", "ErfModels", "erf_models",
    "effective_receptive_field", "erf_stats",
    "model_from_arch", "top_k",
]

def _as_set(directions) -> tuple[str, ...]:
    """A direction, or a layer's set of directions, as a non-empty tuple of validated names."""
    ds = (directions,) if isinstance(directions, str) else tuple(directions)
    if not ds:
        raise ValueError("need at least one direction")
    for d in ds:
        parse_direction(d)  # raises a ValueError that names the grammar
    return ds


def direction_label(directions) -> str:
    """'h' for one direction, 'h+h_flip+w2+w2_flip' for a layer's set."""
    return "+".join(_as_set(directions))


# --------------------------------------------------------------------------------------------------
# Scan locality
# --------------------------------------------------------------------------------------------------

def sequence_positions(direction: str, H: int, W: int) -> np.ndarray:
    """t(p): the step at which each token is visited, as an (H, W) int array (padding included in steps)."""
    return scan_positions(direction, H, W).numpy().reshape(H, W)


def neighbour_pairs(H: int, W: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All 4-neighbour pairs of an HxW grid as (p, q, axis).

    p, q are row-major token indices; horizontal pairs (p, p+1) come first, then vertical (p, p+W);
    ``axis`` is 'h' or 'v' for each pair. There are H*(W-1) + (H-1)*W pairs.
    """
    idx = np.arange(H * W).reshape(H, W)
    hp, hq = idx[:, :-1].ravel(), idx[:, 1:].ravel()  # left-right pairs
    vp, vq = idx[:-1, :].ravel(), idx[1:, :].ravel()  # top-bottom pairs
    axis = np.array(["h"] * hp.size + ["v"] * vp.size)
    return np.concatenate([hp, vp]), np.concatenate([hq, vq]), axis


def neighbour_distances(directions, H: int, W: int) -> np.ndarray:
    """|t(p) - t(q)| for every 4-neighbour pair (in :func:`neighbour_pairs` order).

    ``directions`` is one direction ('w2') or a layer's set (('h', 'h_flip', 'w2', 'w2_flip')); for a
    set, each pair's distance is the minimum over the directions (the closest any scan brings them).
    """
    p, q, _ = neighbour_pairs(H, W)
    dist = None
    for d in _as_set(directions):
        t = sequence_positions(d, H, W).ravel()
        dd = np.abs(t[p] - t[q])
        dist = dd if dist is None else np.minimum(dist, dd)
    return dist


def neighbour_distance_stats(directions: Iterable, H: int, W: int,
                             percentiles: Sequence[float] = (50, 90)) -> "pd.DataFrame":
    """One row per entry of ``directions`` (a direction or a tuple = a layer's set) with the distance
    statistics of its 4-neighbour pairs on an HxW grid.

    Columns: ``mean``, ``p50``/``p90``/... (``percentiles``), ``max``, ``mean_h`` and ``mean_v`` (horizontal
    and vertical pairs only), ``frac_le_2`` (share of pairs at most 2 steps apart) and ``seq_len``.
    """
    import pandas as pd

    if isinstance(directions, str):
        directions = [directions]
    _, _, axis = neighbour_pairs(H, W)
    rows = []
    for ds in directions:
        dist = neighbour_distances(ds, H, W)
        row = {"directions": direction_label(ds), "mean": dist.mean()}
        for pc in percentiles:
            row[f"p{pc:g}"] = float(np.percentile(dist, pc))
        row["max"] = int(dist.max())
        row["mean_h"] = dist[axis == "h"].mean() if (axis == "h").any() else float("nan")
        row["mean_v"] = dist[axis == "v"].mean() if (axis == "v").any() else float("nan")
        row["frac_le_2"] = float((dist <= 2).mean())
        row["seq_len"] = max(scan_length(d, H, W) for d in _as_set(ds))
        rows.append(row)
    return pd.DataFrame(rows).set_index("directions")


def neighbourhood_span(directions, H: int, W: int, connectivity: int = 8) -> np.ndarray:
    """(H, W) map: for each token, how many steps a scan must carry it to reach *all* its neighbours.

    For one direction, the span of token p is max |t(p) - t(q)| over its 4- or 8-neighbours q (the
    3x3 square when ``connectivity=8``): the memory a causal scan needs to relate p to its whole local
    neighbourhood. For a layer's set of directions, it is the minimum over the directions (the best
    single scan for that token). Unlike the pairwise minimum of :func:`neighbour_distances`, a set such
    as ('h', 'v') does not get span 1: no single one of its scans keeps a token's 3x3 neighbourhood close.
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    offsets = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if connectivity == 8:
        offsets += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    best = None
    for d in _as_set(directions):
        t = sequence_positions(d, H, W)  # (H, W)
        span = np.zeros((H, W), dtype=np.int64)
        for di, dj in offsets:
            # token (i, j) against its neighbour (i + di, j + dj), where that neighbour exists
            i0, i1 = max(0, -di), min(H, H - di)
            j0, j1 = max(0, -dj), min(W, W - dj)
            if i0 >= i1 or j0 >= j1:
                continue
            diff = np.abs(t[i0:i1, j0:j1] - t[i0 + di:i1 + di, j0 + dj:j1 + dj])
            span[i0:i1, j0:j1] = np.maximum(span[i0:i1, j0:j1], diff)
        best = span if best is None else np.minimum(best, span)
    return best


def neighbourhood_span_stats(directions: Iterable, H: int, W: int, connectivity: int = 8,
                             percentiles: Sequence[float] = (50, 90)) -> "pd.DataFrame":
    """Statistics over tokens of :func:`neighbourhood_span`, one row per direction or layer set.

    Columns: ``mean``, ``p50``/``p90``/... (``percentiles``), ``max``.
    """
    import pandas as pd

    if isinstance(directions, str):
        directions = [directions]
    rows = []
    for ds in directions:
        span = neighbourhood_span(ds, H, W, connectivity)
        row = {"directions": direction_label(ds), "mean": span.mean()}
        for pc in percentiles:
            row[f"p{pc:g}"] = float(np.percentile(span, pc))
        row["max"] = int(span.max())
        rows.append(row)
    return pd.DataFrame(rows).set_index("directions")


def padding_overhead(direction: str, H: int, W: int) -> float:
    """Scanned length / number of tokens: 1.0 unless a 'wK' grid is padded (w7 on 12x12: 196/144)."""
    return scan_length(direction, H, W) / (H * W)


def padding_overhead_table(directions: Sequence[str], sizes: Iterable[int]) -> "pd.DataFrame":
    """Padding overhead of each direction (columns) on square grids of each size (rows, index 'grid')."""
    import pandas as pd

    sizes = list(sizes)
    data = {d: [padding_overhead(d, s, s) for s in sizes] for d in directions}
    return pd.DataFrame(data, index=pd.Index(sizes, name="grid"))


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
    from .ops import selective_scan

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
    'cuda', the CPU for the others).
    """
    import pandas as pd
    from .ops import available_backends, selective_scan, selective_scan_ref

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
        dev = device or ("cuda" if be == "cuda" else "cpu")
        cast = {k: v.to(device=dev, dtype=dtype) for k, v in base.items()}
        out, grads = run(lambda **kw: selective_scan(**kw, backend=be), cast)
        row = {"backend": be, "out": (out - ref_out).abs().max().item()}
        for k in base:
            row[f"d{k}"] = (grads[k] - ref_grads[k]).abs().max().item()
        rows.append(row)
    return pd.DataFrame(rows).set_index("backend")


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_backends(backends: Sequence[str] | None = None, lengths: Sequence[int] = (16, 32, 64, 128, 256),
                  b: int = 1, d: int = 16, n: int = 8, repeat: int = 5, warmup: int = 1,
                  backward: bool = False, dtype=torch.float32, devices: Sequence[str] | None = None,
                  threads: int | None = None, progress: bool = True) -> "pd.DataFrame":
    """Wall-clock time of ``selective_scan`` per backend, device and sequence length.

    ``devices`` defaults to the CPU, plus CUDA when a GPU is present; the 'cuda' backend runs on CUDA
    only. Returns a long DataFrame with columns ``backend``, ``device``, ``length``, ``ms`` (median over
    ``repeat`` calls after ``warmup`` calls), ``ms_min``, ``tokens_per_s`` (b*l / median time) and
    ``threads`` (PyTorch's CPU threads). With
    ``backward=True`` a call is forward + backward. ``threads`` sets PyTorch's CPU threads for the
    measurement (restored afterwards); the default keeps the current setting. The ``ref`` backend's
    many tiny ops are sensitive to it when other processes share the cores.
    """
    import pandas as pd
    from .ops import available_backends

    backends = list(available_backends() if backends is None else backends)
    if devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    jobs = [(be, dev, l) for be in backends for dev in devices for l in lengths
            if be != "cuda" or torch.device(dev).type == "cuda"]  # the fused kernel needs CUDA tensors
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
    from .ops import selective_scan

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


# --------------------------------------------------------------------------------------------------
# Models: size and cost, direction merges, effective receptive fields, checkpoints
# --------------------------------------------------------------------------------------------------

def model_summary(names: Sequence[str], img_size: int = 224, flops: bool | Iterable[str] = True,
                  progress: bool = True) -> "pd.DataFrame":
    """Build each registered model ``name`` (random weights) and tabulate its size and cost next to
    the paper's numbers (:data:`localmamba.models.flops.PAPER`).

    Columns: ``family``, ``layers`` (LocalVim layers or LocalVMamba blocks), ``directions/layer``
    (K; 'search' for a supernet over the 8 candidates), ``params (M)``, ``paper params (M)``,
    ``FLOPs (G)`` (:func:`localmamba.models.flops.paper_flops` at ``img_size``) and ``paper FLOPs (G)``.
    ``flops`` is True (count all), False (none) or the names to count: LocalVMamba FLOPs go through
    fvcore, which traces a full forward pass (minutes on a laptop CPU at 224); LocalVim's come from a
    formula and are instant. Uncounted or unreported values are NaN.
    """
    import pandas as pd
    import timm
    from tqdm.auto import tqdm

    from .models.flops import PAPER, count_params, paper_flops

    names = list(names)
    count = set(names) if flops is True else set() if flops is False else set(flops)
    rows = []
    for name in tqdm(names, desc="building models", disable=not progress):
        model = timm.create_model(name)
        sets = list(model.directions)  # one entry per layer (LocalVim) or block (LocalVMamba); None = search
        ks = {"search" if d is None else len(d) for d in sets}
        paper_params, paper_gflops = PAPER.get(name, (None, None))
        rows.append({
            "model": name,
            "family": type(model).__name__,
            "layers": len(sets),
            "directions/layer": ks.pop() if len(ks) == 1 else "/".join(map(str, sorted(ks, key=str))),
            "params (M)": count_params(model) / 1e6,
            "paper params (M)": float("nan") if paper_params is None else paper_params,
            "FLOPs (G)": paper_flops(model, img_size) / 1e9 if name in count else float("nan"),
            "paper FLOPs (G)": float("nan") if paper_gflops is None else paper_gflops,
        })
        del model
    return pd.DataFrame(rows).set_index("model")


@dataclass
class MergeGates:
    """The channel-attention gates of one layer's direction merge, for a batch of inputs.

    ``gates`` (B, K, C): the gate sigmoid(...) that multiplies direction k's output, channel c, before
    the sum over directions (:meth:`localmamba.layers.ChannelAttention.gate`); one per image, shared by
    all tokens. ``directions``: the K directions, in the merge's order.
    """
    layer: str
    directions: tuple[str, ...]
    gates: np.ndarray

    def mean(self) -> np.ndarray:
        """Gates averaged over the batch: (K, C)."""
        return self.gates.mean(0)


def merge_gates(model: torch.nn.Module, images: torch.Tensor) -> list[MergeGates]:
    """Run ``model`` on ``images`` (B, 3, H, W) once and return the merge gates of every layer.

    A forward hook on each :class:`localmamba.layers.DirectionMerge` captures its input, the K
    directions' outputs already reversed to token order (B, K, T, C), and evaluates the merge's
    channel attention gate on it. Works for LocalVim (``layers.i.mixer.merge``) and LocalVMamba
    (``layers.s.blocks.j.op.merge``), search supernets included.
    """
    from .layers import DirectionMerge

    modules = dict(model.named_modules())
    captured: list[MergeGates] = []
    handles = []
    for name, module in modules.items():
        if not isinstance(module, DirectionMerge):
            continue
        parent = modules[name.rsplit(".", 1)[0]] if "." in name else model
        directions = tuple(getattr(parent, "directions", tuple(f"dir{k}" for k in range(module.num_directions))))
        layer = name.rsplit(".", 1)[0]

        def hook(mod, inputs, output, layer=layer, directions=directions):
            xs = inputs[0]  # (B, K, T, C)
            gate = mod.attn.gate(xs.float()).squeeze(-2)  # (B, K, C)
            captured.append(MergeGates(layer, directions, gate.detach().cpu().numpy()))

        handles.append(module.register_forward_hook(hook))
    if not handles:
        raise ValueError(f"{type(model).__name__} has no DirectionMerge layer")
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(images)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return captured


def gate_summary(gates: Sequence[MergeGates]) -> "pd.DataFrame":
    """One row per (layer, direction) of :func:`merge_gates`: statistics of that direction's gates over
    channels and images. Columns: ``layer``, ``index`` (layer position), ``slot`` (k), ``direction``,
    ``mean``, ``std``, ``min``, ``max``, ``top share`` (share of the layer's channels for which this
    direction has the largest gate)."""
    import pandas as pd

    rows = []
    for i, g in enumerate(gates):
        mean = g.mean()  # (K, C)
        best = np.bincount(mean.argmax(0), minlength=mean.shape[0]) / mean.shape[1]  # (K,)
        for k, d in enumerate(g.directions):
            v = g.gates[:, k]  # (B, C)
            rows.append({"layer": g.layer, "index": i, "slot": k, "direction": d, "mean": float(v.mean()),
                         "std": float(v.std()), "min": float(v.min()), "max": float(v.max()),
                         "top share": float(best[k])})
    return pd.DataFrame(rows)


class ErfModels(NamedTuple):
    """What :func:`erf_models` builds: the models by label (eval mode), their input (H, W) and patch size."""
    models: dict[str, torch.nn.Module]
    img_size: tuple[int, int]
    patch_size: int


def erf_models(checkpoint: str | os.PathLike | None = None, *, checkpoint_model: str = "local_vim_tiny",
               depth: int = 6, img_size: int = 112, patch_size: int = 8, seed: int = 0) -> ErfModels:
    """The two LocalVim models whose effective receptive fields notebook 03 compares.

    Without ``checkpoint``: the Vim-style baseline (``vim_tiny``: ``h, h_flip`` in every layer) and
    LocalVim (``local_vim_tiny``: its first ``depth`` searched sets), both at initialisation from the
    same seed, so that they differ only in their scan directions; reduced to ``depth`` layers,
    ``img_size``-px inputs and ``patch_size``-px patches (112 / 8 keeps the 14x14 grid of 224 / 16) so
    that the backward passes take seconds. With ``checkpoint``: the trained model next to the same
    architecture at initialisation, to show what training changed; the architecture is NAME.json
    beside the file (the fixtures' format, :func:`model_from_arch`), else the registered
    ``checkpoint_model``, and the size arguments are unused. ``seed`` seeds the untrained models
    without touching the caller's random state.
    """
    import timm

    def untrained(build):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build().eval()

    if not checkpoint:
        sizes = dict(depth=depth, img_size=img_size, patch_size=patch_size)
        models = {
            "Vim baseline: h, h_flip": untrained(
                lambda: timm.create_model("vim_tiny", directions=(("h", "h_flip"),) * depth, **sizes)),
            "LocalVim: searched sets": untrained(
                lambda: timm.create_model("local_vim_tiny", directions=LOCAL_VIM_DIRECTIONS[:depth], **sizes)),
        }
        return ErfModels(models, (img_size, img_size), patch_size)
    path = Path(checkpoint)
    arch = path.with_suffix(".json")
    if arch.is_file():  # the fixtures' format: the architecture beside the weights
        trained = model_from_arch(arch, path)
        initial = untrained(lambda: model_from_arch(arch))
    else:
        trained = timm.create_model(checkpoint_model, pretrained=True,
                                    pretrained_cfg_overlay=dict(file=os.fspath(path))).eval()
        initial = untrained(lambda: timm.create_model(checkpoint_model))
    if not isinstance(trained, LocalVim):
        raise ValueError(f"the ERF comparison takes a LocalVim checkpoint; {path.name} holds a {type(trained).__name__}")
    models = {f"{path.name} (its weights)": trained, "same architecture, at initialisation": initial}
    return ErfModels(models, tuple(trained.patch_embed.img_size), trained.patch_size)


def _token_grid(model: torch.nn.Module, images: torch.Tensor, out: torch.Tensor) -> tuple[int, int]:
    if out.dim() == 4:  # channels-last map (B, h, w, C)
        return int(out.shape[1]), int(out.shape[2])
    pe = getattr(model, "patch_embed", None)
    if pe is not None and hasattr(pe, "dynamic_feat_size"):
        return tuple(int(s) for s in pe.dynamic_feat_size(images.shape[-2:]))
    n = out.shape[1] - getattr(model, "num_prefix_tokens", 0)
    s = math.isqrt(n)
    if s * s != n:
        raise ValueError(f"cannot infer the token grid of {n} tokens; pass token as an index")
    return s, s


def _select_token(model: torch.nn.Module, out: torch.Tensor, grid: tuple[int, int], token) -> torch.Tensor:
    """The features (B, C) of one patch token of ``forward_features`` output (B, T, C) or (B, h, w, C)."""
    H, W = grid
    if token is None:
        i, j = H // 2, W // 2
    elif isinstance(token, int):
        if not 0 <= token < H * W:
            raise ValueError(f"token index must be in [0, {H * W}), got {token}")
        i, j = divmod(token, W)
    else:
        i, j = (int(t) for t in token)
        if not (0 <= i < H and 0 <= j < W):
            raise ValueError(f"token (row, col) must lie in the {H}x{W} grid, got {(i, j)}")
    if out.dim() == 4:
        return out[:, i, j]  # (B, C)
    p = i * W + j
    if getattr(model, "num_prefix_tokens", 0):  # the middle class token sits at index H*W // 2
        p += int(p >= (H * W) // 2)
    return out[:, p]  # (B, C)


def effective_receptive_field(model: torch.nn.Module, images: torch.Tensor, token=None, batch_size: int = 4,
                              progress: bool = True) -> np.ndarray:
    """Effective receptive field of one output token: mean over ``images`` of |d y / d x|, (H, W).

    y is the sum of the ReLU'd features of token ``token`` of ``model.forward_features`` (the central
    token (H//2, W//2) of the token grid when None; an int is a row-major patch index, a pair a
    (row, col)), as in RepLKNet's and VMamba's ERF plots; x are the input pixels; |grad| is summed over
    the colour channels and averaged over the images (N, 3, H, W). The model runs in eval mode with its
    parameters frozen (both restored afterwards); images are processed ``batch_size`` at a time.
    """
    from tqdm.auto import tqdm

    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    was_training = model.training
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    total = torch.zeros(images.shape[-2:], dtype=torch.float64)
    try:
        model.eval()
        batches = images.split(batch_size)
        for batch in tqdm(batches, desc="ERF", disable=not progress or len(batches) < 2):
            x = batch.detach().clone().float().requires_grad_(True)
            with torch.enable_grad():
                out = model.forward_features(x)  # (B, T, C) or (B, h, w, C)
                y = _select_token(model, out, _token_grid(model, x, out), token)  # (B, C)
                (grad,) = torch.autograd.grad(y.float().relu().sum(), x)  # (B, 3, H, W)
            total += grad.abs().sum((0, 1)).double()
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)
    return (total / images.shape[0]).numpy()


def erf_stats(erfs, thresholds: Sequence[float] = (0.2, 0.5, 0.9), patch: int | None = None,
              token: tuple[int, int] | None = None) -> "pd.DataFrame":
    """Spread of effective receptive fields (from :func:`effective_receptive_field`), one row each.

    ``erfs``: one (H, W) map or a mapping label -> map. Columns: ``sigma_x`` and ``sigma_y`` (the
    standard deviation, in pixels, of the |grad| mass along x and y about its centroid: wide = far
    reaching; sigma_x > sigma_y = elongated along rows), and ``area@t`` for each threshold t: the side of
    the smallest square centred on the peak that holds a share t of the mass, as a share of the image
    area (RepLKNet's 'high-contribution area ratio'; larger = more spread out). With ``patch`` (the
    patch size in pixels), ``outside own patch`` is the share of the mass outside the pixels of the
    output token itself (``token`` (row, col) of the token grid; default the central one), i.e. what
    the token gathers from elsewhere.
    """
    import pandas as pd

    if isinstance(erfs, np.ndarray):
        erfs = {"erf": erfs}
    rows = []
    for label, m in erfs.items():
        m = np.asarray(m, dtype=np.float64)
        if m.ndim != 2 or m.sum() <= 0:
            raise ValueError(f"{label}: need a non-zero (H, W) map, got shape {m.shape}")
        H, W = m.shape
        w = m / m.sum()
        ys, xs = np.arange(H), np.arange(W)
        px, py = w.sum(0), w.sum(1)  # marginals along x (columns) and y (rows)
        mx, my = (px * xs).sum(), (py * ys).sum()
        row = {"label": label, "sigma_x": float(np.sqrt((px * (xs - mx) ** 2).sum())),
               "sigma_y": float(np.sqrt((py * (ys - my) ** 2).sum()))}
        ci, cj = np.unravel_index(np.argmax(m), m.shape)
        # mass inside the square of half-side r around the peak, for every r
        cum = np.pad(w, ((1, 0), (1, 0))).cumsum(0).cumsum(1)  # summed-area table (H+1, W+1)
        radii = np.arange(max(H, W))
        i0, i1 = np.clip(ci - radii, 0, H), np.clip(ci + radii + 1, 0, H)
        j0, j1 = np.clip(cj - radii, 0, W), np.clip(cj + radii + 1, 0, W)
        mass = cum[i1, j1] - cum[i0, j1] - cum[i1, j0] + cum[i0, j0]  # (R,)
        for t in thresholds:
            r = int(np.argmax(mass >= t - 1e-12))
            row[f"area@{t:g}"] = float((i1[r] - i0[r]) * (j1[r] - j0[r]) / (H * W))
        if patch:
            ti, tj = token if token is not None else (H // patch // 2, W // patch // 2)
            own = w[ti * patch:(ti + 1) * patch, tj * patch:(tj + 1) * patch].sum()
            row["outside own patch"] = float(1.0 - own)
        rows.append(row)
    return pd.DataFrame(rows).set_index("label")


def top_k(logits: torch.Tensor, k: int = 5, labels: Sequence[str] | None = None) -> "pd.DataFrame":
    """The k most probable classes of one image's ``logits`` (C,) or (1, C): rank, class, label, probability."""
    import pandas as pd

    logits = torch.as_tensor(logits).detach().float()
    if logits.dim() == 2:
        if logits.shape[0] != 1:
            raise ValueError(f"top_k takes the logits of one image, got shape {tuple(logits.shape)}")
        logits = logits[0]
    probs = logits.softmax(-1)
    p, idx = probs.topk(min(k, probs.numel()))
    rows = [{"rank": r + 1, "class": int(i), "label": labels[int(i)] if labels is not None else f"class {int(i)}",
             "probability": float(q)} for r, (q, i) in enumerate(zip(p, idx))]
    return pd.DataFrame(rows).set_index("rank")
