"""localmamba.analysis: scan-locality measurements, padding cost, impulse responses, backend helpers."""
import math

import numpy as np
import pytest
import torch

from localmamba import analysis
from localmamba.scan import ORIGINAL_CANDIDATES, scan_order

pd = pytest.importorskip("pandas")


def _has_op() -> bool:
    try:
        from localmamba.ops import available_backends, selective_scan, selective_scan_ref  # noqa: F401
    except ImportError:
        return False
    return True


needs_op = pytest.mark.skipif(not _has_op(), reason="localmamba.ops.selective_scan not available")


# ---------------------------------------------------------------------------------------- positions

@pytest.mark.parametrize("direction", list(ORIGINAL_CANDIDATES) + ["w3", "w4_flip"])
@pytest.mark.parametrize("H,W", [(4, 4), (5, 7), (14, 14)])
def test_sequence_positions_inverts_scan_order(direction, H, W):
    t = analysis.sequence_positions(direction, H, W)
    order = scan_order(direction, H, W)
    assert t.shape == (H, W)
    # the token visited at step t(p) is p
    assert (order[torch.as_tensor(t.ravel())].numpy() == np.arange(H * W)).all()


def test_sequence_positions_w2_by_hand():
    expected = np.array([[0, 1, 4, 5],
                         [2, 3, 6, 7],
                         [8, 9, 12, 13],
                         [10, 11, 14, 15]])
    assert (analysis.sequence_positions("w2", 4, 4) == expected).all()
    assert (analysis.sequence_positions("w2_flip", 4, 4) == 15 - expected).all()


def test_neighbour_pairs_count_and_adjacency():
    p, q, axis = analysis.neighbour_pairs(3, 5)
    assert len(p) == 3 * 4 + 2 * 5
    assert (axis == "h").sum() == 12 and (axis == "v").sum() == 10
    pi, pj = np.divmod(p, 5)
    qi, qj = np.divmod(q, 5)
    assert (np.abs(pi - qi) + np.abs(pj - qj) == 1).all()


# ---------------------------------------------------------------------------------------- distances

@pytest.mark.parametrize("H,W", [(4, 4), (3, 7), (14, 14)])
def test_h_neighbours_are_1_and_W_apart(H, W):
    dist = analysis.neighbour_distances("h", H, W)
    _, _, axis = analysis.neighbour_pairs(H, W)
    assert (dist[axis == "h"] == 1).all()
    assert (dist[axis == "v"] == W).all()
    # the flip reverses the sequence but keeps distances; v swaps the roles
    assert (analysis.neighbour_distances("h_flip", H, W) == dist).all()
    dv = analysis.neighbour_distances("v", H, W)
    assert (dv[axis == "h"] == H).all() and (dv[axis == "v"] == 1).all()


def test_w2_on_4x4_by_hand():
    # positions as in test_sequence_positions_w2_by_hand:
    # each row: pairs (in window, across windows, in window) = 1, 3, 1
    # vertical: rows 0-1 and 2-3 in the same window row = 2, rows 1-2 across = 6
    dist = analysis.neighbour_distances("w2", 4, 4)
    expected = np.array([1, 3, 1] * 4 + [2] * 4 + [6] * 4 + [2] * 4)
    assert (dist == expected).all()
    stats = analysis.neighbour_distance_stats(["w2"], 4, 4)
    row = stats.loc["w2"]
    assert row["mean"] == pytest.approx(60 / 24)
    assert row["p50"] == 2 and row["max"] == 6
    assert row["mean_h"] == pytest.approx(20 / 12) and row["mean_v"] == pytest.approx(40 / 12)
    assert row["frac_le_2"] == pytest.approx(16 / 24)
    assert row["seq_len"] == 16


def test_set_takes_minimum_over_directions():
    a = analysis.neighbour_distances("h", 6, 6)
    b = analysis.neighbour_distances("w2", 6, 6)
    both = analysis.neighbour_distances(("h", "h_flip", "w2", "w2_flip"), 6, 6)
    assert (both == np.minimum(a, b)).all()
    # rows and columns together make every neighbour pair adjacent in some scan
    assert (analysis.neighbour_distances(("h", "v"), 6, 6) == 1).all()


