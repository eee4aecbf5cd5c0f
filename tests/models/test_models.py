"""The timm interface of both families, on tiny registered variants."""
import warnings

import pytest
import timm
import torch

import localmamba  # noqa: F401
from localmamba.models import CheckpointError, LocalVim, LocalVMamba

ALL = sorted(set(timm.list_models("local_vim*") + timm.list_models("local_vssm*") + timm.list_models("vim_*")
                 + timm.list_models("vmamba_*")))
TINY = ["test_local_vim", "test_local_vssm"]


def test_every_original_name_is_registered():
    for name in ["local_vim_tiny", "local_vim_tiny_middle_cls_token", "local_vim_small", "local_vim_tiny_search",
                 "local_vssm_tiny", "local_vssm_small", "local_vssm_tiny_search", "local_vssm_small_search",
                 "vim_tiny", "vmamba_tiny", "local_vim_tiny_cifar", "vim_tiny_cifar"]:
        assert name in ALL


@pytest.mark.parametrize("name", ALL)
def test_registered_models_build(name):
    model = timm.create_model(name)
    assert isinstance(model, (LocalVim, LocalVMamba))
    assert model.pretrained_cfg["architecture"] == name
    assert model.num_classes == model.pretrained_cfg["num_classes"]


@pytest.mark.parametrize("name", TINY)
def test_forward_head_features_and_classifier(name):
    model = timm.create_model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model.forward_head(feats)
        pooled = model.forward_head(feats, pre_logits=True)
        torch.testing.assert_close(model(x), logits)
    assert logits.shape == (2, 10) and pooled.shape == (2, model.num_features)
    torch.testing.assert_close(model.get_classifier()(pooled), logits)
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)
    nwd = model.no_weight_decay()
    assert any(n.endswith("A_logs") for n in nwd) and any(n.endswith("Ds") for n in nwd)


@pytest.mark.parametrize("name, norm", [("test_local_vim", "norm_f"), ("test_local_vssm", "norm")])
def test_prune_intermediate_layers_drops_later_layers_final_norm_and_head(name, norm):
    model = timm.create_model(name)
    assert model.prune_intermediate_layers([0], prune_norm=True) == [0]
    assert len(model.layers) == 1 and isinstance(getattr(model, norm), torch.nn.Identity)
    assert isinstance(model.get_classifier(), torch.nn.Identity) and model.num_classes == 0


def test_pretrained_cfgs_of_cifar_and_imagenet_variants():
    cifar = dict(num_classes=10, input_size=(3, 32, 32), crop_pct=1.0, mean=(0.4914, 0.4822, 0.4465),
                 std=(0.2470, 0.2435, 0.2616))
    for name in ("local_vim_tiny_cifar", "vim_tiny_cifar", "local_vssm_tiny_cifar", "vmamba_tiny_cifar"):
        assert cifar.items() <= timm.create_model(name).pretrained_cfg.items(), name
    vim, vssm = (timm.models.get_pretrained_cfg(n) for n in ("local_vim_tiny", "local_vssm_small"))
    assert (vim.pool_size, vssm.pool_size) == (None, (7, 7))
    assert vim.url.endswith("v1.0.0/local_vim_tiny.ckpt") and vssm.url.endswith("v1.0.0/local_vssm_small.ckpt")
    assert {"pos_embed", "cls_token"} <= timm.create_model("test_local_vim").no_weight_decay()


