"""localmamba.analysis: scan-locality measurements, padding cost, impulse responses, backend helpers."""
import math
import os
from pathlib import Path

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


# ------------------------------------------------------------------------------------------- models

# ../shared beside the checkout; LOCALMAMBA_FIXTURES points elsewhere (as in tests/models/test_original_checkpoints.py)
FIXTURES = Path(os.environ.get("LOCALMAMBA_FIXTURES",
                               Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "original"))
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"fixtures not found at {FIXTURES}")


def _tiny_vim(**kw):
    import timm

    import localmamba  # noqa: F401  (registers the models)

    torch.manual_seed(0)
    return timm.create_model("test_local_vim", **kw)


def test_model_summary_table():
    from localmamba.models.flops import count_params

    df = analysis.model_summary(["test_local_vim", "test_local_vssm", "local_vim_tiny_search"],
                                flops=["test_local_vim", "local_vim_tiny_search"], progress=False)
    assert list(df.columns) == ["family", "layers", "directions/layer", "params (M)", "paper params (M)",
                                "FLOPs (G)", "paper FLOPs (G)"]
    assert df.loc["test_local_vim", "family"] == "LocalVim" and df.loc["test_local_vssm", "family"] == "LocalVMamba"
    assert df.loc["test_local_vim", "layers"] == 2 and df.loc["test_local_vssm", "layers"] == 4
    assert df.loc["test_local_vim", "directions/layer"] == 4 and df.loc["test_local_vssm", "directions/layer"] == 2
    assert df.loc["local_vim_tiny_search", "directions/layer"] == "search"
    assert df.loc["test_local_vim", "params (M)"] == pytest.approx(count_params(_tiny_vim()) / 1e6)
    assert df.loc["local_vim_tiny_search", "paper params (M)"] == 5.47  # from flops.PAPER
    assert df.loc["local_vim_tiny_search", "params (M)"] == pytest.approx(5.47, abs=0.005)
    assert df.loc["test_local_vim", "FLOPs (G)"] > 0
    # not counted (LocalVMamba would need fvcore) and not reported are NaN
    assert math.isnan(df.loc["test_local_vssm", "FLOPs (G)"]) and math.isnan(df.loc["test_local_vim", "paper params (M)"])
    none = analysis.model_summary(["test_local_vim"], flops=False, progress=False)
    assert math.isnan(none.loc["test_local_vim", "FLOPs (G)"])


@pytest.mark.parametrize("name", ["test_local_vim", "test_local_vssm"])
def test_merge_gates_are_what_the_merge_applies(name):
    import timm

    from localmamba.layers import DirectionMerge

    torch.manual_seed(0)
    model = timm.create_model(name).train()
    # make the gates depart from 0.5 so that the check below means something
    for m in model.modules():
        if isinstance(m, DirectionMerge):
            torch.nn.init.normal_(m.attn.channel_select.bias, std=1.0)
    seen = []
    hooks = [m.register_forward_hook(lambda mod, i, o: seen.append((i[0], o)))
             for m in model.modules() if isinstance(m, DirectionMerge)]
    x = torch.randn(2, 3, 32, 32)
    gates = analysis.merge_gates(model, x)
    for h in hooks:
        h.remove()
    assert len(gates) == len(seen) == len(model.directions)
    assert [g.directions for g in gates] == [tuple(d) for d in model.directions]
    assert model.training  # mode restored
    assert all(not m._forward_hooks for m in model.modules() if isinstance(m, DirectionMerge))  # hooks removed
    for g, (xs, out) in zip(gates, seen):
        B, K, T, C = xs.shape
        assert g.gates.shape == (B, K, C) and g.mean().shape == (K, C)
        assert ((g.gates > 0) & (g.gates < 1)).all() and g.gates.std() > 0.05
        merged = (torch.from_numpy(g.gates)[:, :, None, :] * xs).sum(1)  # (B, T, C)
        torch.testing.assert_close(merged, out, rtol=1e-5, atol=1e-5)
    assert gates[0].layer in ("layers.0.mixer", "layers.0.blocks.0.op")
    with pytest.raises(ValueError, match="no DirectionMerge"):
        analysis.merge_gates(torch.nn.Linear(3, 3), x)


def test_gate_summary_rows():
    rng = np.random.default_rng(0)
    gates = [analysis.MergeGates("a", ("h", "v", "w2"), rng.random((2, 3, 8))),
             analysis.MergeGates("b", ("h", "h_flip"), rng.random((2, 2, 8)))]
    df = analysis.gate_summary(gates)
    assert len(df) == 5 and list(df["direction"]) == ["h", "v", "w2", "h", "h_flip"]
    assert list(df["index"]) == [0, 0, 0, 1, 1] and list(df["slot"]) == [0, 1, 2, 0, 1]
    assert df["mean"].iloc[1] == pytest.approx(gates[0].gates[:, 1].mean())
    assert df.groupby("layer")["top share"].sum().to_numpy() == pytest.approx([1.0, 1.0])
    assert (df["min"] <= df["mean"]).all() and (df["mean"] <= df["max"]).all()