def test_stats_table_rows_and_layer_sets():
    sets = ["h", "w7", ("h", "h_flip"), ("h", "h_flip", "w2", "w2_flip")]
    stats = analysis.neighbour_distance_stats(sets, 14, 14, percentiles=(50, 90, 99))
    assert list(stats.index) == ["h", "w7", "h+h_flip", "h+h_flip+w2+w2_flip"]
    assert {"mean", "p50", "p90", "p99", "max", "mean_h", "mean_v", "frac_le_2", "seq_len"} <= set(stats.columns)
    # Vim's pair of directions is no better than 'h'; LocalVim's adds windows and halves the mean
    assert stats.loc["h+h_flip", "mean"] == stats.loc["h", "mean"] == pytest.approx(7.5)
    assert stats.loc["h+h_flip+w2+w2_flip", "mean"] < 0.6 * stats.loc["h", "mean"]
    # inside a 7x7 window, vertical neighbours are 7 apart (not 14)
    assert stats.loc["w7", "p90"] == 7 and stats.loc["h", "p90"] == 14


def test_bad_direction_raises():
    with pytest.raises(ValueError, match="unknown scan direction"):
        analysis.neighbour_distances("diagonal", 4, 4)
    with pytest.raises(ValueError):
        analysis.neighbour_distance_stats([()], 4, 4)


# ------------------------------------------------------------------------------ neighbourhood spans

def test_neighbourhood_span_by_hand():
    # 'h' on HxW: the 3x3 neighbourhood of an interior token spans W + 1 steps (the diagonal below)
    span = analysis.neighbourhood_span("h", 5, 6)
    assert span[2, 2] == 7 and span.max() == 7
    assert analysis.neighbourhood_span("h", 5, 6, connectivity=4)[2, 2] == 6
    # w2 on 4x4 with 4-neighbours equals the max of the pair distances touching each token
    expected = np.array([[2, 3, 3, 2], [6, 6, 6, 6], [6, 6, 6, 6], [2, 3, 3, 2]])
    assert (analysis.neighbourhood_span("w2", 4, 4, connectivity=4) == expected).all()
    assert (analysis.neighbourhood_span("h", 1, 1) == 0).all()


def test_neighbourhood_span_of_sets_rewards_windows():
    # unlike the pairwise minimum, ('h', 'v') keeps no 3x3 neighbourhood close ...
    hv = analysis.neighbourhood_span(("h", "v"), 14, 14)
    assert np.median(hv) == 15
    # ... while a 7x7 window keeps the 3x3 neighbourhood of its interior tokens within 8 steps
    w7 = analysis.neighbourhood_span(("h", "v", "w7"), 14, 14)
    assert np.median(w7) == 8 and (w7 <= hv).all()
    stats = analysis.neighbourhood_span_stats(["h", ("h", "v", "w7")], 14, 14)
    assert stats.loc["h+v+w7", "mean"] < stats.loc["h", "mean"]
    with pytest.raises(ValueError, match="connectivity"):
        analysis.neighbourhood_span("h", 4, 4, connectivity=6)


# ---------------------------------------------------------------------------------------- padding

def test_padding_overhead():
    assert analysis.padding_overhead("w7", 12, 12) == pytest.approx(196 / 144)
    assert analysis.padding_overhead("w7", 14, 14) == 1.0
    assert analysis.padding_overhead("w2", 7, 7) == pytest.approx(64 / 49)
    assert analysis.padding_overhead("w2_flip", 7, 7) == pytest.approx(64 / 49)
    assert analysis.padding_overhead("h", 13, 11) == 1.0
    table = analysis.padding_overhead_table(["h", "w2", "w7"], range(4, 16))
    assert table.index.name == "grid" and list(table.columns) == ["h", "w2", "w7"]
    assert (table["h"] == 1).all()
    assert table.loc[12, "w7"] == pytest.approx(196 / 144)
    assert table.loc[8, "w7"] == pytest.approx(196 / 64)
    assert (table >= 1).all().all()


# -------------------------------------------------------------------------------- discretisation

def test_zoh_discretize():
    A_bar, B_zoh, B_mamba = analysis.zoh_discretize(-2.0, 3.0, np.array([0.0, 0.01, 1.0]))
    assert A_bar == pytest.approx(np.exp([0.0, -0.02, -2.0]))
    assert B_zoh == pytest.approx([0.0, (np.exp(-0.02) - 1) / -2 * 3, (np.exp(-2.0) - 1) / -2 * 3])
    assert B_mamba == pytest.approx([0.0, 0.03, 3.0])
    # small steps: exact ZOH and Mamba's delta*B agree to first order
    assert B_zoh[1] == pytest.approx(B_mamba[1], rel=0.02)
    # A = 0 has the limit B_bar = delta * B
    _, B0, _ = analysis.zoh_discretize(0.0, 2.0, 0.5)
    assert B0 == pytest.approx(1.0)


