"""Notebook 03 (the models): size and cost against the paper, top-k predictions, the channel-attention
gates of each layer's direction merge, and effective receptive fields.

Over 500 lines on purpose: these are all of notebook 03's helpers, kept in one file so that a reader of
the notebook finds them in one place (numbers first in each section, then the plots that show them).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import patheffects
from matplotlib.patches import Rectangle

from ..models import model_from_arch  # noqa: F401  (re-exported for notebook 03)
from ..models.local_vim import LOCAL_VIM_DIRECTIONS, LocalVim
from .common import figure_to_png
from .scan_orders import image_to_patches, plot_scan_path  # noqa: F401  (image_to_patches: re-exported for notebook 03)

__all__ = [
    "model_summary", "plot_model_summary", "top_k", "plot_topk", "show_model_input",
    "MergeGates", "merge_gates", "gate_summary", "plot_merge_gates", "plot_gate_summary", "plot_layer_merge",
    "interactive_layer_view",
    "ErfModels", "erf_models", "effective_receptive_field", "erf_stats", "plot_erf", "plot_erf_profiles",
    "model_from_arch", "image_to_patches",
]

# --------------------------------------------------------------------------------------------------
# Size and cost, predictions
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

    from ..models.flops import PAPER, count_params, paper_flops

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


def plot_model_summary(table, axes=None, title: str | None = None) -> plt.Figure:
    """Grouped bars of :func:`model_summary`: parameters and FLOPs, ours next to
    the paper's (hatched), one group per model. Missing values (NaN) are left out and marked 'n/a'."""
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
    else:
        fig = axes[0].figure
    x = np.arange(len(table))
    width = 0.38
    for ax, (ours, paper, unit) in zip(axes, [("params (M)", "paper params (M)", "parameters (millions)"),
                                             ("FLOPs (G)", "paper FLOPs (G)", "FLOPs at 224 px (G, multiply-adds)")]):
        a, b = table[ours].to_numpy(float), table[paper].to_numpy(float)
        bars_a = ax.bar(x - width / 2, np.nan_to_num(a), width, label="this library", color="C0")
        bars_b = ax.bar(x + width / 2, np.nan_to_num(b), width, label="paper", color="white", edgecolor="C1",
                        hatch="//", lw=1.2)
        top = np.nanmax(np.concatenate([a, b])) if np.isfinite(np.concatenate([a, b])).any() else 1.0
        for bars, vals in ((bars_a, a), (bars_b, b)):
            for rect, v in zip(bars, vals):
                label = "n/a" if not np.isfinite(v) else f"{v:.3g}"
                ax.text(rect.get_x() + rect.get_width() / 2, (0 if not np.isfinite(v) else v) + 0.01 * top, label,
                        ha="center", va="bottom", fontsize=7, rotation=90,
                        color="0.5" if not np.isfinite(v) else "k")
        ax.set_xticks(x)
        ax.set_xticklabels(table.index, rotation=30, ha="right", fontsize=9)
        ax.set_ylabel(unit)
        ax.set_ylim(0, top * 1.25)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=9, loc="upper left")
        ax.set_title(unit.split(" (")[0].capitalize() if unit.startswith("p") else "FLOPs")
    fig.suptitle(title or "Model size and cost: this library vs the paper (n/a = not counted / not reported)")
    fig.tight_layout()
    return fig