@pytest.mark.parametrize("name", TINY)
def test_intermediates_and_features_only(name):
    model = timm.create_model(name).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x, indices=2)
        only = model.forward_intermediates(x, indices=2, intermediates_only=True)
    assert len(maps) == 2 and all(m.dim() == 4 and m.shape[0] == 2 for m in maps)
    for a, b in zip(maps, only):
        torch.testing.assert_close(a, b)
    net = timm.create_model(name, features_only=True).eval()
    with torch.no_grad():
        feats = net(x)
    assert [f.shape[1] for f in feats] == net.feature_info.channels()
    for f, r in zip(feats, net.feature_info.reduction()):
        assert f.shape[-2:] == (-(-64 // r), -(-96 // r))


def test_local_vim_intermediate_is_the_residual_stream():
    model = timm.create_model("test_local_vim").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x, indices=[1], norm=True)
    # the last layer's normalised residual stream is what forward_features returns
    torch.testing.assert_close(maps[0].flatten(2).transpose(1, 2), final)


@pytest.mark.parametrize("name,sizes", [("test_local_vim", [(40, 40), (48, 56), (33, 45)]),
                                        ("test_local_vssm", [(40, 40), (48, 56), (30, 46)])])
def test_other_input_sizes(name, sizes):
    model = timm.create_model(name).eval()
    for hw in sizes:
        with torch.no_grad():
            out = model(torch.randn(1, 3, *hw))
        assert out.shape == (1, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("hw", [(7, 10), (8, 9), (6, 6)])
def test_patch_merging_is_the_originals(hw):
    """LocalVMamba merges with timm's Swin PatchMerging: the original PatchMerging2D's 2x2 order and its zero
    padding of odd sizes (timm before 1.0.10 padded H by W % 2 and W by H % 2)."""
    merge = timm.create_model("test_local_vssm").layers[0].downsample
    x = torch.randn(2, *hw, merge.dim)  # (B, H, W, C)
    p = torch.nn.functional.pad(x, (0, 0, 0, hw[1] % 2, 0, hw[0] % 2))
    ref = torch.cat([p[:, 0::2, 0::2], p[:, 1::2, 0::2], p[:, 0::2, 1::2], p[:, 1::2, 1::2]], -1)  # the original's
    torch.testing.assert_close(merge(x), merge.reduction(merge.norm(ref)), rtol=0, atol=0)


def test_position_tables_are_interpolated_smoothly():
    # at a larger input the pos_embed / RoPE tables are resized, not cropped: a constant table stays constant
    model = timm.create_model("test_local_vim", img_size=64)
    with torch.no_grad():
        model.pos_embed.fill_(0.5)
    x, grid, _ = model._embed(torch.zeros(1, 3, 96, 96))
    assert grid == (12, 12)
    bias = model.patch_embed.proj.bias
    torch.testing.assert_close(x[0], (bias + 0.5).expand(144, -1))
    cos, sin = model.rope.tables((12, 12))
    assert cos.shape == (144, 32) and torch.all(cos.abs() <= 1.05)  # bicubic overshoots a little


@pytest.mark.parametrize("name", TINY)
def test_backends_agree_and_all_parameters_get_gradients(name):
    torch.manual_seed(0)
    model = timm.create_model(name, drop_path_rate=0.0)
    x = torch.randn(2, 3, 32, 32)
    outs = {}
    for backend in ["ref", "torch"]:
        model.backend = backend
        model.zero_grad()
        out = model(x)
        out.square().mean().backward()
        outs[backend] = (out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(outs["ref"][0], outs["torch"][0], rtol=1e-4, atol=1e-5)
    for n, g in outs["ref"][1].items():
        assert g.abs().sum() > 0, f"{n} gets no gradient"
        torch.testing.assert_close(outs["torch"][1][n], g, rtol=1e-3, atol=1e-5, msg=n)


@pytest.mark.parametrize("name", TINY)
def test_grad_checkpointing_gives_the_same_gradients_with_fewer_saved_activations(name):
    """timm's set_grad_checkpointing: the same outputs and gradients (drop path included: the recompute replays its
    random draws), while autograd keeps fewer bytes of activations."""
    model = timm.create_model(name, drop_path_rate=0.2).train()
    x = torch.randn(2, 3, 32, 32)
    results = {}
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        model.zero_grad()
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel() * t.element_size()) or t,
                                                      lambda t: t):
            torch.manual_seed(0)
            out = model(x)
        out.square().mean().backward()
        results[enable] = out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, sum(saved)
    torch.testing.assert_close(results[True][0], results[False][0])
    for n, g in results[False][1].items():
        torch.testing.assert_close(results[True][1][n], g, msg=n)
    assert results[True][2] < results[False][2] / 2, (results[True][2], results[False][2])


def test_search_supernet_weights():
    model = timm.create_model("local_vim_tiny_search", embed_dim=32, depth=2, img_size=32, patch_size=8)
    probs = model.layers[0].mixer.merge.probabilities()
    assert probs.shape == (8,) and torch.allclose(probs.sum(), torch.tensor(1.0))
    with pytest.raises(RuntimeError):
        timm.create_model("test_local_vim").layers[0].mixer.merge.probabilities()


def test_bad_configuration_errors():
    with pytest.raises(ValueError, match="valid are"):
        timm.create_model("test_local_vim", directions=(("h", "q"), ("h",)))
    with pytest.raises(ValueError, match=r"depth 20 but the local_vim model has depth 3 \(3 layers\)"):
        timm.create_model("local_vim_tiny", depth=3)
    with pytest.raises(ValueError, match=r"depth 15 but the local_vmamba model has depth 4 \(4 blocks\)"):
        timm.create_model("local_vssm_tiny", depths=(1, 1, 1, 1))
    with pytest.raises(ValueError, match="stem must be"):
        timm.create_model("test_local_vim", stem="convs")


def test_conv_stem_model_counts_its_flops_and_checks_its_checkpoints(tmp_path):
    """The CIFAR variants' conv stem: FLOPs charge its convolutions instead of the patch conv, and a
    checkpoint saved with another stem depth is refused with both stems named."""
    conv = timm.create_model("test_local_vim", stem="conv")
    patch = timm.create_model("test_local_vim")
    grid = conv.patch_embed.grid_size[0] * conv.patch_embed.grid_size[1]
    assert conv.flops((32, 32)) - patch.flops((32, 32)) == conv.patch_embed.flops((32, 32)) - 3 * 64 * 32 * grid
    path = tmp_path / "c.pth"
    torch.save({"model": conv.state_dict()}, path)
    again = timm.create_model("test_local_vim", stem="conv", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), conv.eval()(x))
    with pytest.raises(CheckpointError, match="stem 8 convs.*stem 4 convs"):
        timm.create_model("test_local_vim", stem="conv", stem_depth=2, pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(path)))