@needs_op
def test_impulse_response_is_exponential_decay():
    y = analysis.impulse_response(A=-0.5, delta=0.2, length=20, impulse_at=3)
    assert (y[:3] == 0).all()
    # y_t = delta * exp(delta A)^(t - t0) for t >= t0 (B = C = 1, D = 0)
    t = np.arange(3, 20)
    assert y[3:] == pytest.approx(0.2 * np.exp(0.2 * -0.5 * (t - 3)), rel=1e-9)


@needs_op
def test_impulse_response_selective_reset():
    delta = np.full(30, 0.1)
    delta[15] = 20.0  # a spike: exp(20 * A) ~ 0 wipes the state at step 15
    y = analysis.impulse_response(A=-1.0, delta=delta, length=30, impulse_at=2)
    assert y[14] == pytest.approx(0.1 * np.exp(-0.1 * 12))
    assert abs(y[15]) < 1e-8 and np.abs(y[16:]).max() < 1e-8
    y_skip = analysis.impulse_response(A=-1.0, delta=0.1, length=10, impulse_at=2, D=1.0)
    assert y_skip[2] == pytest.approx(1.0 + 0.1)  # the skip D * u adds to the state's read-out
    with pytest.raises(ValueError):
        analysis.impulse_response(A=-1.0, delta=0.1, length=10, impulse_at=10)
    with pytest.raises(ValueError, match="delta must be"):
        analysis.impulse_response(A=-1.0, delta=np.ones(5), length=10)


@needs_op
def test_impulse_response_selective_B_and_C():
    # B_t = 0 at the first impulse: that input is not written; the second one is
    B = np.ones(20)
    B[2] = 0.0
    y = analysis.impulse_response(A=-0.5, delta=0.5, length=20, impulse_at=[2, 10], B=B)
    assert np.abs(y[:10]).max() == 0 and y[10] == pytest.approx(0.5)
    # C_t = 0 hides the state from the output, but the state is still there afterwards
    C = np.ones(20)
    C[5:10] = 0.0
    y_plain = analysis.impulse_response(A=-0.5, delta=0.5, length=20, impulse_at=2)
    y_hidden = analysis.impulse_response(A=-0.5, delta=0.5, length=20, impulse_at=2, C=C)
    assert (y_hidden[5:10] == 0).all()
    assert y_hidden[10:] == pytest.approx(y_plain[10:])
    # numpy reference with the same scalars, several states of the recurrence unrolled by hand
    u = np.random.default_rng(0).standard_normal(12)
    y = analysis.impulse_response(A=-0.3, delta=0.7, u=u, B=2.0, C=0.5, D=0.25)
    h, expected = 0.0, []
    for x in u:
        h = np.exp(0.7 * -0.3) * h + 0.7 * 2.0 * x
        expected.append(0.5 * h + 0.25 * x)
    assert y == pytest.approx(np.array(expected))


@needs_op
def test_compare_backends_agree_with_reference():
    from localmamba.ops import available_backends

    df = analysis.compare_backends(b=1, d=2, n=4, l=16)
    assert list(df.index) == list(available_backends())
    assert {"out", "du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias"} <= set(df.columns)
    assert (df.to_numpy() < 1e-3).all()
    df64 = analysis.compare_backends(["ref"], b=1, d=2, n=4, l=8, dtype=torch.float64)
    assert (df64.to_numpy() < 1e-12).all()
    grouped = analysis.compare_backends(["torch"], b=1, d=4, n=4, l=16, groups=2)
    assert (grouped.to_numpy() < 1e-3).all() and not grouped.equals(df.loc[["torch"]])
    with pytest.raises(ValueError, match="multiple of groups"):
        analysis.compare_backends(["torch"], d=3, groups=2)


@needs_op
def test_time_backends_table():
    df = analysis.time_backends(["ref"], lengths=(8, 16), b=1, d=2, n=2, repeat=2, warmup=0, progress=False)
    assert list(df.columns) == ["backend", "device", "length", "ms", "ms_min", "tokens_per_s", "threads"]
    assert list(df["length"]) == [8, 16] and (df["ms"] > 0).all() and (df["ms_min"] <= df["ms"]).all()
    threads = torch.get_num_threads()
    dfb = analysis.time_backends(["ref"], lengths=(8,), b=1, d=2, n=2, repeat=1, warmup=0,
                                 backward=True, threads=1, progress=False)
    assert len(dfb) == 1 and math.isfinite(dfb["ms"].iloc[0])
    assert dfb["threads"].iloc[0] == 1 and torch.get_num_threads() == threads  # restored
