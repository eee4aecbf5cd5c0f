"""Pictures of a search: which directions each layer prefers, and how the preference formed over training."""
from __future__ import annotations

import json
import math
import os
from typing import Sequence

import numpy as np

__all__ = ["PROBS_FIELD", "load_history", "plot_search", "plot_directions"]

#: the metrics.jsonl field (one list of K probabilities per layer) that a search run logs every epoch
PROBS_FIELD = "direction_probs"


def load_history(metrics: str | os.PathLike | Sequence[dict]) -> tuple[list[int], np.ndarray]:
    """(epochs, probabilities (E, layers, K)) from a search run's metrics.jsonl (a path, its folder, or rows)."""
    if isinstance(metrics, (str, os.PathLike)):
        path = os.fspath(metrics)
        if os.path.isdir(path):
            path = os.path.join(path, "metrics.jsonl")
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    else:
        rows = list(metrics)
    rows = [r for r in rows if r.get(PROBS_FIELD) is not None]
    if not rows:
        raise ValueError(f"no epoch with '{PROBS_FIELD}' in these metrics: not a search run's metrics.jsonl")
    return [int(r["epoch"]) for r in rows], np.asarray([r[PROBS_FIELD] for r in rows], dtype=np.float64)


def _cells(chosen, candidates: Sequence[str]) -> list[tuple[int, int]]:
    index = {c: j for j, c in enumerate(candidates)}
    return [(i, index[d]) for i, ds in enumerate(chosen) for d in ds if d in index]


