"""Notebooks 04 and 05 (training): loss and accuracy curves, the confusion matrix, sample predictions."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from ..engine.data import InMemoryImages
from .common import write_png

__all__ = ["plot_curves", "plot_confusion_matrix", "raw_image", "plot_predictions"]

# --------------------------------------------------------------------------------------------------
# Training runs
# --------------------------------------------------------------------------------------------------

def plot_curves(rows: list[dict], title: str = "", path: str | Path | None = None):
    """Loss (train / val) and accuracy (top-1 / top-5, EMA if present) against epochs, from the rows of a
    run's ``metrics.jsonl``; saved as the PNG ``path`` when given."""
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
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs, not 1.2, 1.4, ...
    return _finish(fig, title, path)


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
    return _finish(fig, None, path)


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
    return _finish(fig, title, path)


def _finish(fig: plt.Figure, title: str | None, path: str | Path | None) -> plt.Figure:
    """Title and lay out ``fig``, and save it as the PNG ``path`` when given."""
    if title is not None:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        write_png(fig, path)
    return fig
