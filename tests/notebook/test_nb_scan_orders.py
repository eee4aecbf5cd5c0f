"""localmamba.notebook.scan_orders (notebook 01): token grids, scan paths, scan locality, padding cost."""
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.collections import LineCollection
from matplotlib.text import Annotation

from localmamba.notebook import scan_orders
from localmamba.scan import ORIGINAL_CANDIDATES, scan_length, scan_order

pd = pytest.importorskip("pandas")


def _path_collection(ax):
    """The coloured path: the LineCollection with an array (the halo has none)."""
    found = [c for c in ax.collections if isinstance(c, LineCollection) and c.get_array() is not None]
    assert len(found) == 1
    return found[0]


# ---------------------------------------------------------------------------------------- images

def test_image_to_patches_shapes_and_layout():
    rng = np.random.default_rng(0)
    img = (rng.random((300, 451, 3)) * 255).astype(np.uint8)  # the shape of skimage's chelsea
    resized, patches = scan_orders.image_to_patches(img, grid=14, patch=16)
    assert resized.shape == (224, 224, 3) and patches.shape == (14, 14, 16, 16, 3)
    assert resized.dtype == np.float32 and 0 <= resized.min() and resized.max() <= 1
    # patch (i, j) is the (i, j) block of the resized image
    assert np.array_equal(patches[3, 5], resized[48:64, 80:96])
    resized, patches = scan_orders.image_to_patches(img[..., 0], grid=(4, 6), patch=8, crop=False)
    assert resized.shape == (32, 48, 1) and patches.shape == (4, 6, 8, 8, 1)
    with pytest.raises(ValueError, match="image must be"):
        scan_orders.image_to_patches(np.zeros((2, 3, 4, 5)))


def test_plot_image_patches():
    img = np.random.default_rng(0).random((40, 60, 3))
    resized, patches = scan_orders.image_to_patches(img, grid=(3, 4), patch=5)
    fig = scan_orders.plot_image_patches(resized, patches, gap=2, title="t")
    left, right = fig.axes
    assert left.images[0].get_array().shape == (15, 20, 3)
    sheet = right.images[0].get_array()
    assert sheet.shape == (3 * 7 - 2, 4 * 7 - 2, 3)
    assert np.array_equal(sheet[7:12, 14:19], patches[1, 2])  # patch (1, 2) after 1 and 2 gaps
    assert "12 tokens" in right.get_title() and fig._suptitle.get_text() == "t"


# ------------------------------------------------------------------------------------- scan paths

def test_scan_path_coordinates():
    rows, cols, padded = scan_orders.scan_path("h", 2, 3)
    assert rows.tolist() == [0, 0, 0, 1, 1, 1] and cols.tolist() == [0, 1, 2, 0, 1, 2]
    assert not padded.any()
    rows, cols, padded = scan_orders.scan_path("v_flip", 2, 3)
    assert list(zip(rows, cols))[:2] == [(1, 2), (0, 2)]
    # w2 on 3x3: padded to 4x4, 16 steps of which 7 are padding, the first window is (0,0),(0,1),(1,0),(1,1)
    rows, cols, padded = scan_orders.scan_path("w2", 3, 3)
    assert rows.size == scan_length("w2", 3, 3) == 16 and padded.sum() == 7
    assert list(zip(rows[:4], cols[:4])) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert list(zip(rows[4:8], cols[4:8])) == [(0, 2), (0, 3), (1, 2), (1, 3)]
    assert padded[5] and padded[7] and not padded[6]


def test_direction_name():
    assert scan_orders.direction_name("w", 7, True) == "w7_flip"
    assert scan_orders.direction_name("h", 5) == "h"
    with pytest.raises(ValueError):
        scan_orders.direction_name("w", 1)


@pytest.mark.parametrize("direction,H,W", [("h", 4, 4), ("w2_flip", 3, 5), ("w7", 14, 14)])
def test_plot_scan_path_draws_the_path(direction, H, W):
    fig, ax = plt.subplots()
    out = scan_orders.plot_scan_path(ax, direction, H, W)
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
    resized, _ = scan_orders.image_to_patches(img, 4, 8)
    fig, ax = plt.subplots()
    scan_orders.plot_scan_path(ax, "w3", 4, 4, image=resized, numbers=False, arrows=False, title="custom")
    assert len(ax.images) == 1 and ax.get_title() == "custom"
    # the view shows the padded grid (6x6) in token coordinates
    assert ax.get_xlim() == (-0.5, 5.5) and ax.get_ylim() == (5.5, -0.5)
    grey, _ = scan_orders.image_to_patches(img[..., 0], 4, 8)  # (32, 32, 1)
    fig, ax = plt.subplots()
    scan_orders.plot_scan_path(ax, "h", 4, 4, image=grey)
    assert ax.images[0].get_array().shape == (32, 32)


