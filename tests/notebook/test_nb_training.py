"""localmamba.notebook.training (notebooks 04, 05): curves, confusion matrix, sample predictions."""
import numpy as np
import torch

from localmamba.engine.data import InMemoryImages
from localmamba.notebook import training


def _rows(epochs=3):
    return [{"epoch": e + 1, "train_loss": 2.0 - 0.3 * e, "val_loss": 2.1 - 0.3 * e, "top1": 20.0 + 10 * e,
             "top5": 60.0 + 5 * e, "ema_top1": None} for e in range(epochs)]


def test_plot_curves(tmp_path):
    fig = training.plot_curves(_rows(), "tiny run", tmp_path / "curves.png")
    loss, acc = fig.axes
    assert [ln.get_label() for ln in loss.lines] == ["train (augmented)", "validation"]
    assert [ln.get_label() for ln in acc.lines] == ["top1", "top5"]  # no EMA values: no EMA curve
    assert list(acc.lines[0].get_ydata()) == [20.0, 30.0, 40.0]
    assert all(float(t).is_integer() for t in loss.get_xticks())  # whole epochs on the axis
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_confusion_matrix(tmp_path):
    cm = np.array([[3, 1], [0, 4]])
    fig = training.plot_confusion_matrix(cm, ["cat", "dog"], path=tmp_path / "cm.png")
    ax = fig.axes[0]
    assert np.allclose(ax.images[0].get_array(), [[0.75, 0.25], [0, 1]])  # rows normalised
    assert [t.get_text() for t in ax.texts] == ["3", "1", "0", "4"]
    assert (tmp_path / "cm.png").is_file()


def test_plot_predictions(tmp_path):
    g = torch.Generator().manual_seed(0)
    ds = InMemoryImages(torch.randint(0, 256, (10, 8, 8, 3), dtype=torch.uint8, generator=g),
                        torch.arange(10) % 2, ["cat", "dog"])
    logits = torch.zeros(10, 2)
    logits[:, 0] = 1.0  # always "cat": right on the even images, wrong on the odd ones
    fig = training.plot_predictions(ds, logits, ds.labels, ds.classes, n=6, path=tmp_path / "pred.png")
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 6
    for ax in shown:
        right = ax.title.get_text().endswith("(true: cat)")
        assert ax.title.get_color() == ("green" if right else "red")
    assert np.array_equal(training.raw_image(ds, 3), ds.images[3].numpy())
    assert (tmp_path / "pred.png").is_file()
