"""localmamba.viz: the plots the notebooks save, checked on the Agg backend."""
import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.text import Annotation  # noqa: E402

from localmamba import analysis, viz  # noqa: E402
from localmamba.scan import ORIGINAL_CANDIDATES, scan_length  # noqa: E402

pd = pytest.importorskip("pandas")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _path_collection(ax):
    """The coloured path: the LineCollection with an array (the halo has none)."""
    found = [c for c in ax.collections if isinstance(c, LineCollection) and c.get_array() is not None]
    assert len(found) == 1
    return found[0]


# ---------------------------------------------------------------------------------------- images

def test_image_to_patches_shapes_and_layout():
    rng = np.random.default_rng(0)
    img = (rng.random((300, 451, 3)) * 255).astype(np.uint8)  # the shape of skimage's chelsea
    resized, patches = viz.image_to_patches(img, grid=14, patch=16)
    assert resized.shape == (224, 224, 3) and patches.shape == (14, 14, 16, 16, 3)
    assert resized.dtype == np.float32 and 0 <= resized.min() and resized.max() <= 1
    # patch (i, j) is the (i, j) block of the resized image
    assert np.array_equal(patches[3, 5], resized[48:64, 80:96])
    resized, patches = viz.image_to_patches(img[..., 0], grid=(4, 6), patch=8, crop=False)
    assert resized.shape == (32, 48, 1) and patches.shape == (4, 6, 8, 8, 1)
    with pytest.raises(ValueError, match="image must be"):
        viz.image_to_patches(np.zeros((2, 3, 4, 5)))


def test_plot_image_patches():
    img = np.random.default_rng(0).random((40, 60, 3))
    resized, patches = viz.image_to_patches(img, grid=(3, 4), patch=5)
    fig = viz.plot_image_patches(resized, patches, gap=2, title="t")
    left, right = fig.axes
    assert left.images[0].get_array().shape == (15, 20, 3)
    sheet = right.images[0].get_array()
    assert sheet.shape == (3 * 7 - 2, 4 * 7 - 2, 3)
    assert np.array_equal(sheet[7:12, 14:19], patches[1, 2])  # patch (1, 2) after 1 and 2 gaps
    assert "12 tokens" in right.get_title() and fig._suptitle.get_text() == "t"


# ------------------------------------------------------------------------------------- scan paths

def test_scan_path_coordinates():
    rows, cols, padded = viz.scan_path("h", 2, 3)
    assert rows.tolist() == [0, 0, 0, 1, 1, 1] and cols.tolist() == [0, 1, 2, 0, 1, 2]
    assert not padded.any()
    rows, cols, padded = viz.scan_path("v_flip", 2, 3)
    assert list(zip(rows, cols))[:2] == [(1, 2), (0, 2)]
    # w2 on 3x3: padded to 4x4, 16 steps of which 7 are padding, the first window is (0,0),(0,1),(1,0),(1,1)
    rows, cols, padded = viz.scan_path("w2", 3, 3)
    assert rows.size == scan_length("w2", 3, 3) == 16 and padded.sum() == 7
    assert list(zip(rows[:4], cols[:4])) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert list(zip(rows[4:8], cols[4:8])) == [(0, 2), (0, 3), (1, 2), (1, 3)]
    assert padded[5] and padded[7] and not padded[6]


def test_direction_name():
    assert viz.direction_name("w", 7, True) == "w7_flip"
    assert viz.direction_name("h", 5) == "h"
    with pytest.raises(ValueError):
        viz.direction_name("w", 1)


@pytest.mark.parametrize("direction,H,W", [("h", 4, 4), ("w2_flip", 3, 5), ("w7", 14, 14)])
def test_plot_scan_path_draws_the_path(direction, H, W):
    fig, ax = plt.subplots()
    out = viz.plot_scan_path(ax, direction, H, W)
    assert out is ax
    L = scan_length(direction, H, W)
    assert len(_path_collection(ax).get_segments()) == L - 1
    assert ax.get_title().startswith(f"{direction}: L = {L}")
    n_pad = L - H * W
    labels = [c.get_label() for c in ax.collections]
    assert ("padded step" in labels) == (n_pad > 0)
    if n_pad:
        assert f"({n_pad} padded)" in ax.get_title()
    # small grids get step numbers and arrows, large ones neither
    n_arrows = sum(1 for t in ax.texts if isinstance(t, Annotation))
    n_text = len(ax.texts) - n_arrows
    assert n_text == (L if L <= 64 else 0)
    assert n_arrows == (L - 1 if L <= 64 else 0)


def test_plot_scan_path_on_image():
    img = np.random.default_rng(0).random((64, 64, 3))
    resized, _ = viz.image_to_patches(img, 4, 8)
    fig, ax = plt.subplots()
    viz.plot_scan_path(ax, "w3", 4, 4, image=resized, numbers=False, arrows=False, title="custom")
    assert len(ax.images) == 1 and ax.get_title() == "custom"
    # the view shows the padded grid (6x6) in token coordinates
    assert ax.get_xlim() == (-0.5, 5.5) and ax.get_ylim() == (5.5, -0.5)
    grey, _ = viz.image_to_patches(img[..., 0], 4, 8)  # (32, 32, 1)
    fig, ax = plt.subplots()
    viz.plot_scan_path(ax, "h", 4, 4, image=grey)
    assert ax.images[0].get_array().shape == (32, 32)