class _ConvFeatures(torch.nn.Module):
    """forward_features = a 3x3 conv, channels-last: the ERF of token (i, j) is pixels i-1..i+1, j-1..j+1."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward_features(self, x):
        return self.conv(x).permute(0, 2, 3, 1)  # (B, H, W, C)


def test_effective_receptive_field_of_a_conv():
    model = _ConvFeatures()
    images = torch.randn(5, 3, 9, 9)
    erf = analysis.effective_receptive_field(model, images, batch_size=2, progress=False)
    assert erf.shape == (9, 9) and (erf >= 0).all()
    support = np.argwhere(erf > 0)
    assert support.min(0).tolist() == [3, 3] and support.max(0).tolist() == [5, 5]  # around the centre (4, 4)
    erf = analysis.effective_receptive_field(model, images, token=(0, 8), progress=False)
    assert np.argwhere(erf > 0).min(0).tolist() == [0, 7] and np.argwhere(erf > 0).max(0).tolist() == [1, 8]
    erf = analysis.effective_receptive_field(model, images, token=8, progress=False)  # row-major index = (0, 8)
    assert np.argwhere(erf > 0).max(0).tolist() == [1, 8]
    assert all(p.requires_grad for p in model.parameters()) and model.training  # restored
    with pytest.raises(ValueError, match="images must be"):
        analysis.effective_receptive_field(model, images[0])
    with pytest.raises(ValueError, match="token"):
        analysis.effective_receptive_field(model, images, token=(9, 0), progress=False)


@pytest.mark.parametrize("kw", [{}, {"cls_token": "middle", "rope": False}])
def test_effective_receptive_field_peaks_on_the_token(kw):
    model = _tiny_vim(**kw)  # 32 px, 8-px patches: a 4x4 token grid
    images = torch.randn(2, 3, 32, 32)
    for token, (i, j) in [(None, (2, 2)), ((0, 3), (0, 3)), (5, (1, 1))]:
        erf = analysis.effective_receptive_field(model, images, token=token, progress=False)
        assert erf.shape == (32, 32)
        pi, pj = np.unravel_index(erf.argmax(), erf.shape)
        assert (pi // 8, pj // 8) == (i, j)  # the token's own patch dominates (the residual stream)
        own = erf[i * 8:(i + 1) * 8, j * 8:(j + 1) * 8].sum()
        assert 0 < erf.sum() - own  # the mixers reach other patches


def test_erf_stats():
    H = W = 21
    yy, xx = np.mgrid[:H, :W]
    wide = np.exp(-((xx - 10) ** 2) / (2 * 4.0 ** 2) - ((yy - 10) ** 2) / (2 * 1.0 ** 2))  # elongated along x
    point = np.zeros((H, W))
    point[10, 10] = 1.0
    df = analysis.erf_stats({"wide": wide, "point": point}, thresholds=(0.5, 0.9), patch=7)
    assert list(df.index) == ["wide", "point"]
    assert list(df.columns) == ["sigma_x", "sigma_y", "area@0.5", "area@0.9", "outside own patch"]
    assert df.loc["wide", "sigma_x"] == pytest.approx(4.0, rel=0.05) and df.loc["wide", "sigma_y"] == pytest.approx(1.0, rel=0.05)
    assert df.loc["point", "sigma_x"] == 0 and df.loc["point", "area@0.9"] == pytest.approx(1 / (H * W))
    assert df.loc["point", "outside own patch"] == pytest.approx(0.0)  # pixel (10, 10) is in token (1, 1)
    assert df.loc["wide", "area@0.5"] < df.loc["wide", "area@0.9"] <= 1
    assert 0 < df.loc["wide", "outside own patch"] < 1
    single = analysis.erf_stats(point)
    assert list(single.index) == ["erf"] and "outside own patch" not in single
    with pytest.raises(ValueError, match="non-zero"):
        analysis.erf_stats(np.zeros((3, 3)))


def test_erf_models_at_initialisation_differ_only_in_directions():
    from localmamba.models.local_vim import LOCAL_VIM_DIRECTIONS

    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    pair = analysis.erf_models(depth=2, img_size=32, patch_size=8, seed=1)
    assert torch.equal(torch.rand(3), expected_draw)  # the caller's random state is left alone
    assert pair.img_size == (32, 32) and pair.patch_size == 8
    assert list(pair.models) == ["Vim baseline: h, h_flip", "LocalVim: searched sets"]
    vim, local = pair.models.values()
    assert vim.directions == [("h", "h_flip")] * 2 and local.directions == list(LOCAL_VIM_DIRECTIONS[:2])
    for m in (vim, local):
        assert not m.training and len(m.layers) == 2 and m.grid_size == (4, 4) and m.patch_size == 8
    # the same seed: the patch embedding, drawn before the directions' weights, starts equal; the seed reproduces
    assert torch.equal(vim.patch_embed.proj.weight, local.patch_embed.proj.weight)
    again = analysis.erf_models(depth=2, img_size=32, patch_size=8, seed=1).models["LocalVim: searched sets"]
    other = analysis.erf_models(depth=2, img_size=32, patch_size=8, seed=2).models["LocalVim: searched sets"]
    assert torch.equal(again.pos_embed, local.pos_embed) and not torch.equal(other.pos_embed, local.pos_embed)
    erf = analysis.effective_receptive_field(local, torch.randn(1, 3, *pair.img_size), progress=False)
    assert erf.shape == pair.img_size


@needs_fixtures
def test_erf_models_from_an_original_checkpoint_and_its_json():
    import json

    arch = json.loads((FIXTURES / "local_vim_small_arch.json").read_text())
    pair = analysis.erf_models(FIXTURES / "local_vim_small_arch.ckpt", depth=3, img_size=32)  # sizes: the JSON's
    assert list(pair.models) == ["local_vim_small_arch.ckpt (its weights)", "same architecture, at initialisation"]
    trained, initial = pair.models.values()
    assert pair.img_size == (arch["img_size"],) * 2 and pair.patch_size == arch["patch_size"]
    for m in (trained, initial):
        assert not m.training and m.directions == [tuple(d) for d in arch["directions"]]
        assert len(m.layers) == arch["depth"] and m.embed_dim == arch["embed_dim"]
    io = torch.load(FIXTURES / "local_vim_small_arch.io.pt", weights_only=True)
    with torch.no_grad():  # the trained model holds the checkpoint's weights, the other one does not
        torch.testing.assert_close(trained(io["input"]), io["logits"], rtol=0, atol=1e-4)
        assert not torch.allclose(initial(io["input"]), io["logits"], atol=1e-2)
    with pytest.raises(ValueError, match="LocalVim checkpoint"):
        analysis.erf_models(FIXTURES / "local_vssm_small_arch.ckpt")


def test_erf_models_from_a_checkpoint_without_json(tmp_path):
    saved = _tiny_vim()
    torch.nn.init.normal_(saved.pos_embed)
    torch.save(saved.state_dict(), tmp_path / "mine.pth")
    pair = analysis.erf_models(tmp_path / "mine.pth", checkpoint_model="test_local_vim")
    trained, initial = pair.models.values()
    assert list(pair.models)[0] == "mine.pth (its weights)"
    assert torch.equal(trained.pos_embed, saved.pos_embed) and not torch.equal(initial.pos_embed, saved.pos_embed)
    assert pair.img_size == (32, 32) and pair.patch_size == 8 and trained.directions == saved.directions


def test_model_from_arch_builds_both_families():
    vim = analysis.model_from_arch(dict(family="local_vim", img_size=32, patch_size=8, embed_dim=32, depth=2,
                                        num_classes=10, rope=True, cls_token="none",
                                        directions=[["h", "v"], ["w2", "h_flip"]]))
    assert type(vim).__name__ == "LocalVim" and not vim.training and vim.directions == [("h", "v"), ("w2", "h_flip")]
    assert vim(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    search = analysis.model_from_arch(dict(family="local_vmamba", dims=[8, 16], depths=[1, 1], num_classes=3,
                                           directions=None))
    assert type(search).__name__ == "LocalVMamba" and search.directions == [None, None]
    with pytest.raises(ValueError, match="family"):
        analysis.model_from_arch(dict(family="resnet", num_classes=3))


@needs_fixtures
def test_model_from_arch_loads_original_checkpoints(tmp_path):
    import json

    from localmamba.models import CheckpointError

    arch = FIXTURES / "local_vim_small_arch.json"
    model = analysis.model_from_arch(arch, FIXTURES / "local_vim_small_arch.ckpt")
    io = torch.load(FIXTURES / "local_vim_small_arch.io.pt", weights_only=True)
    with torch.no_grad():
        torch.testing.assert_close(model(io["input"]), io["logits"], rtol=0, atol=1e-4)
    with pytest.raises(CheckpointError, match="LocalVMamba"):
        analysis.model_from_arch(json.loads(arch.read_text()), FIXTURES / "local_vssm_small_arch.ckpt")


def test_top_k():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    df = analysis.top_k(logits, k=3, labels=["a", "b", "c", "d"])
    assert list(df.index) == [1, 2, 3] and list(df["class"]) == [1, 3, 2] and list(df["label"]) == ["b", "d", "c"]
    assert df["probability"].iloc[0] == pytest.approx(torch.softmax(logits[0], 0)[1].item())
    assert list(analysis.top_k(logits[0], k=10)["label"]) == ["class 1", "class 3", "class 2", "class 0"]
    with pytest.raises(ValueError, match="one image"):
        analysis.top_k(torch.zeros(2, 4))
