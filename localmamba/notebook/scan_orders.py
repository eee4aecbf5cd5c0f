"""Notebook 01 (scan orders): images cut into tokens, the path each scan direction takes over the token
grid, how far apart 2-D neighbours end up in 1-D (scan locality), and what padding to windows costs.

Scan locality (the paper's motivation). A scan direction turns the HxW token grid into a sequence;
``t(p)`` is the step at which token ``p`` is visited. Two tokens that touch in 2-D (4-neighbours)
end up ``|t(p) - t(q)|`` steps apart in 1-D. A row-major scan keeps horizontal neighbours 1 apart but
puts vertical neighbours W apart; a windowed scan (``wK``) keeps every neighbour pair inside a window
close, at the price of a few long jumps across window borders. A layer that scans in several
directions sees each pair at the smallest distance over its directions.

The numbers (numpy arrays, pandas DataFrames) come first in each section, the plots that show them
after; every ``plot_*`` draws on an ``ax`` it is given (or a new figure) and returns it. Over 500 lines
on purpose: these are all of notebook 01's helpers, kept in one file so that its reader finds them.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import patheffects
from matplotlib.collections import LineCollection
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from ..scan import parse_direction, scan_length, scan_order, scan_positions
from .common import PATH_CMAP, figure_to_png, plain_log_axis, plain_log_ticks

__all__ = [
    "image_to_patches", "plot_image_patches", "scan_path", "direction_name", "plot_scan_path", "plot_scan_grid",
    "interactive_scan_view",
    "direction_label", "sequence_positions", "neighbour_pairs", "neighbour_distances", "neighbour_distance_stats",
    "neighbourhood_span", "neighbourhood_span_stats", "padding_overhead", "padding_overhead_table",
    "plot_neighbour_distances", "plot_neighbour_distance_cdf", "plot_locality_maps", "plot_padding_overhead",
]

_PAD_COLOR = "0.55"

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


def _panels(n: int, ncols: int, panel_size: float, extra: tuple[float, float]) -> tuple[plt.Figure, np.ndarray]:
    """A figure of ``n`` square panels, ``ncols`` a row, ``extra`` inches (width, height) for the colour
    bar and titles; the unused cells of the last row are hidden."""
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size * ncols + extra[0], panel_size * nrows + extra[1]),
                             squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes


def plot_scan_grid(directions: Sequence[str], H: int, W: int, image: np.ndarray | None = None,
                   ncols: int = 4, panel_size: float = 3.0, suptitle: str | None = None,
                   **path_kwargs) -> plt.Figure:
    """One :func:`plot_scan_path` panel per direction, a shared colour bar (start -> end) and a legend."""
    directions = list(directions)
    if not directions:
        raise ValueError("need at least one direction")
    fig, axes = _panels(len(directions), ncols, panel_size, extra=(1.0, 0.9))
    small = all(scan_length(d, H, W) <= 64 for d in directions)  # same annotations on every panel
    path_kwargs.setdefault("numbers", small)
    path_kwargs.setdefault("arrows", small)
    for ax, d in zip(axes.flat, directions):
        plot_scan_path(ax, d, H, W, image=image, **path_kwargs)
    cmap = path_kwargs.get("cmap", PATH_CMAP)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
    cb = fig.colorbar(sm, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02)
    cb.set_label("position in the sequence (0 = start, 1 = end)")
    padded = any(scan_length(d, H, W) > H * W for d in directions)
    _path_legend(fig, cmap, padded)
    fig.suptitle(suptitle or f"Scan orders on a {H}x{W} token grid", fontsize=13)
    return fig


# --------------------------------------------------------------------------------------------------
# Widget
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
# Scan locality and padding: the numbers
# --------------------------------------------------------------------------------------------------

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
# Scan locality and padding: the plots
# --------------------------------------------------------------------------------------------------

def plot_neighbour_distances(stats, ax: plt.Axes | None = None,
                             columns: Sequence[str] = ("mean", "p50", "p90", "max"),
                             title: str | None = None, log: bool = True) -> plt.Axes:
    """Grouped bars of neighbour-distance statistics, one group per row of
    :func:`neighbour_distance_stats`.

    With ``log`` the bars rise from 0.5 rather than 0 (a log axis has no 0; neighbours are at least
    1 step apart, so every bar keeps a visible height), and each bar is labelled with its value."""
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6, 0.9 * len(stats) + 2), 4))
    labels = list(stats.index)
    x = np.arange(len(labels))
    width = 0.8 / len(columns)
    names = {"mean": "mean", "max": "max", "p50": "median"}
    base = 0.5 if log else 0.0
    for k, col in enumerate(columns):
        values = stats[col].to_numpy(dtype=float)
        bars = ax.bar(x + (k - (len(columns) - 1) / 2) * width, values - base, width, bottom=base,
                      label=names.get(col, col))
        if len(labels) * len(columns) <= 60:  # value labels while they fit
            ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], fontsize=6, padding=1, rotation=90)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30, ha="right")
    top = float(np.nanmax(stats[list(columns)].to_numpy(dtype=float)))
    if log:
        plain_log_axis(ax.yaxis)
        ax.set_ylim(base, top * 2.2)  # room for the value labels
    else:
        ax.set_ylim(0, top * 1.2)
    ax.set_ylabel("|t(p) - t(q)| for 2-D neighbours p, q\n(steps apart in the sequence" + (", log)" if log else ")"))
    ax.set_xlabel("scan direction(s)")
    ax.legend(title="over neighbour pairs", fontsize=8, ncol=len(columns), loc="upper left")
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.set_title(title or "How far apart 2-D neighbours end up in 1-D")
    return ax


def plot_neighbour_distance_cdf(directions: Sequence, H: int, W: int, ax: plt.Axes | None = None,
                                title: str | None = None) -> plt.Axes:
    """Share of 4-neighbour pairs at most x steps apart, one curve per direction (or layer set).

    Directions with the same distances (``h`` and ``v`` on a square grid, a direction and its flip)
    would draw the same curve on top of each other: they share one curve, labelled 'h = v'."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    curves: dict[bytes, tuple[np.ndarray, list]] = {}  # distinct sorted distances -> (distances, directions)
    for ds in directions:
        dist = np.sort(neighbour_distances(ds, H, W))
        curves.setdefault(dist.tobytes() + bytes(str(dist.size), "ascii"), (dist, []))[1].append(ds)
    for dist, group in curves.values():
        frac = np.arange(1, dist.size + 1) / dist.size
        one = isinstance(group[0], str)
        ax.step(dist, frac, where="post", label=" = ".join(direction_label(ds) for ds in group),
                lw=1.6 if one else 2.2, ls="-" if one else "--")
    plain_log_axis(ax.xaxis)
    ax.set_xlabel("distance in the sequence |t(p) - t(q)| (steps, log scale)")
    ax.set_ylabel("share of neighbour pairs within that distance")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right", title="same distances share a curve" if
              any(len(g) > 1 for _, g in curves.values()) else None, title_fontsize=8)
    ax.set_title(title or f"Neighbour distances on a {H}x{W} grid (higher = more local)")
    return ax