def show_model_input(x, mean: Sequence[float], std: Sequence[float], ax: plt.Axes | None = None,
                     title: str | None = None) -> plt.Axes:
    """Draw a normalised model input (3, H, W) as the image the model sees (x * std + mean)."""
    x = torch.as_tensor(x).detach().float().cpu()
    if x.dim() == 4 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 3:
        raise ValueError(f"x must be (C, H, W), got shape {tuple(x.shape)}")
    img = x * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)  # (C, H, W)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
    ax.set_title(title or f"model input, {x.shape[2]}x{x.shape[1]} px")
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def plot_topk(table, ax: plt.Axes | None = None, title: str | None = None) -> plt.Axes:
    """Horizontal bars of :func:`top_k`: the k most probable classes, best on top."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 0.45 * len(table) + 1.2))
    y = np.arange(len(table))
    xmax = min(1.0, float(table["probability"].max()) * 1.3)
    ax.barh(y, table["probability"], color="C2")
    for yi, p in zip(y, table["probability"]):
        ax.text(p + 0.01 * xmax, yi, f"{p:.1%}" if p >= 0.01 else f"{p:.2%}", va="center", fontsize=9)
    ax.set_yticks(y)
    ax.set_yticklabels(table["label"])
    ax.invert_yaxis()
    ax.set_xlim(0, xmax)
    ax.set_xlabel("probability (softmax of the logits)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title or f"Top-{len(table)} predictions")
    return ax


# --------------------------------------------------------------------------------------------------
# Direction merges
# --------------------------------------------------------------------------------------------------

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
    (``layers.s.blocks.j.mixer.merge``), search supernets included.
    """
    from ..layers import DirectionMerge

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


def _gate_norm(gates: np.ndarray):
    """A diverging colour scale centred on 0.5 (a gate of 0.5 = sigmoid(0), the untrained value)."""
    half = max(float(np.abs(np.asarray(gates) - 0.5).max()), 1e-4)
    return plt.matplotlib.colors.TwoSlopeNorm(vcenter=0.5, vmin=0.5 - half, vmax=0.5 + half)


def _as_kc(gates) -> np.ndarray:
    g = np.asarray(gates)
    if g.ndim == 3:  # (B, K, C) -> mean over the batch
        g = g.mean(0)
    if g.ndim != 2:
        raise ValueError(f"gates must be (K, C) or (B, K, C), got shape {g.shape}")
    return g


def plot_merge_gates(gates, directions: Sequence[str], sort: bool = True, axes=None,
                     title: str | None = None) -> plt.Figure:
    """The channel-attention gates of one layer's merge (:class:`MergeGates`).

    Left: heat map directions x channels (gates averaged over the batch); with ``sort`` the channels are
    grouped by the direction with the largest gate and ordered by it, so a layer that prefers one
    direction shows a wide block. Right: the distribution of each direction's gates over channels
    (and images, for a (B, K, C) input). The colour scale is centred on 0.5, the gate of an untrained
    merge.
    """
    raw = np.asarray(gates)
    g = _as_kc(raw)  # (K, C)
    K, C = g.shape
    if len(directions) != K:
        raise ValueError(f"{K} gate rows but {len(directions)} directions")
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(14, 3.2 + 0.35 * K), gridspec_kw={"width_ratios": [2.4, 1]})
    else:
        fig = axes[0].figure
    order = np.arange(C)
    if sort:
        best = g.argmax(0)  # (C,) preferred direction of each channel
        order = np.lexsort((-g[best, np.arange(C)], best))
    im = axes[0].imshow(g[:, order], aspect="auto", cmap="RdBu_r", norm=_gate_norm(g), interpolation="nearest")
    axes[0].set_yticks(range(K))
    axes[0].set_yticklabels(directions)
    axes[0].set_xlabel("channel" + (" (grouped by the direction with the largest gate)" if sort else ""))
    axes[0].set_ylabel("direction")
    cb = fig.colorbar(im, ax=axes[0], fraction=0.04, pad=0.01)
    cb.set_label("gate (0.5 = neutral)")
    samples = raw.transpose(1, 0, 2).reshape(K, -1) if raw.ndim == 3 else g  # (K, B*C)
    import inspect

    horizontal = ({"orientation": "horizontal"} if "orientation" in inspect.signature(axes[1].violinplot).parameters
                  else {"vert": False})  # Matplotlib >= 3.10 / older
    parts = axes[1].violinplot([s for s in samples], positions=range(K), showmedians=True, widths=0.8, **horizontal)
    for k, body in enumerate(parts["bodies"]):
        body.set_facecolor(f"C{k % 10}")
        body.set_alpha(0.6)
    axes[1].axvline(0.5, color="0.4", ls=":", lw=1)
    axes[1].set_yticks(range(K))
    axes[1].set_yticklabels(directions)
    axes[1].set_ylim(K - 0.5, -0.5)
    axes[1].set_xlabel("gate value")
    axes[1].set_title("distribution over channels" + (" and images" if raw.ndim == 3 else ""), fontsize=10)
    axes[1].grid(axis="x", alpha=0.3)
    fig.suptitle(title or f"Channel-attention gates of the merge ({K} directions x {C} channels)")
    fig.tight_layout()
    return fig


