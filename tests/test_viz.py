"""localmamba.viz: the plots the notebooks save, checked on the Agg backend."""
import numpy as np
import pytest
import torch

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
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


def test_interactive_scan_view_builds_and_redraws():
    widgets = pytest.importorskip("ipywidgets")
    w = viz.interactive_scan_view(np.zeros((32, 32, 3)))
    assert isinstance(w, widgets.VBox)
    controls = {c.description: c for box in w.children[:2] for c in box.children}
    assert {"kind", "window K", "_flip", "grid H", "grid W", "on image"} <= set(controls)
    picture = w.children[2]
    before = picture.value
    assert before[:4] == b"\x89PNG"
    controls["kind"].value = "h"  # changing a control redraws the picture
    assert picture.value[:4] == b"\x89PNG" and picture.value != before


# ------------------------------------------------------------------------------------------- models

def test_plot_model_summary():
    nan = float("nan")
    table = pd.DataFrame({"params (M)": [7.99, 25.5], "paper params (M)": [7.99, nan],
                          "FLOPs (G)": [1.48, nan], "paper FLOPs (G)": [1.5, 5.7]},
                         index=pd.Index(["local_vim_tiny", "local_vssm_tiny"], name="model"))
    fig = viz.plot_model_summary(table)
    params_ax, flops_ax = fig.axes
    assert len(params_ax.patches) == len(flops_ax.patches) == 4  # ours + paper per model
    assert [t.get_text() for t in params_ax.get_xticklabels()] == list(table.index)
    assert sum(t.get_text() == "n/a" for t in params_ax.texts) == 1
    assert sum(t.get_text() == "n/a" for t in flops_ax.texts) == 1
    assert {"1.48", "1.5", "5.7"} <= {t.get_text() for t in flops_ax.texts}


def _gates(K=3, C=16, B=2, seed=0):
    return np.random.default_rng(seed).uniform(0.3, 0.7, size=(B, K, C))


def test_plot_merge_gates_groups_channels():
    g = _gates()
    fig = viz.plot_merge_gates(g, ["h", "v", "w2"], title="t")
    heat = fig.axes[0].images[0].get_array()
    assert heat.shape == (3, 16)
    assert np.allclose(np.sort(heat.ravel()), np.sort(g.mean(0).ravel()))
    assert (np.diff(heat.argmax(0)) >= 0).all()  # channels grouped by their preferred direction
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["h", "v", "w2"]
    assert fig._suptitle.get_text() == "t"
    fig = viz.plot_merge_gates(g[0], ["h", "v", "w2"], sort=False)
    assert np.allclose(fig.axes[0].images[0].get_array(), g[0])
    with pytest.raises(ValueError, match="directions"):
        viz.plot_merge_gates(g, ["h", "v"])


def test_plot_gate_summary():
    gates = [analysis.MergeGates(f"layers.{i}.mixer", ("h", "v", "w2"), _gates(seed=i)) for i in range(3)]
    summary = analysis.gate_summary(gates)
    ax = viz.plot_gate_summary(summary)
    grid = ax.images[0].get_array()
    assert grid.shape == (3, 3)
    assert grid[1, 2] == pytest.approx(gates[1].gates[:, 2].mean())
    assert sum(t.get_text().startswith("w2") for t in ax.texts) == 3
    ax = viz.plot_gate_summary(summary, value="top share")
    assert ax.images[0].get_array().sum() == pytest.approx(3.0)  # shares sum to 1 per layer


def test_plot_layer_merge_diagram():
    dirs = ["h", "v_flip", "w2", "w2_flip"]
    g = _gates(K=4, C=64)
    img = np.random.default_rng(0).random((32, 32, 3))
    fig = viz.plot_layer_merge(dirs, 4, 4, gates=g, image=img, title="layer 0")
    titled = [ax.get_title() for ax in fig.axes]
    assert titled[:4] == dirs or [t for t in titled if t in dirs] == dirs
    strips = [ax for ax in fig.axes if ax.images and ax.images[0].get_array().shape == (4, 16)]
    assert len(strips) == 4  # 64 channels in 4 rows of 16, one strip per direction
    assert "mean" in strips[0].get_xlabel()
    assert fig._suptitle.get_text() == "layer 0"
    fig = viz.plot_layer_merge(dirs, 4, 4)  # the diagram without gates
    assert any("channel attention" in t.get_text() for ax in fig.axes for t in ax.texts)
    with pytest.raises(ValueError, match="directions"):
        viz.plot_layer_merge(dirs[:3], 4, 4, gates=g)


def test_figure_to_png():
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    png = viz.figure_to_png(fig)
    assert png[:4] == b"\x89PNG" and not plt.fignum_exists(fig.number)


def test_interactive_layer_view_redraws():
    widgets = pytest.importorskip("ipywidgets")
    dirs = [("h", "v"), ("w2", "h_flip")]
    gates = [analysis.MergeGates(f"layers.{i}.mixer", d, _gates(K=2, C=8, seed=i)) for i, d in enumerate(dirs)]
    view = viz.interactive_layer_view(dirs, gates, 4, 4, image=np.zeros((32, 32, 3)))
    assert isinstance(view, widgets.VBox)
    (slider, on_image), picture = view.children[0].children, view.children[1]
    assert slider.description == "layer" and slider.max == 1 and on_image.value
    first = picture.value
    assert bytes(first[:4]) == b"\x89PNG"
    slider.value = 1  # changing a control redraws
    assert picture.value != first
    on_image.value = False
    assert bytes(picture.value[:4]) == b"\x89PNG"
    with pytest.raises(ValueError, match="layer"):
        viz.interactive_layer_view(dirs, None, 4, 4, layer=2)


def test_plot_erf_and_profiles():
    rng = np.random.default_rng(0)
    erfs = {"a": rng.random((16, 16)), "b": rng.random((16, 16)) * 5}
    fig = viz.plot_erf(erfs, patch=4)
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["a", "b"]
    assert panels[1].images[0].get_array().max() == pytest.approx(1.0)  # each map relative to its maximum
    box = [p for p in panels[0].patches if isinstance(p, Rectangle)]
    assert len(box) == 1 and box[0].get_xy() == (2 * 4 - 0.5, 2 * 4 - 0.5)  # the central token (2, 2)
    fig = viz.plot_erf(erfs, log=False, token=(0, 1), patch=4)
    assert [p for p in fig.axes[0].patches][0].get_xy() == (4 - 0.5, -0.5)
    ax = viz.plot_erf_profiles(erfs)
    assert len(ax.lines) == 4 and ax.get_yscale() == "log"
    assert ax.lines[0].get_ydata().sum() == pytest.approx(1.0)


def test_show_model_input_undoes_the_normalisation():
    img = np.random.default_rng(0).random((3, 8, 10)).astype(np.float32)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    x = (torch.from_numpy(img) - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    ax = viz.show_model_input(x[None], mean, std)
    assert np.allclose(ax.images[0].get_array(), img.transpose(1, 2, 0), atol=1e-6)
    assert "10x8" in ax.get_title()
    with pytest.raises(ValueError, match="x must be"):
        viz.show_model_input(torch.zeros(2, 3, 4, 4), mean, std)


def test_plot_topk():
    table = analysis.top_k(torch.tensor([0.0, 3.0, 1.0, 2.0]), k=3, labels=["a", "b", "c", "d"])
    ax = viz.plot_topk(table)
    assert len(ax.patches) == 3
    assert [t.get_text() for t in ax.get_yticklabels()] == ["b", "d", "c"]
    assert ax.texts[0].get_text() == f"{table['probability'].iloc[0]:.1%}"