def plot_search(probabilities, candidates: Sequence[str] | None = None, chosen=None, history=None,
                reference=None, title: str | None = None, layer_label: str = "layer"):
    """A figure: the layers x candidates heatmap of the final probabilities (in %), with the ``chosen`` cells
    framed and the ``reference`` cells (e.g. the paper's directions) dotted; with ``history`` = (epochs,
    (E, L, K)) (see :func:`load_history`), below it one panel per layer with each candidate's probability over
    the epochs, the chosen ones drawn solid. The panels are stacked, 8 inches wide, so that the figure stays
    legible at page width (about 800 px) however many layers and candidates there are.

    ``probabilities`` may be a :class:`~localmamba.models.directions.DirectionSpec`, whose probabilities,
    candidates and directions (as ``chosen``) are then used.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    if hasattr(probabilities, "directions") and hasattr(probabilities, "candidates"):  # a DirectionSpec
        spec = probabilities
        if spec.probabilities is None:
            raise ValueError("this direction spec has no probabilities to plot (it was not derived by a search)")
        candidates = candidates or spec.candidates
        chosen = spec.directions if chosen is None else chosen
        probabilities = spec.probabilities
    probs = np.asarray(probabilities, dtype=np.float64)  # (L, K)
    if candidates is None:
        raise ValueError("candidates are needed to label the heatmap's columns")
    L, K = probs.shape
    if K != len(candidates):
        raise ValueError(f"{K} probability columns for {len(candidates)} candidates {tuple(candidates)}")
    if history is not None:
        epochs, h = history
        h = np.asarray(h, dtype=np.float64)  # (E, L, K)
        if h.shape[1:] != probs.shape:
            raise ValueError(f"history has layers x candidates {h.shape[1:]}, the probabilities {probs.shape}")

    cols = min(L, 4 if L <= 8 else 6)  # history panels a row
    rows = math.ceil(L / cols)
    heights = [max(2.4, 1.3 + 0.3 * L)] + ([0.8 + 1.7 * rows] if history is not None else [])
    fig = plt.figure(figsize=(8, sum(heights)), layout="constrained")
    figs = fig.subfigures(len(heights), 1, height_ratios=heights, hspace=0.04) if history is not None else [fig]

    ax = figs[0].subplots()
    # colours diverge from the uniform 1/K where the search starts: red above it, blue below, white at it
    spread = max(float(np.abs(probs - 1 / K).max()), 1e-6)
    pct = 100 * probs
    norm = TwoSlopeNorm(100 / K, vmin=100 * max(1 / K - spread, 0.0), vmax=100 * (1 / K + spread))  # not below 0 %
    im = ax.imshow(pct, cmap="RdBu_r", norm=norm, aspect="auto")
    ax.set_xticks(range(K), candidates, fontsize=10)
    ax.set_yticks(range(L), [str(i) for i in range(L)], fontsize=10 if L <= 12 else 8)
    ax.set_ylabel(layer_label, fontsize=10)
    ax.tick_params(length=0)
    if L <= 32 and K <= 12:  # one rounded number a cell while the cells are big enough to hold it
        fmt = ".1f" if spread < 0.05 else ".0f"
        for i in range(L):
            for j in range(K):
                ax.text(j, i, format(pct[i, j], fmt), ha="center", va="center", fontsize=9 if L <= 12 else 7,
                        color="white" if abs(norm(pct[i, j]) - 0.5) > 0.3 else "black")
    for i, j in _cells(chosen or [], candidates):
        ax.add_patch(plt.Rectangle((j - 0.45, i - 0.4), 0.9, 0.8, fill=False, edgecolor="black",  # gaps between
                                   linewidth=2 if L <= 12 else 1.4))  # the frames of neighbouring chosen cells
    for i, j in _cells(reference or [], candidates):
        ax.plot(j + 0.34, i - 0.3, "o", color="white", markeredgecolor="black", markersize=6)
    cbar = figs[0].colorbar(im, ax=ax, shrink=0.9, aspect=15, pad=0.02)
    cbar.set_label(f"probability (%); white: uniform {100 / K:.1f}", fontsize=9)
    cbar.ax.tick_params(labelsize=9)
    legend = ("framed: chosen" if chosen else "") + ("; dot: reference" if reference else "")
    ax.set_title((title or "direction probabilities") + (f" ({legend.strip('; ')})" if legend else ""), fontsize=11)

    if history is not None:
        axes = np.atleast_1d(figs[1].subplots(rows, cols, sharex=True, sharey=True, squeeze=False)).ravel()
        picked = set(_cells(chosen or [], candidates))
        palette = [plt.get_cmap("tab10")(c) for c in (0, 1, 2, 3, 4, 5, 6, 8, 9)]  # no gray: that is the 1/K line
        colors = lambda j: palette[j % len(palette)]  # noqa: E731
        for i in range(L):
            a = axes[i]
            a.axhline(100 / K, color="gray", lw=0.8)
            for j in range(K):
                solid = (i, j) in picked or not picked
                a.plot(epochs, 100 * h[:, i, j], color=colors(j), lw=1.8 if solid else 1.0, ls="-" if solid else ":")
            a.set_title(f"{layer_label} {i}", fontsize=10, pad=3)
            a.tick_params(labelsize=8)
            a.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        for a in axes[L:]:
            a.set_visible(False)
        for a in axes[max(0, L - cols):L]:
            a.set_xlabel("epoch", fontsize=9)
        for a in axes[0:L:cols]:
            a.set_ylabel("probability (%)", fontsize=9)
        handles = [Line2D([], [], color=colors(j), lw=2) for j in range(K)]
        handles.append(Line2D([], [], color="gray", lw=0.8))
        labels = list(candidates) + [f"uniform {100 / K:.1f}"]
        figs[1].legend(handles, labels, loc="outside upper center", ncols=min(len(labels), 5 if K > 8 else 9),
                       fontsize=9, frameon=False, handlelength=1.5, columnspacing=1.2,
                       title="over training: each candidate's probability" + ("; solid: chosen, dotted: not"
                                                                               if picked else ""),
                       title_fontsize=10)
    return fig


def plot_directions(sets: dict, candidates: Sequence[str] | None = None, layer_label: str = "layer",
                    cols: int = 2):
    """Direction sets, one panel per entry of ``sets`` (name -> one list of directions per layer), ``cols``
    panels a row: each a candidates x layers grid with the chosen cells filled and, above each layer in red,
    its number of windowed (local) directions. Layers run along x, one square cell each, so a 24-layer model
    stays legible at page width (about 800 px). ``candidates`` (the rows) default per panel to h, v and the
    window sizes the panel uses, each with its flip."""
    import matplotlib.pyplot as plt

    from ..scan import parse_direction

    sets = {name: [list(d) for d in ds] for name, ds in sets.items()}

    def columns(ds) -> list[str]:  # h, v and every window size the panel uses (w2 at least), each with its flip
        windows = sorted({2} | {parse_direction(d).window for layer in ds for d in layer if parse_direction(d).window})
        return ["h", "h_flip", "v", "v_flip"] + [f"w{k}{f}" for k in windows for f in ("", "_flip")]

    entries = list(sets.items())
    rows = [entries[i:i + cols] for i in range(0, len(entries), cols)]
    cell = 0.2  # inches per grid cell
    span = lambda ds: max(len(ds), 10)  # a panel's width in cells: room for its title when the model is shallow
    width = max(sum(span(ds) * cell + 1.0 for _, ds in row) for row in rows)
    heights = [max(len(candidates or columns(ds)) for _, ds in row) * cell + 1.4 for row in rows]
    fig = plt.figure(figsize=(max(width, 5.0), sum(heights)), layout="constrained")
    subfigs = fig.subfigures(len(rows), 1, height_ratios=heights, squeeze=False)[:, 0]
    for sub, row in zip(subfigs, rows):
        axes = sub.subplots(1, len(row), width_ratios=[span(ds) for _, ds in row], squeeze=False)[0]
        for ax, (name, ds) in zip(axes, row):
            cands = list(candidates or columns(ds))
            grid = np.zeros((len(cands), len(ds)))  # (candidates, layers)
            for i, j in _cells(ds, cands):
                grid[j, i] = 1
            ax.imshow(grid, cmap="Greys", vmin=0, vmax=1.6, aspect="equal")
            ax.set_xticks(range(len(ds)), [str(i) for i in range(len(ds))], fontsize=7)
            ax.set_yticks(range(len(cands)), cands, fontsize=8)
            ax.set_xlabel(layer_label, fontsize=8)
            ax.set_xticks(np.arange(len(ds) + 1) - 0.5, minor=True)  # white lines between the cells
            ax.set_yticks(np.arange(len(cands) + 1) - 0.5, minor=True)
            ax.grid(which="minor", color="white", lw=1.0)
            ax.tick_params(which="minor", length=0)
            local = [sum(parse_direction(d).kind == "w" for d in layer) for layer in ds]
            top = ax.secondary_xaxis("top")
            top.set_xticks(range(len(ds)), [str(n) for n in local], fontsize=7, color="C3")
            top.tick_params(length=0, pad=1)
            ax.set_title(f"{name}\n{sum(local)} of {sum(len(x) for x in ds)} local (red: per layer)", fontsize=9)
    return fig
