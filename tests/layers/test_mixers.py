"""The stacked mixers equal the original per-direction formulation (outputs and gradients)."""
import pytest
import torch

import localmamba.layers.ssm as ssm_mod
from localmamba.layers import INTERLEAVED, SS2D, DirectionMerge, Layout, MultiDirectionMamba
from localmamba.layers.reference import mamba_loop, ss2d_loop
from localmamba.ops import available_backends


@pytest.fixture(params=["cpu", "interleaved"])
def layout(request, monkeypatch):
    """The mixers' layout: CPU's own time-major path, or the GPU one (interleaved (B, L, K, D), the x
    projection as one block-diagonal GEMM, the merge reading the scan's rows), which runs on CPU too."""
    if request.param == "interleaved":
        monkeypatch.setattr(Layout, "for_device", staticmethod(lambda device, backend: INTERLEAVED))
        monkeypatch.setattr(ssm_mod, "_block_projection", lambda rows: True)
    return request.param


@pytest.mark.parametrize("backend", ["ref", "torch", "cpu"])
def test_the_layer_backend_reaches_every_op(backend, monkeypatch):
    """One backend string per layer: the conv, the scan and the merge all receive it (in the interleaved
    layout, where the merge is the channel_merge op)."""
    import localmamba.layers.mamba as mamba_mod
    import localmamba.layers.merge as merge_mod
    seen = []

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            seen.append((name, kwargs.get("backend")))
            return fn(*args, **kwargs)
        return wrapped
    monkeypatch.setattr(mamba_mod, "causal_conv1d", spy("conv", mamba_mod.causal_conv1d))
    monkeypatch.setattr(ssm_mod, "selective_scan", spy("scan", ssm_mod.selective_scan))
    monkeypatch.setattr(merge_mod, "channel_merge", spy("merge", merge_mod.channel_merge))
    monkeypatch.setattr(Layout, "for_device", staticmethod(lambda device, backend: INTERLEAVED))
    m = MultiDirectionMamba(16, ("h", "w2"), d_state=4)
    m(torch.randn(2, 16, 16), (4, 4), backend=backend)
    assert sorted(seen) == [("conv", backend), ("merge", backend), ("scan", backend)]


@pytest.mark.parametrize("backend", ["ref", "torch"])
@pytest.mark.parametrize("directions,grid,cls_position", [
    (("h", "v_flip", "w2", "w3_flip"), (5, 6), None),
    (("h_flip", "w4", "v"), (4, 4), 8),
    (None, (3, 5), None),  # search supernet, 8 candidates
])
def test_multi_direction_mamba_equals_per_direction_loop(directions, grid, cls_position, backend, layout):
    """The channels-innermost paths (conv as shifted adds, gate after the reverse) equal the loop."""
    torch.manual_seed(0)
    m = MultiDirectionMamba(16, directions, d_state=4)
    T = grid[0] * grid[1] + (cls_position is not None)
    x = torch.randn(2, T, 16, requires_grad=True)
    out = m(x, grid, cls_position=cls_position, backend=backend)
    ref = mamba_loop(m, x, grid, cls_position=cls_position, backend="ref")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, *m.parameters()], g)
    grads_ref = torch.autograd.grad(ref, [x, *m.parameters()], g)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("backend", ["ref", "torch"])
@pytest.mark.parametrize("directions,hw", [(("h", "w2_flip", "v", "w7"), (7, 7)), (("w3", "v_flip"), (5, 8))])
def test_ss2d_equals_per_direction_loop(directions, hw, backend, layout):
    """Forward scans time-major (L, B, K, D) inputs on CPU, interleaved (B, L, K, D) ones on GPUs."""
    torch.manual_seed(0)
    m = SS2D(8, directions, d_state=4)
    x = torch.randn(2, *hw, 8, requires_grad=True)
    out, ref = m(x, backend=backend), ss2d_loop(m, x, backend="ref")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    gx, = torch.autograd.grad(out.sum(), x)
    gx_ref, = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-4, atol=1e-6)


def test_tokens_depend_on_window_neighbours_first():
    # causal scan in 'w2' order on 4x4: the first token of the first window sees only itself, the token
    # below it (last of that window) sees the whole window {0, 1, 4}; channel attention mixes a global mean
    # in, so its gate is frozen to isolate what the scan reaches
    torch.manual_seed(0)
    m = MultiDirectionMamba(8, ("w2",), d_state=4)
    m.merge.attn.gate = lambda y: torch.ones_like(y[..., :1, :])
    x = torch.randn(1, 16, 8, requires_grad=True)
    out = m(x, (4, 4), backend="ref")
    reach = []
    for t in (0, 4, 5):
        g, = torch.autograd.grad(out[0, t].sum(), x, retain_graph=True)
        reach.append(set(torch.nonzero(g[0].abs().sum(-1)).flatten().tolist()))
    assert reach == [{0}, {0, 1, 4}, {0, 1, 4, 5}]


def test_direction_merge_search_mixes_by_softmax():
    torch.manual_seed(0)
    merge = DirectionMerge(16, 3, search=True)
    xs = torch.randn(2, 3, 5, 16)
    with torch.no_grad():
        merge.weights.copy_(torch.tensor([0.0, 50.0, 0.0]).view(3, 1, 1, 1))  # all weight on direction 1
    expected = torch.nn.functional.layer_norm(merge.attn(xs[:, 1]), (16,))
    torch.testing.assert_close(merge(xs), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["triton", "torch", "cuda"])
def test_mixers_on_gpu_equal_per_direction_loop(backend):
    """The GPU paths as users run them: the interleaved layout with the Triton kernels or the torch scan, and
    the stacked layout of mamba-ssm's kernel ("cuda", with the Triton conv and merge)."""
    pytest.importorskip("triton")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if backend == "cuda" and "cuda" not in available_backends():
        pytest.skip("needs mamba-ssm")
    torch.manual_seed(0)
    for m, args in [(MultiDirectionMamba(16, ("h", "v_flip", "w2", "w3_flip"), d_state=4), ((5, 6),)),
                    (SS2D(8, ("h", "w2_flip", "v", "w7"), d_state=4), ())]:
        m = m.cuda()
        x = torch.randn(2, 30, 16, device="cuda") if args else torch.randn(2, 7, 7, 8, device="cuda")
        x.requires_grad_(True)
        out, ref = m(x, *args, backend=backend), (mamba_loop if args else ss2d_loop)(m, x, *args, backend="ref")
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
        g = torch.randn_like(out)
        for a, b in zip(torch.autograd.grad(out, [x, *m.parameters()], g),
                        torch.autograd.grad(ref, [x, *m.parameters()], g)):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
