"""localmamba.notebook.models (notebook 03): size and cost, predictions, merge gates, receptive fields."""
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.patches import Rectangle

from localmamba.notebook import models

pd = pytest.importorskip("pandas")
FIXTURES = Path(os.environ.get("LOCALMAMBA_FIXTURES",
                               Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "original"))
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"fixtures not found at {FIXTURES}")


# ------------------------------------------------------------------------------------------- models

def test_plot_model_summary():
    nan = float("nan")
    table = pd.DataFrame({"params (M)": [7.99, 25.5], "paper params (M)": [7.99, nan],
                          "FLOPs (G)": [1.48, nan], "paper FLOPs (G)": [1.5, 5.7]},
                         index=pd.Index(["local_vim_tiny", "local_vssm_tiny"], name="model"))
    fig = models.plot_model_summary(table)
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
    fig = models.plot_merge_gates(g, ["h", "v", "w2"], title="t")
    heat = fig.axes[0].images[0].get_array()
    assert heat.shape == (3, 16)
    assert np.allclose(np.sort(heat.ravel()), np.sort(g.mean(0).ravel()))
    assert (np.diff(heat.argmax(0)) >= 0).all()  # channels grouped by their preferred direction
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["h", "v", "w2"]
    assert fig._suptitle.get_text() == "t"
    fig = models.plot_merge_gates(g[0], ["h", "v", "w2"], sort=False)
    assert np.allclose(fig.axes[0].images[0].get_array(), g[0])
    with pytest.raises(ValueError, match="directions"):
        models.plot_merge_gates(g, ["h", "v"])


def test_plot_gate_summary():
    gates = [models.MergeGates(f"layers.{i}.mixer", ("h", "v", "w2"), _gates(seed=i)) for i in range(3)]
    summary = models.gate_summary(gates)
    ax = models.plot_gate_summary(summary)
    grid = ax.images[0].get_array()
    assert grid.shape == (3, 3)
    assert grid[1, 2] == pytest.approx(gates[1].gates[:, 2].mean())
    assert sum(t.get_text().startswith("w2") for t in ax.texts) == 3
    ax = models.plot_gate_summary(summary, value="top share")
    assert ax.images[0].get_array().sum() == pytest.approx(3.0)  # shares sum to 1 per layer


def test_plot_layer_merge_diagram():
    dirs = ["h", "v_flip", "w2", "w2_flip"]
    g = _gates(K=4, C=64)
    img = np.random.default_rng(0).random((32, 32, 3))
    fig = models.plot_layer_merge(dirs, 4, 4, gates=g, image=img, title="layer 0")
    titled = [ax.get_title() for ax in fig.axes]
    assert titled[:4] == dirs or [t for t in titled if t in dirs] == dirs
    strips = [ax for ax in fig.axes if ax.images and ax.images[0].get_array().shape == (4, 16)]
    assert len(strips) == 4  # 64 channels in 4 rows of 16, one strip per direction
    assert "mean" in strips[0].get_xlabel()
    assert fig._suptitle.get_text() == "layer 0"
    fig = models.plot_layer_merge(dirs, 4, 4)  # the diagram without gates
    assert any("channel attention" in t.get_text() for ax in fig.axes for t in ax.texts)
    with pytest.raises(ValueError, match="directions"):
        models.plot_layer_merge(dirs[:3], 4, 4, gates=g)


def test_interactive_layer_view_redraws():
    widgets = pytest.importorskip("ipywidgets")
    dirs = [("h", "v"), ("w2", "h_flip")]
    gates = [models.MergeGates(f"layers.{i}.mixer", d, _gates(K=2, C=8, seed=i)) for i, d in enumerate(dirs)]
    view = models.interactive_layer_view(dirs, gates, 4, 4, image=np.zeros((32, 32, 3)))
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
        models.interactive_layer_view(dirs, None, 4, 4, layer=2)


def test_plot_erf_and_profiles():
    rng = np.random.default_rng(0)
    erfs = {"a": rng.random((16, 16)), "b": rng.random((16, 16)) * 5}
    fig = models.plot_erf(erfs, patch=4)
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["a", "b"]
    assert panels[1].images[0].get_array().max() == pytest.approx(1.0)  # each map relative to its maximum
    box = [p for p in panels[0].patches if isinstance(p, Rectangle)]
    assert len(box) == 1 and box[0].get_xy() == (2 * 4 - 0.5, 2 * 4 - 0.5)  # the central token (2, 2)
    fig = models.plot_erf(erfs, log=False, token=(0, 1), patch=4)
    assert [p for p in fig.axes[0].patches][0].get_xy() == (4 - 0.5, -0.5)
    ax = models.plot_erf_profiles(erfs)
    assert len(ax.lines) == 4 and ax.get_yscale() == "log"
    assert ax.lines[0].get_ydata().sum() == pytest.approx(1.0)


