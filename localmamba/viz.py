"""Plots shared by the notebooks: scan paths, scan locality, padding cost, impulse responses, timings.

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
from .scan import parse_direction, scan_length, scan_order

__all__ = [
    "image_to_patches", "plot_image_patches", "scan_path", "direction_name", "plot_scan_path", "plot_scan_grid",
    "plot_neighbour_distances", "plot_neighbour_distance_cdf", "plot_locality_maps",
    "plot_padding_overhead", "plot_zoh", "plot_impulse_responses", "plot_backend_timings",
    "interactive_scan_view", "save_figure",
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
    Hp, Wp = max(Hp, H), max(Wp, W)

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

def interactive_scan_view(image: np.ndarray | None = None, patch: int = 16, max_grid: int = 16):
    """An ipywidgets view to pick a direction kind (h / v / wK), window size K, flip and grid size;
    it redraws :func:`plot_scan_path` (over ``image`` cut into patches when 'on image' is ticked).

    Returns the ``ipywidgets.interactive`` object; display it in a notebook.
    """
    import ipywidgets as widgets

    def show(kind="w", window=2, flip=False, H=6, W=6, on_image=False):
        direction = direction_name(kind, window, flip)
        img = None
        if on_image and image is not None:
            img, _ = image_to_patches(image, (H, W), patch)
        fig, ax = plt.subplots(figsize=(5.5, 5.5))
        plot_scan_path(ax, direction, H, W, image=img)
        plt.show()

    return widgets.interactive(
        show,
        kind=widgets.ToggleButtons(options=[("h (rows)", "h"), ("v (columns)", "v"), ("wK (windows)", "w")],
                                   value="w", description="kind"),
        window=widgets.IntSlider(value=2, min=2, max=8, description="window K"),
        flip=widgets.Checkbox(value=False, description="_flip"),
        H=widgets.IntSlider(value=6, min=1, max=max_grid, description="grid H"),
        W=widgets.IntSlider(value=6, min=1, max=max_grid, description="grid W"),
        on_image=widgets.Checkbox(value=image is not None, description="on image",
                                  disabled=image is None),
    )