def test_plot_scan_grid_one_panel_per_direction():
    fig = scan_orders.plot_scan_grid(ORIGINAL_CANDIDATES, 14, 14, ncols=4)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title().split(":")[0] for ax in panels] == list(ORIGINAL_CANDIDATES)
    assert len(fig.axes) == 8 + 1  # + the colour bar
    assert fig.legends and "Scan orders" in fig._suptitle.get_text()
    fig = scan_orders.plot_scan_grid(["w3", "w4", "w5"], 6, 6, ncols=2)
    assert sum(ax.get_visible() for ax in fig.axes) == 3 + 1
    legend_texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "padded step (zeros)" in legend_texts  # w4 and w5 pad a 6x6 grid
    # step numbers on all panels or on none: w5 on 8x8 scans 100 steps, too many to number
    fig = scan_orders.plot_scan_grid(["h", "w4", "w5"], 8, 8)
    assert all(len([t for t in ax.texts if not isinstance(t, Annotation)]) == 0 for ax in fig.axes)
    fig = scan_orders.plot_scan_grid(["h", "w4"], 8, 8)
    assert [len([t for t in ax.texts if not isinstance(t, Annotation)]) for ax in fig.axes[:2]] == [64, 64]


# -------------------------------------------------------------------------------- locality plots

def test_plot_neighbour_distances_bars():
    stats = scan_orders.neighbour_distance_stats(["h", "w2", ("h", "h_flip", "w2", "w2_flip")], 8, 8)
    ax = scan_orders.plot_neighbour_distances(stats, columns=("mean", "p50", "max"))
    assert len(ax.patches) == 3 * 3
    assert [t.get_text() for t in ax.get_xticklabels()] == list(stats.index)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["mean", "median", "max"]
    assert ax.get_ylabel() and ax.get_title()
    # each bar reaches its statistic, on the log axis (from 0.5) as on a linear one (from 0)
    tops = np.array([p.get_y() + p.get_height() for p in ax.patches]).reshape(3, 3)  # (column, row)
    assert np.allclose(tops, stats[["mean", "p50", "max"]].to_numpy().T)
    assert ax.get_yscale() == "log" and ax.get_ylim()[0] <= min(p.get_y() for p in ax.patches)
    linear = scan_orders.plot_neighbour_distances(stats, columns=("mean",), log=False)
    assert linear.get_yscale() == "linear" and [p.get_y() for p in linear.patches] == [0, 0, 0]


def test_plot_neighbour_distance_cdf():
    sets = ["h", "w7", ("h", "h_flip", "w7", "w7_flip")]
    ax = scan_orders.plot_neighbour_distance_cdf(sets, 14, 14)
    assert len(ax.lines) == 3
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["h", "w7", "h+h_flip+w7+w7_flip"]
    # each curve ends at 1 (all pairs) and starts at the smallest distance
    assert all(line.get_ydata()[-1] == pytest.approx(1.0) for line in ax.lines)
    # directions with the same distances share one curve instead of hiding one under the other
    ax = scan_orders.plot_neighbour_distance_cdf(["h", "v", "h_flip", "w2"], 6, 6)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["h = v = h_flip", "w2"]
    ax = scan_orders.plot_neighbour_distance_cdf(["h", "v"], 4, 6)  # not square: h and v differ
    assert len(ax.lines) == 2


def test_plot_locality_maps():
    fig = scan_orders.plot_locality_maps(["h", "w2", ("h", "v", "w7")], 14, 14, ncols=2)
    images = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert len(images) == 3
    assert np.array_equal(images[0], np.maximum(scan_orders.neighbourhood_span("h", 14, 14), 1))
    assert fig.axes[2].get_title().startswith("h+v+w7")


