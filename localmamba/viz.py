"""Plots shared by the notebooks: scan paths, scan locality, padding cost, impulse responses, timings,
model size, direction-merge gates, effective receptive fields, predictions.

Every ``plot_*`` function draws on a Matplotlib ``ax`` it is given (or creates a figure when it is
not) and returns the figure or the axes, so notebooks and tests can save or inspect the result.
The numbers come from :mod:`localmamba.analysis`; nothing here computes anything a test could not
check there. Matplotlib (and ipywidgets for :func:`interactive_scan_view`) come with the
``notebooks`` extra: ``pip install -e ".[notebooks]"``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import patheffects
from matplotlib.collections import LineCollection
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from . import analysis
from .engine.data import InMemoryImages
from .scan import parse_direction, scan_length, scan_order

__all__ = [
    "image_to_patches", "plot_image_patches", "scan_path", "direction_name", "plot_scan_path", "plot_scan_grid",
    "plot_neighbour_distances", "plot_neighbour_distance_cdf", "plot_locality_maps",
    "plot_padding_overhead", "plot_zoh", "plot_impulse_responses", "plot_backend_timings",
    "interactive_scan_view", "save_figure",
    "plot_model_summary", "plot_merge_gates", "plot_gate_summary", "plot_layer_merge", "figure_to_png", "interactive_layer_view",
    "plot_erf", "plot_erf_profiles", "show_model_input", "plot_topk",
]

PATH_CMAP = "plasma"
_PAD_COLOR = "0.55"


def save_figure(fig: plt.Figure, figures_dir: str | Path, name: str, dpi: int = 120) -> Path:
    """Save ``fig`` as ``figures_dir/name.png`` (creating the folder) and return the path."""
    path = Path(figures_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def _plain_log_axis(axis) -> None:
    """Log scale with ticks at 1, 2, 5 x 10^k written as plain numbers (not 2x10^0)."""
    if axis is axis.axes.xaxis:
        axis.axes.set_xscale("log", nonpositive="mask")
    else:
        axis.axes.set_yscale("log", nonpositive="mask")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FormatStrFormatter("%g"))
    axis.set_minor_formatter(NullFormatter())


# --------------------------------------------------------------------------------------------------
# Images and scan paths
# --------------------------------------------------------------------------------------------------

def image_to_patches(image: np.ndarray, grid: int | tuple[int, int] = 14, patch: int = 16,
                     crop: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image to ``grid`` patches of ``patch`` pixels and cut it into them.

    image: (h, w) or (h, w, c), uint8 or float. With ``crop`` the image is first centre-cropped to the
    grid's aspect ratio (so nothing is stretched). Returns ``(resized, patches)``: resized is
    (H*patch, W*patch, c) float in [0, 1], patches is (H, W, patch, patch, c): patch (i, j) is token
    i*W + j in row-major order, the order :func:`localmamba.scan.scan_order` indexes.
    """
    H, W = (grid, grid) if isinstance(grid, int) else grid
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3:
        raise ValueError(f"image must be (h, w) or (h, w, c), got shape {img.shape}")
    img = img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else 1.0)
    if crop:
        h, w = img.shape[:2]
        target = W / H
        if w / h > target:  # too wide
            nw = round(h * target)
            img = img[:, (w - nw) // 2:(w - nw) // 2 + nw]
        else:
            nh = round(w / target)
            img = img[(h - nh) // 2:(h - nh) // 2 + nh]
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]  # (1, c, h, w)
    x = F.interpolate(x, size=(H * patch, W * patch), mode="bilinear", antialias=True,
                      align_corners=False).clamp(0, 1)  # (1, c, H*p, W*p)
    resized = x[0].permute(1, 2, 0).numpy()  # (H*p, W*p, c)
    c = resized.shape[-1]
    patches = resized.reshape(H, patch, W, patch, c).transpose(0, 2, 1, 3, 4)  # (H, W, p, p, c)
    return resized, patches


def plot_image_patches(resized: np.ndarray, patches: np.ndarray, gap: int = 2,
                       title: str | None = None) -> plt.Figure:
    """Two panels: the resized image, and the same image as separated patches (one per token),
    as returned by :func:`image_to_patches`."""
    H, W, p, _, c = patches.shape
    sheet = np.ones((H * (p + gap) - gap, W * (p + gap) - gap, c), dtype=patches.dtype)  # white gaps
    for i in range(H):
        for j in range(W):
            sheet[i * (p + gap):i * (p + gap) + p, j * (p + gap):j * (p + gap) + p] = patches[i, j]
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.2))
    cmap = "gray" if c == 1 else None
    axes[0].imshow(resized.squeeze(-1) if c == 1 else resized, cmap=cmap)
    axes[0].set_title(f"image, {resized.shape[1]}x{resized.shape[0]} px")
    axes[0].set_xlabel("x (pixels)")
    axes[0].set_ylabel("y (pixels)")
    axes[1].imshow(sheet.squeeze(-1) if c == 1 else sheet, cmap=cmap)
    axes[1].set_title(f"{H}x{W} = {H * W} tokens of {p}x{p} px\n(token i*W + j is patch (i, j))")
    axes[1].set_xticks([(p + gap) * j + p / 2 for j in range(0, W, max(1, W // 7))])
    axes[1].set_xticklabels([str(j) for j in range(0, W, max(1, W // 7))])
    axes[1].set_yticks([(p + gap) * i + p / 2 for i in range(0, H, max(1, H // 7))])
    axes[1].set_yticklabels([str(i) for i in range(0, H, max(1, H // 7))])
    axes[1].set_xlabel("patch column j")
    axes[1].set_ylabel("patch row i")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def scan_path(direction: str, H: int, W: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid coordinates of each step of ``direction``: (rows, cols, padded), each of length L.

    Padded steps of 'wK' directions get their place in the zero-padded grid (rows >= H or cols >= W).
    """
    d = parse_direction(direction)
    if d.kind == "w":
        Hp, Wp = math.ceil(H / d.window) * d.window, math.ceil(W / d.window) * d.window
    else:
        Hp, Wp = H, W
    # Windowing the padded grid visits it in the same order as padding + windowing the HxW grid.
    order = scan_order(direction, Hp, Wp).numpy()  # (L,) row-major indices into the Hp x Wp grid
    rows, cols = np.divmod(order, Wp)
    return rows, cols, (rows >= H) | (cols >= W)


def direction_name(kind: str, window: int = 2, flip: bool = False) -> str:
    """Assemble a direction string from its parts: ('w', 7, True) -> 'w7_flip'."""
    base = f"w{window}" if kind == "w" else kind
    name = base + ("_flip" if flip else "")
    parse_direction(name)
    return name


def plot_scan_path(ax: plt.Axes, direction: str, H: int, W: int, image: np.ndarray | None = None,
                   numbers: bool | None = None, arrows: bool | None = None, windows: bool = True,
                   cmap: str = PATH_CMAP, linewidth: float | None = None, title: str | None = None) -> plt.Axes:
    """Draw the path ``direction`` takes over an HxW token grid on ``ax``.

    The path joins token centres in visiting order, coloured from the start (dark) to the end (bright)
    of the sequence; a circle marks the first step and a square the last. ``image`` (e.g. the
    ``resized`` output of :func:`image_to_patches`) is drawn underneath, one patch per token. Padded
    steps of 'wK' directions are grey crosses in a hatched band outside the image. ``numbers`` writes
    the step index in each cell, ``arrows`` puts an arrowhead on each move (both default to on for grids
    of at most 64 steps); ``windows`` outlines the KxK windows.
    """
    d = parse_direction(direction)
    rows, cols, padded = scan_path(direction, H, W)
    L = rows.size
    small = L <= 64
    numbers = small if numbers is None else numbers
    arrows = small if arrows is None else arrows
    lw = linewidth or (2.5 if small else max(0.8, 2.2 - L / 250))
    Hp, Wp = int(rows.max()) + 1, int(cols.max()) + 1

    if image is not None:
        image = np.asarray(image)
        grey = image.ndim == 2 or image.shape[-1] == 1
        ax.imshow(image.reshape(image.shape[:2]) if grey else image, cmap="gray" if grey else None,
                  extent=(-0.5, W - 0.5, H - 0.5, -0.5), interpolation="nearest")
        grid_color, grid_alpha = "white", 0.35
    else:
        ax.add_patch(Rectangle((-0.5, -0.5), W, H, facecolor="0.96", edgecolor="none", zorder=0))
        grid_color, grid_alpha = "0.6", 0.8
    # token grid
    for i in range(H + 1):
        ax.plot([-0.5, W - 0.5], [i - 0.5, i - 0.5], color=grid_color, lw=0.5, alpha=grid_alpha, zorder=1)
    for j in range(W + 1):
        ax.plot([j - 0.5, j - 0.5], [-0.5, H - 0.5], color=grid_color, lw=0.5, alpha=grid_alpha, zorder=1)
    # padding band
    if Hp > H or Wp > W:
        for (x0, y0, w, h) in [(W - 0.5, -0.5, Wp - W, Hp), (-0.5, H - 0.5, W, Hp - H)]:
            if w > 0 and h > 0:
                ax.add_patch(Rectangle((x0, y0), w, h, facecolor="0.9", edgecolor="0.6", hatch="//",
                                       lw=0.5, zorder=0))
    # window borders
    if windows and d.kind == "w":
        K = d.window
        for i in range(0, Hp + 1, K):
            ax.plot([-0.5, Wp - 0.5], [i - 0.5, i - 0.5], color="k", lw=1.2, alpha=0.7, zorder=2)
        for j in range(0, Wp + 1, K):
            ax.plot([j - 0.5, j - 0.5], [-0.5, Hp - 0.5], color="k", lw=1.2, alpha=0.7, zorder=2)

    # the path, coloured by normalised position in the sequence
    pts = np.stack([cols, rows], axis=1).astype(float)  # (L, 2) as (x, y)
    segs = np.stack([pts[:-1], pts[1:]], axis=1)  # (L-1, 2, 2)
    pos = np.linspace(0, 1, max(L - 1, 1))
    lc = LineCollection(segs, cmap=cmap, norm=plt.Normalize(0, 1), linewidths=lw, zorder=3,
                        capstyle="round")
    lc.set_array(pos)
    if image is not None:  # a dark halo keeps the path readable over bright images
        ax.add_collection(LineCollection(segs, colors="k", linewidths=lw + 1.6, alpha=0.5, zorder=3))
    ax.add_collection(lc)
    if arrows:
        colors = plt.get_cmap(cmap)(pos)
        for k, ((x0, y0), (x1, y1)) in enumerate(segs):
            ax.annotate("", xy=(x0 + 0.6 * (x1 - x0), y0 + 0.6 * (y1 - y0)), xytext=(x0, y0),
                        arrowprops=dict(arrowstyle="-|>", color=colors[k], lw=0, mutation_scale=12),
                        zorder=4)
    if padded.any():
        ax.scatter(cols[padded], rows[padded], marker="x", s=30 if small else 12, color=_PAD_COLOR,
                   zorder=5, label="padded step")
    ms = 90 if small else 50
    ax.scatter(cols[:1], rows[:1], marker="o", s=ms, color=plt.get_cmap(cmap)(0.0), edgecolor="white",
               lw=1.5, zorder=6, label="start")
    ax.scatter(cols[-1:], rows[-1:], marker="s", s=ms, color=plt.get_cmap(cmap)(1.0), edgecolor="k",
               lw=1.5, zorder=6, label="end")
    if numbers:
        for t, (r, c) in enumerate(zip(rows, cols)):
            ax.text(c + 0.28, r - 0.28, str(t), fontsize=7, ha="center", va="center", zorder=7,
                    color=_PAD_COLOR if padded[t] else "k",
                    path_effects=[patheffects.withStroke(linewidth=2.0, foreground="white")])

    ax.set_xlim(-0.5, Wp - 0.5)
    ax.set_ylim(Hp - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    n_pad = int(padded.sum())
    default = f"{direction}: L = {L}" + (f" ({n_pad} padded)" if n_pad else "")
    ax.set_title(default if title is None else title, fontsize=11)
    return ax


def _path_legend(fig: plt.Figure, cmap: str = PATH_CMAP, padded: bool = True) -> None:
    handles = [
        Line2D([], [], marker="o", ls="", color=plt.get_cmap(cmap)(0.0), markeredgecolor="white",
               markersize=9, label="first step"),
        Line2D([], [], marker="s", ls="", color=plt.get_cmap(cmap)(1.0), markeredgecolor="k",
               markersize=8, label="last step"),
    ]
    if padded:
        handles.append(Line2D([], [], marker="x", ls="", color=_PAD_COLOR, markersize=7,
                              label="padded step (zeros)"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False,
               bbox_to_anchor=(0.5, -0.01))


def plot_scan_grid(directions: Sequence[str], H: int, W: int, image: np.ndarray | None = None,
                   ncols: int = 4, panel_size: float = 3.0, suptitle: str | None = None,
                   **path_kwargs) -> plt.Figure:
    """One :func:`plot_scan_path` panel per direction, a shared colour bar (start -> end) and a legend."""
    directions = list(directions)
    if not directions:
        raise ValueError("need at least one direction")
    ncols = min(ncols, len(directions))
    nrows = math.ceil(len(directions) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size * ncols + 1.0, panel_size * nrows + 0.9),
                             squeeze=False)
    small = all(scan_length(d, H, W) <= 64 for d in directions)  # same annotations on every panel
    path_kwargs.setdefault("numbers", small)
    path_kwargs.setdefault("arrows", small)
    for ax, d in zip(axes.flat, directions):
        plot_scan_path(ax, d, H, W, image=image, **path_kwargs)
    for ax in axes.flat[len(directions):]:
        ax.set_visible(False)
    cmap = path_kwargs.get("cmap", PATH_CMAP)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
    cb = fig.colorbar(sm, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02)
    cb.set_label("position in the sequence (0 = start, 1 = end)")
    padded = any(scan_length(d, H, W) > H * W for d in directions)
    _path_legend(fig, cmap, padded)
    fig.suptitle(suptitle or f"Scan orders on a {H}x{W} token grid", fontsize=13)
    return fig


# --------------------------------------------------------------------------------------------------
# Scan locality and padding
# --------------------------------------------------------------------------------------------------

def plot_neighbour_distances(stats, ax: plt.Axes | None = None,
                             columns: Sequence[str] = ("mean", "p50", "p90", "max"),
                             title: str | None = None, log: bool = True) -> plt.Axes:
    """Grouped bars of neighbour-distance statistics, one group per row of
    :func:`localmamba.analysis.neighbour_distance_stats`."""
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6, 0.9 * len(stats) + 2), 4))
    labels = list(stats.index)
    x = np.arange(len(labels))
    width = 0.8 / len(columns)
    names = {"mean": "mean", "max": "max", "p50": "median"}
    for k, col in enumerate(columns):
        ax.bar(x + (k - (len(columns) - 1) / 2) * width, stats[col].to_numpy(), width,
               label=names.get(col, col))
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30, ha="right")
    if log:
        _plain_log_axis(ax.yaxis)
    ax.set_ylabel("|t(p) - t(q)| for 2-D neighbours p, q\n(steps apart in the sequence)")
    ax.set_xlabel("scan direction(s)")
    ax.legend(title="over neighbour pairs", fontsize=9)
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.set_title(title or "How far apart 2-D neighbours end up in 1-D")
    return ax


def plot_neighbour_distance_cdf(directions: Sequence, H: int, W: int, ax: plt.Axes | None = None,
                                title: str | None = None) -> plt.Axes:
    """Share of 4-neighbour pairs at most x steps apart, one curve per direction (or layer set)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    for ds in directions:
        dist = np.sort(analysis.neighbour_distances(ds, H, W))
        frac = np.arange(1, dist.size + 1) / dist.size
        ax.step(dist, frac, where="post", label=analysis.direction_label(ds),
                lw=2.2 if not isinstance(ds, str) else 1.5, ls="-" if isinstance(ds, str) else "--")
    _plain_log_axis(ax.xaxis)
    ax.set_xlabel("distance in the sequence |t(p) - t(q)| (steps, log scale)")
    ax.set_ylabel("share of neighbour pairs within that distance")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title or f"Neighbour distances on a {H}x{W} grid (higher = more local)")
    return ax


def plot_locality_maps(directions: Sequence, H: int, W: int, connectivity: int = 8, ncols: int = 4,
                       panel_size: float = 2.8, vmax: float | None = None) -> plt.Figure:
    """Heat maps of :func:`localmamba.analysis.neighbourhood_span`: for each token, how many steps
    its farthest neighbour is in the sequence (for a set: in the best of its scans). One panel per
    direction or layer set, on a shared log colour scale."""
    directions = list(directions)
    maps = [analysis.neighbourhood_span(ds, H, W, connectivity) for ds in directions]
    ncols = min(ncols, len(maps))
    nrows = math.ceil(len(maps) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size * ncols + 1.2, panel_size * nrows + 0.7),
                             squeeze=False)
    vmax = vmax or max(m.max() for m in maps)
    norm = plt.matplotlib.colors.LogNorm(vmin=1, vmax=max(vmax, 2))
    for ax, ds, m in zip(axes.flat, directions, maps):
        im = ax.imshow(np.maximum(m, 1), cmap="magma_r", norm=norm)
        ax.set_title(f"{analysis.direction_label(ds)}\nmean {m.mean():.1f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.flat[len(maps):]:
        ax.set_visible(False)
    cb = fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02)
    cb.set_label("steps to the farthest neighbour (log)")
    fig.suptitle(f"Neighbourhood span per token ({connectivity}-neighbours, {H}x{W} grid): "
                 "dark = the neighbourhood is spread far apart in the sequence", fontsize=11)
    return fig


def plot_padding_overhead(table, ax: plt.Axes | None = None, highlight: Sequence[int] = (),
                          title: str | None = None) -> plt.Axes:
    """Lines of :func:`localmamba.analysis.padding_overhead_table`: padded length / tokens per grid size."""
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4.5))
    for col in table.columns:
        ax.plot(table.index, table[col], marker="o", ms=3.5, lw=1.5, label=col)
    for g in highlight:
        ax.axvline(g, color="0.5", ls=":", lw=1)
        ax.text(g, 0.98, f"{g}x{g} ", rotation=90, va="top", ha="right", fontsize=8, color="0.35",
                transform=ax.get_xaxis_transform())
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel("grid size H = W (tokens per side)")
    ax.set_ylabel("scanned length / H·W\n(1 = no padding)")
    ax.grid(alpha=0.3)
    ax.legend(title="direction", fontsize=9)
    ax.set_title(title or "What padding to a multiple of K costs")
    return ax


# --------------------------------------------------------------------------------------------------
# Selective scan
# --------------------------------------------------------------------------------------------------

def plot_zoh(A: float = -1.0, B: float = 1.0, deltas=None, ax: plt.Axes | None = None,
             title: str | None = None) -> plt.Axes:
    """A_bar = exp(delta A) and the two B_bar of :func:`localmamba.analysis.zoh_discretize`
    (exact zero-order hold and Mamba's delta B) against the step delta."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.2))
    deltas = np.linspace(0, 3, 121) if deltas is None else np.asarray(deltas, dtype=float)
    A_bar, B_zoh, B_mamba = analysis.zoh_discretize(A, B, deltas)
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
    """One curve per labelled response (e.g. from :func:`localmamba.analysis.impulse_response`);
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
        _plain_log_axis(ax.yaxis)
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


def plot_backend_timings(timings, ax: plt.Axes | None = None, title: str | None = None) -> plt.Axes:
    """ms per call against sequence length, one line per (backend, device), log-log, from
    :func:`localmamba.analysis.time_backends`."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    for (be, dev), grp in timings.groupby(["backend", "device"], sort=False):
        grp = grp.sort_values("length")
        ax.plot(grp["length"], grp["ms"], marker="o", lw=1.8, label=f"{be} ({dev})")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FormatStrFormatter("%d"))
    ax.set_xticks(sorted(timings["length"].unique()))
    _plain_log_axis(ax.yaxis)
    ax.set_xlabel("sequence length l")
    ax.set_ylabel("time per call (ms, median)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(title="backend")
    ax.set_title(title or "selective_scan speed by backend")
    return ax


# --------------------------------------------------------------------------------------------------
# Widgets
# --------------------------------------------------------------------------------------------------

def interactive_scan_view(image: np.ndarray | None = None, patch: int = 16, max_grid: int = 16, dpi: int = 80):
    """An ipywidgets view to pick a direction kind (h / v / wK), window size K, flip and grid size;
    it redraws :func:`plot_scan_path` (over ``image`` cut into patches when 'on image' is ticked).

    The drawing is a PNG in an ``ipywidgets.Image`` replaced when a control changes (see
    :func:`interactive_layer_view` for why not ``ipywidgets.interactive``). Returns the ``VBox``.
    """
    import ipywidgets as widgets

    kind = widgets.ToggleButtons(options=[("h (rows)", "h"), ("v (columns)", "v"), ("wK (windows)", "w")],
                                 value="w", description="kind")
    window = widgets.IntSlider(value=2, min=2, max=8, description="window K")
    flip = widgets.Checkbox(value=False, description="_flip")
    H = widgets.IntSlider(value=6, min=1, max=max_grid, description="grid H")
    W = widgets.IntSlider(value=6, min=1, max=max_grid, description="grid W")
    on_image = widgets.Checkbox(value=image is not None, description="on image", disabled=image is None)
    picture = widgets.Image(format="png")

    def render(*_):
        direction = direction_name(kind.value, window.value, flip.value)
        img = None
        if on_image.value and image is not None:
            img, _ = image_to_patches(image, (H.value, W.value), patch)
        fig, ax = plt.subplots(figsize=(5.5, 5.5))
        plot_scan_path(ax, direction, H.value, W.value, image=img)
        picture.value = figure_to_png(fig, dpi=dpi)

    for w in (kind, window, flip, H, W, on_image):
        w.observe(render, names="value")
    render()
    return widgets.VBox([widgets.HBox([kind, flip, on_image]), widgets.HBox([window, H, W]), picture])


# --------------------------------------------------------------------------------------------------
# Models: size and cost, direction merges, effective receptive fields, predictions
# --------------------------------------------------------------------------------------------------

def plot_model_summary(table, axes=None, title: str | None = None) -> plt.Figure:
    """Grouped bars of :func:`localmamba.analysis.model_summary`: parameters and FLOPs, ours next to
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
    """The channel-attention gates of one layer's merge (:class:`localmamba.analysis.MergeGates`).

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
    """Heat map layers x direction slots of :func:`localmamba.analysis.gate_summary` (``value``:
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


def figure_to_png(fig: plt.Figure, dpi: int = 90) -> bytes:
    """Render ``fig`` to PNG bytes and close it (for image widgets)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def interactive_layer_view(directions_per_layer: Sequence[Sequence[str]], gates: Sequence | None, H: int, W: int,
                           image: np.ndarray | None = None, layer: int = 0, dpi: int = 80):
    """An ipywidgets view with a layer slider that redraws :func:`plot_layer_merge` for that layer
    (``gates``: the list from :func:`localmamba.analysis.merge_gates`, or None).

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


def plot_erf(erfs: Mapping[str, np.ndarray], patch: int | None = None, token: tuple[int, int] | None = None,
             log: bool = True, vmin: float = 1e-4, panel_size: float = 4.2, title: str | None = None) -> plt.Figure:
    """Effective receptive fields side by side (from :func:`localmamba.analysis.effective_receptive_field`),
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
    """Horizontal bars of :func:`localmamba.analysis.top_k`: the k most probable classes, best on top."""
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
# Training runs: curves, confusion matrix, predictions (notebooks 04 and 05)
# --------------------------------------------------------------------------------------------------

def plot_curves(rows: list[dict], title: str = "", path: str | Path | None = None):
    """Loss (train / val) and accuracy (top-1 / top-5, EMA if present) against epochs."""
    ep = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(ep, [r["train_loss"] for r in rows], "o-", label="train (augmented)")
    if any(r.get("val_loss") is not None for r in rows):
        a.plot(ep, [r.get("val_loss") for r in rows], "s-", label="validation")
    a.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    a.legend()
    for key, style in (("top1", "o-"), ("top5", "s--"), ("ema_top1", "^-")):
        if any(r.get(key) is not None for r in rows):
            b.plot(ep, [r.get(key) for r in rows], style, label=key.replace("_", " "))
    b.set(xlabel="epoch", ylabel="accuracy (%)", title="validation accuracy")
    b.legend()
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_confusion_matrix(cm: np.ndarray, classes, title: str = "confusion matrix",
                          path: str | Path | None = None):
    """Row-normalised confusion matrix (rows: true class) with the counts written in the cells."""
    cm = np.asarray(cm)
    frac = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if frac[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, label="fraction of the true class")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def raw_image(ds, i: int) -> np.ndarray:
    """Image i of a dataset as r(H W 3) uint8, before any transform."""
    if isinstance(ds, InMemoryImages):
        return ds.images[i].numpy()
    from PIL import Image

    return np.asarray(Image.open(ds.samples[i][0]).convert("RGB"))


def plot_predictions(ds, logits, labels, classes, n: int = 16, seed: int = 0, title: str = "sample predictions",
                     path: str | Path | None = None):
    """A grid of ``n`` random images with predicted and true class (green right, red wrong)."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(labels), size=min(n, len(labels)), replace=False)
    prob = torch.as_tensor(logits).softmax(-1)
    cols = min(8, len(idx))
    rows = int(np.ceil(len(idx) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 0.5 + 2.3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), idx):
        p, t = int(prob[i].argmax()), int(labels[i])
        ax.imshow(raw_image(ds, int(i)), interpolation="nearest")
        ax.set_title(f"{classes[p]} {100 * prob[i, p]:.0f}%\n(true: {classes[t]})", fontsize=7,
                     color="green" if p == t else "red")
    fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