def test_plot_scan_grid_one_panel_per_direction():
    fig = viz.plot_scan_grid(ORIGINAL_CANDIDATES, 14, 14, ncols=4)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title().split(":")[0] for ax in panels] == list(ORIGINAL_CANDIDATES)
    assert len(fig.axes) == 8 + 1  # + the colour bar
    assert fig.legends and "Scan orders" in fig._suptitle.get_text()
    fig = viz.plot_scan_grid(["w3", "w4", "w5"], 6, 6, ncols=2)
    assert sum(ax.get_visible() for ax in fig.axes) == 3 + 1
    legend_texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "padded step (zeros)" in legend_texts  # w4 and w5 pad a 6x6 grid
    # step numbers on all panels or on none: w5 on 8x8 scans 100 steps, too many to number
    fig = viz.plot_scan_grid(["h", "w4", "w5"], 8, 8)
    assert all(len([t for t in ax.texts if not isinstance(t, Annotation)]) == 0 for ax in fig.axes)
    fig = viz.plot_scan_grid(["h", "w4"], 8, 8)
    assert [len([t for t in ax.texts if not isinstance(t, Annotation)]) for ax in fig.axes[:2]] == [64, 64]


# -------------------------------------------------------------------------------- locality plots

def test_plot_neighbour_distances_bars():
    stats = analysis.neighbour_distance_stats(["h", "w2", ("h", "h_flip", "w2", "w2_flip")], 8, 8)
    ax = viz.plot_neighbour_distances(stats, columns=("mean", "p50", "max"))
    assert len(ax.patches) == 3 * 3
    assert [t.get_text() for t in ax.get_xticklabels()] == list(stats.index)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["mean", "median", "max"]
    assert ax.get_ylabel() and ax.get_title()


def test_plot_neighbour_distance_cdf():
    sets = ["h", "w7", ("h", "h_flip", "w7", "w7_flip")]
    ax = viz.plot_neighbour_distance_cdf(sets, 14, 14)
    assert len(ax.lines) == 3
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["h", "w7", "h+h_flip+w7+w7_flip"]
    # each curve ends at 1 (all pairs) and starts at the smallest distance
    assert all(line.get_ydata()[-1] == pytest.approx(1.0) for line in ax.lines)


def test_plot_locality_maps():
    fig = viz.plot_locality_maps(["h", "w2", ("h", "v", "w7")], 14, 14, ncols=2)
    images = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert len(images) == 3
    assert np.array_equal(images[0], np.maximum(analysis.neighbourhood_span("h", 14, 14), 1))
    assert fig.axes[2].get_title().startswith("h+v+w7")


def test_plot_padding_overhead():
    table = analysis.padding_overhead_table(["w2", "w7"], range(4, 20))
    ax = viz.plot_padding_overhead(table, highlight=(14,))
    data_lines = [ln for ln in ax.lines if ln.get_label() in ("w2", "w7")]
    assert len(data_lines) == 2
    assert np.allclose(data_lines[1].get_ydata(), table["w7"].to_numpy())
    assert any(t.get_text().strip() == "14x14" for t in ax.texts)


# ------------------------------------------------------------------------------ scan / op plots

def test_plot_zoh():
    ax = viz.plot_zoh(A=-2.0, B=1.0, deltas=np.linspace(0, 2, 11))
    assert len(ax.lines) == 3 and len(ax.get_legend().get_texts()) == 3
    A_bar, B_zoh, B_mamba = analysis.zoh_discretize(-2.0, 1.0, np.linspace(0, 2, 11))
    assert np.allclose(ax.lines[0].get_ydata(), A_bar) and np.allclose(ax.lines[2].get_ydata(), B_mamba)
    assert "A = -2" in ax.get_title()


def test_plot_impulse_responses():
    y = {"A=-0.5": np.exp(-0.5 * np.arange(10)), "A=-2": np.exp(-2 * np.arange(10))}
    ax = viz.plot_impulse_responses(y, impulse_at=0, events={"delta spike": 5}, title="decay")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["A=-0.5", "A=-2", "input impulse", "delta spike"]
    assert ax.get_title() == "decay" and ax.get_xlabel() == "step t"
    ax = viz.plot_impulse_responses(y, styles={"A=-2": {"lw": 5, "color": "0.5"}}, logy=True)
    assert ax.lines[1].get_linewidth() == 5 and ax.get_yscale() == "log"


def test_plot_backend_timings():
    df = pd.DataFrame({"backend": ["ref", "ref", "torch", "torch"], "device": ["cpu"] * 4,
                       "length": [16, 32, 16, 32], "ms": [2.0, 4.0, 0.5, 0.6]})
    ax = viz.plot_backend_timings(df)
    assert [ln.get_label() for ln in ax.lines] == ["ref (cpu)", "torch (cpu)"]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"


def test_save_figure(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    path = viz.save_figure(fig, tmp_path / "sub", "x")
    assert path == tmp_path / "sub" / "x.png" and path.read_bytes()[:4] == b"\x89PNG"


def test_interactive_scan_view_builds():
    widgets = pytest.importorskip("ipywidgets")
    w = viz.interactive_scan_view(np.zeros((32, 32, 3)))
    assert isinstance(w, widgets.interactive)
    names = {c.description for c in w.children if hasattr(c, "description")}
    assert {"kind", "window K", "_flip", "grid H", "grid W", "on image"} <= names
    w.kwargs_widgets[0].value = "h"  # changing a control redraws without error