def test_middle_class_token_model_at_other_sizes():
    model = timm.create_model("test_local_vim", rope=False, cls_token="middle").eval()
    with torch.no_grad():
        for hw in [(32, 32), (48, 40)]:
            feats = model.forward_features(torch.randn(1, 3, *hw))
            n = -(-hw[0] // 8) * -(-hw[1] // 8)
            assert feats.shape == (1, n + 1, 32)
    # its pos_embed keeps the class-token entry in the middle when resized for a checkpoint
    from localmamba.models.local_vim import resize_pos_embed
    pe = torch.zeros(1, 17, 4)
    pe[0, 8] = 1.0  # 4x4 grid, class token at index 8
    out = resize_pos_embed(pe, (4, 4), (6, 6), middle_cls=True)
    assert out.shape == (1, 37, 4) and out[0, 18].eq(1).all() and out[0, :18].abs().sum() == 0


def test_compile_model_traces_the_model_as_one_graph():
    """Scan plans are built eagerly before compiling: the model is one graph, where plain torch.compile
    on a cold plan cache splits it at every mixer."""
    import torch._dynamo

    import localmamba.scan as S
    from localmamba.models import compile_model
    m = timm.create_model("test_local_vim", depth=3, directions=[("h", "w2")] * 3, drop_path_rate=0.1,
                          backend="ref").train()
    x = torch.randn(2, 3, *m.pretrained_cfg["input_size"][1:])
    counts = []
    try:
        for compile_fn in (torch.compile, compile_model):
            torch._dynamo.reset()
            S._PLANS.clear()
            graphs = []
            compiled = compile_fn(m, backend=lambda gm, inputs: graphs.append(gm) or gm.forward)
            torch.manual_seed(0)
            out = compiled(x)
            torch.manual_seed(0)
            torch.testing.assert_close(out, m(x))  # same drop-path draws, same result
            counts.append(len(graphs))
    finally:
        torch._dynamo.reset()
    assert counts[0] > 1 and counts[1] == 1


def test_an_image_size_off_the_patch_grid_warns_and_reports_the_grid_it_uses():
    with pytest.warns(UserWarning, match=r"not a multiple of patch_size 16: images are zero-padded to \(112, 112\)"):
        model = timm.create_model("local_vim_tiny", img_size=100, depth=2, directions=[["h", "w2"]] * 2).eval()
    assert model.grid_size == (7, 7) and model.pos_embed.shape[1] == 49
    with torch.no_grad():
        (fmap,) = model.forward_intermediates(torch.randn(1, 3, 100, 100), indices=1, intermediates_only=True)
    assert tuple(fmap.shape[-2:]) == model.grid_size  # what grid_size says is what the forward uses
    with pytest.warns(UserWarning, match=r"the stem ignores the last rows and columns.*sees \(30, 30\)"):
        timm.create_model("test_local_vssm", img_size=31)  # patch 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert timm.create_model("local_vim_tiny", img_size=112, depth=2, directions=[["h"]] * 2).grid_size == (7, 7)
        timm.create_model("test_local_vssm", img_size=32)


def test_unknown_model_names_get_the_closest_registered_ones():
    from localmamba.models import resolve_model_name

    assert resolve_model_name("local_vim_tiny") == "local_vim_tiny"
    assert resolve_model_name("local_vim_tiny.in1k") == "local_vim_tiny.in1k"
    assert resolve_model_name("resnet18") == "resnet18"  # any timm model
    with pytest.raises(ValueError, match=r"^unknown model 'local_vim_tinyy'; did you mean local_vim_tiny\b"):
        resolve_model_name("local_vim_tinyy")
    with pytest.raises(ValueError, match="did you mean .*local_vssm_tiny_cifar"):
        resolve_model_name("local_vssm_tiny_cifr")
    with pytest.raises(ValueError, match="this library's models are: .*test_local_vim"):
        resolve_model_name("qqqqqqqqqqqqqqqqqqqq")