def test_plot_padding_overhead():
    table = scan_orders.padding_overhead_table(["w2", "w7"], range(4, 20))
    ax = scan_orders.plot_padding_overhead(table, highlight=(14,))
    data_lines = [ln for ln in ax.lines if ln.get_label() in ("w2", "w7")]
    assert len(data_lines) == 2
    assert np.allclose(data_lines[1].get_ydata(), table["w7"].to_numpy())
    assert any(t.get_text().strip() == "14x14" for t in ax.texts)


def test_interactive_scan_view_builds_and_redraws():
    widgets = pytest.importorskip("ipywidgets")
    w = scan_orders.interactive_scan_view(np.zeros((32, 32, 3)))
    assert isinstance(w, widgets.VBox)
    controls = {c.description: c for box in w.children[:2] for c in box.children}
    assert {"kind", "window K", "_flip", "grid H", "grid W", "on image"} <= set(controls)
    picture = w.children[2]
    before = picture.value
    assert before[:4] == b"\x89PNG"
    controls["kind"].value = "h"  # changing a control redraws the picture
    assert picture.value[:4] == b"\x89PNG" and picture.value != before


# ---------------------------------------------------------------------------------------- positions

@pytest.mark.parametrize("direction", list(ORIGINAL_CANDIDATES) + ["w3", "w4_flip"])
@pytest.mark.parametrize("H,W", [(4, 4), (5, 7), (14, 14)])
def test_sequence_positions_inverts_scan_order(direction, H, W):
    t = scan_orders.sequence_positions(direction, H, W)
    order = scan_order(direction, H, W)
    assert t.shape == (H, W)
    # the token visited at step t(p) is p
    assert (order[torch.as_tensor(t.ravel())].numpy() == np.arange(H * W)).all()


def test_sequence_positions_w2_by_hand():
    expected = np.array([[0, 1, 4, 5],
                         [2, 3, 6, 7],
                         [8, 9, 12, 13],
                         [10, 11, 14, 15]])
    assert (scan_orders.sequence_positions("w2", 4, 4) == expected).all()
    assert (scan_orders.sequence_positions("w2_flip", 4, 4) == 15 - expected).all()


def test_neighbour_pairs_count_and_adjacency():
    p, q, axis = scan_orders.neighbour_pairs(3, 5)
    assert len(p) == 3 * 4 + 2 * 5
    assert (axis == "h").sum() == 12 and (axis == "v").sum() == 10
    pi, pj = np.divmod(p, 5)
    qi, qj = np.divmod(q, 5)
    assert (np.abs(pi - qi) + np.abs(pj - qj) == 1).all()


# ---------------------------------------------------------------------------------------- distances

@pytest.mark.parametrize("H,W", [(4, 4), (3, 7), (14, 14)])
def test_h_neighbours_are_1_and_W_apart(H, W):
    dist = scan_orders.neighbour_distances("h", H, W)
    _, _, axis = scan_orders.neighbour_pairs(H, W)
    assert (dist[axis == "h"] == 1).all()
    assert (dist[axis == "v"] == W).all()
    # the flip reverses the sequence but keeps distances; v swaps the roles
    assert (scan_orders.neighbour_distances("h_flip", H, W) == dist).all()
    dv = scan_orders.neighbour_distances("v", H, W)
    assert (dv[axis == "h"] == H).all() and (dv[axis == "v"] == 1).all()


def test_w2_on_4x4_by_hand():
    # positions as in test_sequence_positions_w2_by_hand:
    # each row: pairs (in window, across windows, in window) = 1, 3, 1
    # vertical: rows 0-1 and 2-3 in the same window row = 2, rows 1-2 across = 6
    dist = scan_orders.neighbour_distances("w2", 4, 4)
    expected = np.array([1, 3, 1] * 4 + [2] * 4 + [6] * 4 + [2] * 4)
    assert (dist == expected).all()
    stats = scan_orders.neighbour_distance_stats(["w2"], 4, 4)
    row = stats.loc["w2"]
    assert row["mean"] == pytest.approx(60 / 24)
    assert row["p50"] == 2 and row["max"] == 6
    assert row["mean_h"] == pytest.approx(20 / 12) and row["mean_v"] == pytest.approx(40 / 12)
    assert row["frac_le_2"] == pytest.approx(16 / 24)
    assert row["seq_len"] == 16