def test_show_model_input_undoes_the_normalisation():
    img = np.random.default_rng(0).random((3, 8, 10)).astype(np.float32)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    x = (torch.from_numpy(img) - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    ax = models.show_model_input(x[None], mean, std)
    assert np.allclose(ax.images[0].get_array(), img.transpose(1, 2, 0), atol=1e-6)
    assert "10x8" in ax.get_title()
    with pytest.raises(ValueError, match="x must be"):
        models.show_model_input(torch.zeros(2, 3, 4, 4), mean, std)


def test_plot_topk():
    table = models.top_k(torch.tensor([0.0, 3.0, 1.0, 2.0]), k=3, labels=["a", "b", "c", "d"])
    ax = models.plot_topk(table)
    assert len(ax.patches) == 3
    assert [t.get_text() for t in ax.get_yticklabels()] == ["b", "d", "c"]
    assert ax.texts[0].get_text() == f"{table['probability'].iloc[0]:.1%}"


# ------------------------------------------------------------------------------------------- models
# ../shared beside the checkout; LOCALMAMBA_FIXTURES points elsewhere (as in tests/models/test_original_checkpoints.py)


def _tiny_vim(**kw):
    import timm

    import localmamba  # noqa: F401  (registers the models)

    torch.manual_seed(0)
    return timm.create_model("test_local_vim", **kw)


def test_model_summary_table():
    from localmamba.models.flops import count_params

    df = models.model_summary(["test_local_vim", "test_local_vssm", "local_vim_tiny_search"],
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
    none = models.model_summary(["test_local_vim"], flops=False, progress=False)
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
    gates = models.merge_gates(model, x)
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
    assert gates[0].layer in ("layers.0.mixer", "layers.0.blocks.0.mixer")
    with pytest.raises(ValueError, match="no DirectionMerge"):
        models.merge_gates(torch.nn.Linear(3, 3), x)


def test_gate_summary_rows():
    rng = np.random.default_rng(0)
    gates = [models.MergeGates("a", ("h", "v", "w2"), rng.random((2, 3, 8))),
             models.MergeGates("b", ("h", "h_flip"), rng.random((2, 2, 8)))]
    df = models.gate_summary(gates)
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
    erf = models.effective_receptive_field(model, images, batch_size=2, progress=False)
    assert erf.shape == (9, 9) and (erf >= 0).all()
    support = np.argwhere(erf > 0)
    assert support.min(0).tolist() == [3, 3] and support.max(0).tolist() == [5, 5]  # around the centre (4, 4)
    erf = models.effective_receptive_field(model, images, token=(0, 8), progress=False)
    assert np.argwhere(erf > 0).min(0).tolist() == [0, 7] and np.argwhere(erf > 0).max(0).tolist() == [1, 8]
    erf = models.effective_receptive_field(model, images, token=8, progress=False)  # row-major index = (0, 8)
    assert np.argwhere(erf > 0).max(0).tolist() == [1, 8]
    assert all(p.requires_grad for p in model.parameters()) and model.training  # restored
    with pytest.raises(ValueError, match="images must be"):
        models.effective_receptive_field(model, images[0])
    with pytest.raises(ValueError, match="token"):
        models.effective_receptive_field(model, images, token=(9, 0), progress=False)


@pytest.mark.parametrize("kw", [{}, {"cls_token": "middle", "rope": False}])
def test_effective_receptive_field_peaks_on_the_token(kw):
    model = _tiny_vim(**kw)  # 32 px, 8-px patches: a 4x4 token grid
    images = torch.randn(2, 3, 32, 32)
    for token, (i, j) in [(None, (2, 2)), ((0, 3), (0, 3)), (5, (1, 1))]:
        erf = models.effective_receptive_field(model, images, token=token, progress=False)
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
    df = models.erf_stats({"wide": wide, "point": point}, thresholds=(0.5, 0.9), patch=7)
    assert list(df.index) == ["wide", "point"]
    assert list(df.columns) == ["sigma_x", "sigma_y", "area@0.5", "area@0.9", "outside own patch"]
    assert df.loc["wide", "sigma_x"] == pytest.approx(4.0, rel=0.05) and df.loc["wide", "sigma_y"] == pytest.approx(1.0, rel=0.05)
    assert df.loc["point", "sigma_x"] == 0 and df.loc["point", "area@0.9"] == pytest.approx(1 / (H * W))
    assert df.loc["point", "outside own patch"] == pytest.approx(0.0)  # pixel (10, 10) is in token (1, 1)
    assert df.loc["wide", "area@0.5"] < df.loc["wide", "area@0.9"] <= 1
    assert 0 < df.loc["wide", "outside own patch"] < 1
    single = models.erf_stats(point)
    assert list(single.index) == ["erf"] and "outside own patch" not in single
    with pytest.raises(ValueError, match="non-zero"):
        models.erf_stats(np.zeros((3, 3)))


def test_erf_models_at_initialisation_differ_only_in_directions():
    from localmamba.models.local_vim import LOCAL_VIM_DIRECTIONS

    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    pair = models.erf_models(depth=2, img_size=32, patch_size=8, seed=1)
    assert torch.equal(torch.rand(3), expected_draw)  # the caller's random state is left alone
    assert pair.img_size == (32, 32) and pair.patch_size == 8
    assert list(pair.models) == ["Vim baseline: h, h_flip", "LocalVim: searched sets"]
    vim, local = pair.models.values()
    assert vim.directions == [("h", "h_flip")] * 2 and local.directions == list(LOCAL_VIM_DIRECTIONS[:2])
    for m in (vim, local):
        assert not m.training and len(m.layers) == 2 and m.grid_size == (4, 4) and m.patch_size == 8
    # the same seed: the patch embedding, drawn before the directions' weights, starts equal; the seed reproduces
    assert torch.equal(vim.patch_embed.proj.weight, local.patch_embed.proj.weight)
    again = models.erf_models(depth=2, img_size=32, patch_size=8, seed=1).models["LocalVim: searched sets"]
    other = models.erf_models(depth=2, img_size=32, patch_size=8, seed=2).models["LocalVim: searched sets"]
    assert torch.equal(again.pos_embed, local.pos_embed) and not torch.equal(other.pos_embed, local.pos_embed)
    erf = models.effective_receptive_field(local, torch.randn(1, 3, *pair.img_size), progress=False)
    assert erf.shape == pair.img_size


@needs_fixtures
def test_erf_models_from_an_original_checkpoint_and_its_json():
    import json

    arch = json.loads((FIXTURES / "local_vim_small_arch.json").read_text())
    pair = models.erf_models(FIXTURES / "local_vim_small_arch.ckpt", depth=3, img_size=32)  # sizes: the JSON's
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
        models.erf_models(FIXTURES / "local_vssm_small_arch.ckpt")


def test_erf_models_from_a_checkpoint_without_json(tmp_path):
    saved = _tiny_vim()
    torch.nn.init.normal_(saved.pos_embed)
    torch.save(saved.state_dict(), tmp_path / "mine.pth")
    pair = models.erf_models(tmp_path / "mine.pth", checkpoint_model="test_local_vim")
    trained, initial = pair.models.values()
    assert list(pair.models)[0] == "mine.pth (its weights)"
    assert torch.equal(trained.pos_embed, saved.pos_embed) and not torch.equal(initial.pos_embed, saved.pos_embed)
    assert pair.img_size == (32, 32) and pair.patch_size == 8 and trained.directions == saved.directions


def test_model_from_arch_builds_both_families():
    vim = models.model_from_arch(dict(family="local_vim", img_size=32, patch_size=8, embed_dim=32, depth=2,
                                          num_classes=10, rope=True, cls_token="none",
                                          directions=[["h", "v"], ["w2", "h_flip"]]))
    assert type(vim).__name__ == "LocalVim" and not vim.training and vim.directions == [("h", "v"), ("w2", "h_flip")]
    assert vim(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    search = models.model_from_arch(dict(family="local_vmamba", dims=[8, 16], depths=[1, 1], num_classes=3,
                                             directions=None))
    assert type(search).__name__ == "LocalVMamba" and search.directions == [None, None]
    with pytest.raises(ValueError, match="family"):
        models.model_from_arch(dict(family="resnet", num_classes=3))


@needs_fixtures
def test_model_from_arch_loads_original_checkpoints(tmp_path):
    import json

    from localmamba.models import CheckpointError

    arch = FIXTURES / "local_vim_small_arch.json"
    model = models.model_from_arch(arch, FIXTURES / "local_vim_small_arch.ckpt")
    io = torch.load(FIXTURES / "local_vim_small_arch.io.pt", weights_only=True)
    with torch.no_grad():
        torch.testing.assert_close(model(io["input"]), io["logits"], rtol=0, atol=1e-4)
    with pytest.raises(CheckpointError, match="LocalVMamba"):
        models.model_from_arch(json.loads(arch.read_text()), FIXTURES / "local_vssm_small_arch.ckpt")


def test_top_k():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    df = models.top_k(logits, k=3, labels=["a", "b", "c", "d"])
    assert list(df.index) == [1, 2, 3] and list(df["class"]) == [1, 3, 2] and list(df["label"]) == ["b", "d", "c"]
    assert df["probability"].iloc[0] == pytest.approx(torch.softmax(logits[0], 0)[1].item())
    assert list(models.top_k(logits[0], k=10)["label"]) == ["class 1", "class 3", "class 2", "class 0"]
    with pytest.raises(ValueError, match="one image"):
        models.top_k(torch.zeros(2, 4))