def plot_locality_maps(directions: Sequence, H: int, W: int, connectivity: int = 8, ncols: int = 4,
                       panel_size: float = 2.8, vmax: float | None = None) -> plt.Figure:
    """Heat maps of :func:`neighbourhood_span`: for each token, how many steps
    its farthest neighbour is in the sequence (for a set: in the best of its scans). One panel per
    direction or layer set, on a shared log colour scale."""
    directions = list(directions)
    maps = [neighbourhood_span(ds, H, W, connectivity) for ds in directions]
    fig, axes = _panels(len(maps), ncols, panel_size, extra=(1.2, 0.7))
    vmax = vmax or max(m.max() for m in maps)
    norm = plt.matplotlib.colors.LogNorm(vmin=1, vmax=max(vmax, 2))
    for ax, ds, m in zip(axes.flat, directions, maps):
        im = ax.imshow(np.maximum(m, 1), cmap="magma_r", norm=norm)
        ax.set_title(f"{direction_label(ds)}\nmean {m.mean():.1f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    cb = fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02)
    plain_log_ticks(cb.ax.yaxis)
    cb.set_label("steps to the farthest neighbour (log)")
    fig.suptitle(f"Neighbourhood span per token ({connectivity}-neighbours, {H}x{W} grid): "
                 "dark = the neighbourhood is spread far apart in the sequence", fontsize=11)
    return fig


def plot_padding_overhead(table, ax: plt.Axes | None = None, highlight: Sequence[int] = (),
                          title: str | None = None) -> plt.Axes:
    """Lines of :func:`padding_overhead_table`: padded length / tokens per grid size."""
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