def plot_gate_summary(summary, value: str = "mean", ax: plt.Axes | None = None,
                      title: str | None = None) -> plt.Axes:
    """Heat map layers x direction slots of :func:`gate_summary` (``value``:
    'mean' gate or 'top share'), each cell labelled with its direction: which scan each layer's
    merge weights up."""
    layers = summary.drop_duplicates("index").sort_values("index")
    n, K = len(layers), int(summary["slot"].max()) + 1
    grid = np.full((n, K), np.nan)
    names = np.full((n, K), "", dtype=object)
    for _, r in summary.iterrows():
        grid[int(r["index"]), int(r["slot"])] = r[value]
        names[int(r["index"]), int(r["slot"])] = r["direction"]
    if ax is None:
        _, ax = plt.subplots(figsize=(1.6 * K + 2.5, 0.32 * n + 1.8))
    if value == "mean":
        norm, cmap, label = _gate_norm(grid[np.isfinite(grid)]), "RdBu_r", "mean gate (0.5 = neutral)"
    else:
        norm, cmap, label = plt.Normalize(0, 1), "viridis", "share of channels where this direction's gate is largest"
    im = ax.imshow(grid, aspect="auto", cmap=cmap, norm=norm)
    for i in range(n):
        for k in range(K):
            if names[i, k]:
                ax.text(k, i, f"{names[i, k]}\n{grid[i, k]:.4f}" if n <= 24 else names[i, k], ha="center",
                        va="center", fontsize=7 if n <= 24 else 6,
                        path_effects=[patheffects.withStroke(linewidth=2, foreground="white")])
    ax.set_xticks(range(K))
    ax.set_xticklabels([f"slot {k}" for k in range(K)])
    ax.set_yticks(range(n))
    ax.set_yticklabels([str(i) for i in range(n)], fontsize=7 if n > 24 else 9)
    ax.set_ylabel("layer")
    ax.set_xlabel("direction slot (the layer's k-th direction)")
    cb = ax.figure.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
    cb.set_label(label)
    ax.set_title(title or f"{value} of each direction's gates, per layer")
    return ax