def test_set_takes_minimum_over_directions():
    a = scan_orders.neighbour_distances("h", 6, 6)
    b = scan_orders.neighbour_distances("w2", 6, 6)
    both = scan_orders.neighbour_distances(("h", "h_flip", "w2", "w2_flip"), 6, 6)
    assert (both == np.minimum(a, b)).all()
    # rows and columns together make every neighbour pair adjacent in some scan
    assert (scan_orders.neighbour_distances(("h", "v"), 6, 6) == 1).all()


def test_stats_table_rows_and_layer_sets():
    sets = ["h", "w7", ("h", "h_flip"), ("h", "h_flip", "w2", "w2_flip")]
    stats = scan_orders.neighbour_distance_stats(sets, 14, 14, percentiles=(50, 90, 99))
    assert list(stats.index) == ["h", "w7", "h+h_flip", "h+h_flip+w2+w2_flip"]
    assert {"mean", "p50", "p90", "p99", "max", "mean_h", "mean_v", "frac_le_2", "seq_len"} <= set(stats.columns)
    # Vim's pair of directions is no better than 'h'; LocalVim's adds windows and halves the mean
    assert stats.loc["h+h_flip", "mean"] == stats.loc["h", "mean"] == pytest.approx(7.5)
    assert stats.loc["h+h_flip+w2+w2_flip", "mean"] < 0.6 * stats.loc["h", "mean"]
    # inside a 7x7 window, vertical neighbours are 7 apart (not 14)
    assert stats.loc["w7", "p90"] == 7 and stats.loc["h", "p90"] == 14


def test_bad_direction_raises():
    with pytest.raises(ValueError, match="unknown scan direction"):
        scan_orders.neighbour_distances("diagonal", 4, 4)
    with pytest.raises(ValueError):
        scan_orders.neighbour_distance_stats([()], 4, 4)


# ------------------------------------------------------------------------------ neighbourhood spans

def test_neighbourhood_span_by_hand():
    # 'h' on HxW: the 3x3 neighbourhood of an interior token spans W + 1 steps (the diagonal below)
    span = scan_orders.neighbourhood_span("h", 5, 6)
    assert span[2, 2] == 7 and span.max() == 7
    assert scan_orders.neighbourhood_span("h", 5, 6, connectivity=4)[2, 2] == 6
    # w2 on 4x4 with 4-neighbours equals the max of the pair distances touching each token
    expected = np.array([[2, 3, 3, 2], [6, 6, 6, 6], [6, 6, 6, 6], [2, 3, 3, 2]])
    assert (scan_orders.neighbourhood_span("w2", 4, 4, connectivity=4) == expected).all()
    assert (scan_orders.neighbourhood_span("h", 1, 1) == 0).all()


def test_neighbourhood_span_of_sets_rewards_windows():
    # unlike the pairwise minimum, ('h', 'v') keeps no 3x3 neighbourhood close ...
    hv = scan_orders.neighbourhood_span(("h", "v"), 14, 14)
    assert np.median(hv) == 15
    # ... while a 7x7 window keeps the 3x3 neighbourhood of its interior tokens within 8 steps
    w7 = scan_orders.neighbourhood_span(("h", "v", "w7"), 14, 14)
    assert np.median(w7) == 8 and (w7 <= hv).all()
    stats = scan_orders.neighbourhood_span_stats(["h", ("h", "v", "w7")], 14, 14)
    assert stats.loc["h+v+w7", "mean"] < stats.loc["h", "mean"]
    with pytest.raises(ValueError, match="connectivity"):
        scan_orders.neighbourhood_span("h", 4, 4, connectivity=6)


# ---------------------------------------------------------------------------------------- padding

def test_padding_overhead():
    assert scan_orders.padding_overhead("w7", 12, 12) == pytest.approx(196 / 144)
    assert scan_orders.padding_overhead("w7", 14, 14) == 1.0
    assert scan_orders.padding_overhead("w2", 7, 7) == pytest.approx(64 / 49)
    assert scan_orders.padding_overhead("w2_flip", 7, 7) == pytest.approx(64 / 49)
    assert scan_orders.padding_overhead("h", 13, 11) == 1.0
    table = scan_orders.padding_overhead_table(["h", "w2", "w7"], range(4, 16))
    assert table.index.name == "grid" and list(table.columns) == ["h", "w2", "w7"]
    assert (table["h"] == 1).all()
    assert table.loc[12, "w7"] == pytest.approx(196 / 144)
    assert table.loc[8, "w7"] == pytest.approx(196 / 64)
    assert (table >= 1).all().all()
