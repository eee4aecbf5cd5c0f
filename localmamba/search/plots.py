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
    """A figure: the layers x candidates heatmap of the final probabilities, with the ``chosen`` cells framed
    and the ``reference`` cells (e.g. the paper's directions) dotted; with ``history`` = (epochs, (E, L, K))
    (see :func:`load_history`), beside it one small panel per layer with each candidate's probability over
    the epochs, the chosen ones drawn solid.

    ``probabilities`` may be a :class:`~localmamba.models.directions.DirectionSpec`, whose probabilities,
    candidates and directions (as ``chosen``) are then used.
    """
    import matplotlib.pyplot as plt

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

    n_hist = 0 if history is None else 1
    fig = plt.figure(figsize=(4 + 0.45 * K + 7 * n_hist, max(3.4, 1.4 + 0.32 * L)), layout="constrained")
    figs = fig.subfigures(1, 1 + n_hist, width_ratios=[4 + 0.45 * K] + [7] * n_hist) if n_hist else [fig]
    ax = figs[0].subplots()
    # colours diverge from the uniform 1/K where the search starts: red above it, blue below, white at it
    spread = max(float(np.abs(probs - 1 / K).max()), 1e-6)
    im = ax.imshow(probs, cmap="RdBu_r", vmin=1 / K - spread, vmax=1 / K + spread, aspect="auto")
    ax.set_xticks(range(K), candidates, rotation=45, ha="right")
    ax.set_yticks(range(L), [str(i) for i in range(L)])
    ax.set_ylabel(layer_label)
    if L * K <= 400:
        fmt = ".3f" if spread < 0.05 else ".2f"
        for i in range(L):
            for j in range(K):
                ax.text(j, i, format(probs[i, j], fmt), ha="center", va="center", fontsize=6,
                        color="white" if abs(probs[i, j] - 1 / K) > 0.6 * spread else "black")
    for i, j in _cells(chosen or [], candidates):
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.8))
    for i, j in _cells(reference or [], candidates):
        ax.plot(j + 0.32, i - 0.28, "o", color="white", markeredgecolor="black", markersize=4)
    figs[0].colorbar(im, ax=ax, shrink=0.8, label=f"probability (white: uniform 1/{K})")
    legend = ("framed: chosen" if chosen else "") + ("; dot: reference" if reference else "")
    ax.set_title((title or "direction probabilities") + (f"\n{legend.strip('; ')}" if legend else ""), fontsize=9)

    if history is not None:
        epochs, h = history
        h = np.asarray(h, dtype=np.float64)  # (E, L, K)
        if h.shape[1:] != probs.shape:
            raise ValueError(f"history has layers x candidates {h.shape[1:]}, the probabilities {probs.shape}")
        cols = min(L, max(3, math.ceil(math.sqrt(L * 1.5))))
        rows = math.ceil(L / cols)
        axes = np.atleast_1d(figs[1].subplots(rows, cols, sharex=True, sharey=True)).ravel()
        picked = set(_cells(chosen or [], candidates))
        palette = [plt.get_cmap("tab10")(c) for c in (0, 1, 2, 3, 4, 5, 6, 8, 9)]  # no gray: that is the 1/K line
        colors = lambda j: palette[j % len(palette)]  # noqa: E731
        for i in range(L):
            a = axes[i]
            for j in range(K):
                solid = (i, j) in picked or not picked
                a.plot(epochs, h[:, i, j], color=colors(j), lw=1.4 if solid else 0.8,
                       ls="-" if solid else ":", label=candidates[j] if i == 0 else None)
            a.axhline(1 / K, color="gray", lw=0.5)
            a.set_title(f"{layer_label} {i}", fontsize=8)
            a.tick_params(labelsize=6)
        for a in axes[L:]:
            a.set_visible(False)
        for a in axes[max(0, L - cols):L]:
            a.set_xlabel("epoch", fontsize=7)
        figs[1].supylabel("probability (gray: uniform 1/K)", fontsize=8)
        figs[1].legend(loc="outside lower center", ncols=min(K, 8), fontsize=7, frameon=False)
        figs[1].suptitle("over training (solid: chosen)", fontsize=9)
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