def plot_layer_merge(directions: Sequence[str], H: int, W: int, gates=None, image: np.ndarray | None = None,
                     title: str | None = None, panel_size: float = 3.0) -> plt.Figure:
    """A diagram of one multi-direction layer: the K scan paths over the HxW token grid (top), each
    direction's channel gate (middle, ``gates`` (K, C) or (B, K, C), one heat strip per direction on a
    shared scale centred on 0.5), and the merge Σ_k gate_k ⊙ y_k -> out_proj (bottom)."""
    from matplotlib.patches import ConnectionPatch, FancyBboxPatch

    directions = list(directions)
    K = len(directions)
    g = None if gates is None else _as_kc(gates)
    if g is not None and g.shape[0] != K:
        raise ValueError(f"{g.shape[0]} gate rows but {K} directions")
    fig = plt.figure(figsize=(panel_size * K + 1.2, panel_size + 3.4))
    gs = fig.add_gridspec(3, K, height_ratios=[panel_size, 1.0, 0.9], hspace=0.55, wspace=0.12)
    path_axes, gate_axes = [], []
    norm = _gate_norm(g) if g is not None else None
    im = None
    for k, d in enumerate(directions):
        ax = fig.add_subplot(gs[0, k])
        plot_scan_path(ax, d, H, W, image=image, title=f"{d}")
        path_axes.append(ax)
        if k == 0:
            ax.text(0.54, -0.22, "scan, conv1d, selective scan,\nreverse to token order", transform=ax.transAxes,
                    fontsize=8, color="0.3", ha="left", va="center")
        gax = fig.add_subplot(gs[1, k])
        if g is not None:
            C = g.shape[1]
            cols = math.ceil(C / 4) if C > 32 else C
            rows = math.ceil(C / cols)
            strip = np.full(rows * cols, np.nan)
            strip[:C] = g[k]
            im = gax.imshow(strip.reshape(rows, cols), aspect="auto", cmap="RdBu_r", norm=norm,
                            interpolation="nearest")
            gax.set_xlabel(f"gate_{k}: {C} channels, mean {g[k].mean():.3f}", fontsize=9)
        else:
            gax.text(0.5, 0.5, "channel attention\ngate_k (C channels)", ha="center", va="center",
                     transform=gax.transAxes, fontsize=9)
        gax.set_xticks([])
        gax.set_yticks([])
        gate_axes.append(gax)
        fig.add_artist(ConnectionPatch(xyA=(0.5, 0.0), coordsA=ax.transAxes, xyB=(0.5, 1.0), coordsB=gax.transAxes,
                                       arrowstyle="-|>", color="0.3", lw=1.2, mutation_scale=12))
    sax = fig.add_subplot(gs[2, :])
    sax.set_axis_off()
    sax.add_patch(FancyBboxPatch((0.3, 0.1), 0.4, 0.8, boxstyle="round,pad=0.02", transform=sax.transAxes,
                                 facecolor="0.95", edgecolor="0.4"))
    sax.text(0.5, 0.5, "Σ_k  gate_k ⊙ y_k   →   out_proj   (one output per token)", ha="center", va="center",
             transform=sax.transAxes, fontsize=11)
    for gax in gate_axes:
        fig.add_artist(ConnectionPatch(xyA=(0.5, -0.45), coordsA=gax.transAxes, xyB=(0.5, 1.0), coordsB=sax.transAxes,
                                       arrowstyle="-|>", color="0.3", lw=1.2, mutation_scale=12))
    if im is not None:
        cb = fig.colorbar(im, ax=gate_axes, fraction=0.02, pad=0.01)
        cb.set_label("gate")
    fig.suptitle(title or f"One layer: {K} scans (each with its own conv1d, x_proj, dt_proj, A, D), "
                          "reversed to token order, gated per channel and summed", fontsize=11)
    return fig


def interactive_layer_view(directions_per_layer: Sequence[Sequence[str]], gates: Sequence | None, H: int, W: int,
                           image: np.ndarray | None = None, layer: int = 0, dpi: int = 80):
    """An ipywidgets view with a layer slider that redraws :func:`plot_layer_merge` for that layer
    (``gates``: the list from :func:`merge_gates`, or None).

    The drawing is a PNG in an ``ipywidgets.Image``, replaced when a control changes. Unlike
    ``ipywidgets.interactive``, which prints into an Output widget, this sends no display messages from
    callbacks, the pattern that can leave a headless executor (nbclient, papermill) waiting forever.
    Returns the ``ipywidgets.VBox``; display it in a notebook.
    """
    import ipywidgets as widgets

    n = len(directions_per_layer)
    if not 0 <= layer < n:
        raise ValueError(f"layer must be in [0, {n}), got {layer}")
    slider = widgets.IntSlider(value=layer, min=0, max=n - 1, description="layer")
    on_image = widgets.Checkbox(value=image is not None, description="on image", disabled=image is None)
    picture = widgets.Image(format="png")

    def render(*_):
        k = slider.value
        gk = None if gates is None else gates[k].gates
        fig = plot_layer_merge(directions_per_layer[k], H, W, gates=gk, image=image if on_image.value else None,
                               title=f"layer {k}: {', '.join(directions_per_layer[k])}")
        picture.value = figure_to_png(fig, dpi=dpi)

    slider.observe(render, names="value")
    on_image.observe(render, names="value")
    render()
    return widgets.VBox([widgets.HBox([slider, on_image]), picture])


# --------------------------------------------------------------------------------------------------
# Effective receptive fields
# --------------------------------------------------------------------------------------------------

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


def plot_erf(erfs: Mapping[str, np.ndarray], patch: int | None = None, token: tuple[int, int] | None = None,
             log: bool = True, vmin: float = 1e-4, panel_size: float = 4.2, title: str | None = None) -> plt.Figure:
    """Effective receptive fields side by side (from :func:`effective_receptive_field`),
    each divided by its maximum, on a shared (log) colour scale. ``patch`` draws the token grid;
    ``token`` (row, col) outlines the output token whose ERF it is (default: the central one)."""
    erfs = dict(erfs)
    n = len(erfs)
    fig, axes = plt.subplots(1, n, figsize=(panel_size * n + 1.2, panel_size + 0.6), squeeze=False)
    norm = plt.matplotlib.colors.LogNorm(vmin=vmin, vmax=1) if log else plt.Normalize(0, 1)
    im = None
    for ax, (label, m) in zip(axes[0], erfs.items()):
        m = np.asarray(m, dtype=float)
        rel = m / m.max() if m.max() > 0 else m
        im = ax.imshow(np.maximum(rel, vmin) if log else rel, cmap="inferno", norm=norm, interpolation="nearest")
        Himg, Wimg = m.shape
        if patch:
            for y in range(0, Himg + 1, patch):
                ax.axhline(y - 0.5, color="white", lw=0.3, alpha=0.25)
            for x in range(0, Wimg + 1, patch):
                ax.axvline(x - 0.5, color="white", lw=0.3, alpha=0.25)
            i, j = token if token is not None else (Himg // patch // 2, Wimg // patch // 2)
            ax.add_patch(Rectangle((j * patch - 0.5, i * patch - 0.5), patch, patch, fill=False,
                                   edgecolor="cyan", lw=1.5))
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("x (pixels)")
        ax.set_ylabel("y (pixels)")
    cb = fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02)
    cb.set_label("|d token / d pixel|, relative to the maximum" + (" (log)" if log else ""))
    fig.suptitle(title or "Effective receptive field of the central token (cyan)", fontsize=12)
    return fig


def plot_erf_profiles(erfs: Mapping[str, np.ndarray], ax: plt.Axes | None = None,
                      title: str | None = None) -> plt.Axes:
    """Share of each ERF's mass per column (solid, along x) and per row (dashed, along y), against the
    distance from the centre in pixels, log scale: how far the ERF reaches horizontally vs vertically."""
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4.5))
    for k, (label, m) in enumerate(dict(erfs).items()):
        m = np.asarray(m, dtype=float)
        w = m / m.sum()
        H, W = m.shape
        ax.plot(np.arange(W) - W // 2, w.sum(0), color=f"C{k}", lw=1.8, label=f"{label}: along x (columns)")
        ax.plot(np.arange(H) - H // 2, w.sum(1), color=f"C{k}", lw=1.8, ls="--", label=f"{label}: along y (rows)")
    ax.set_yscale("log")
    ax.set_xlabel("offset from the central pixel (pixels)")
    ax.set_ylabel("share of |grad| mass (log)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(title or "ERF profiles: horizontal (solid) vs vertical (dashed) reach")
    return ax
