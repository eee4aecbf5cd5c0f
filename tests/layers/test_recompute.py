"""Activations remade in the backward: the same gradients, bit for bit, from less kept memory."""
import pytest
import timm
import torch

import localmamba  # noqa: F401  (registers the models)
import localmamba.layers.ssm as ssm_mod
from localmamba.layers import INTERLEAVED, SS2D, Layout, MultiDirectionMamba
from localmamba.layers.recompute import RecomputeScope, wanted


@pytest.fixture(params=["cpu", "interleaved"])
def layout(request, monkeypatch):
    """CPU's time-major path, or the GPU one (interleaved, block-diagonal projections), which runs on CPU too."""
    if request.param == "interleaved":
        monkeypatch.setattr(Layout, "for_device", staticmethod(lambda device, backend: INTERLEAVED))
        monkeypatch.setattr(ssm_mod, "_block_projection", lambda rows: True)
    return request.param


def _step(model, x, recompute: bool, autocast: bool):
    """Output and every gradient of one training step (same drop-path draws each time)."""
    model.set_activation_recompute(recompute)
    model.zero_grad()
    torch.manual_seed(1)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        out = model(x)
    out.float().square().sum().backward()
    return [out.detach()] + [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("name", ["local_vim_tiny_cifar", "local_vssm_tiny_cifar"])
def test_recompute_gives_the_kept_gradients_bit_for_bit(name, autocast, layout, monkeypatch):
    """Forced on (CPU), the gathers run again in the backward and every gradient equals the kept run's exactly."""
    torch.manual_seed(0)
    model = timm.create_model(name, drop_path_rate=0.1)
    x = torch.randn(2, 3, 32, 32)
    kept = _step(model, x, recompute=False, autocast=autocast)
    calls = []
    scan = Layout.scan
    monkeypatch.setattr(Layout, "scan", lambda self, *a, **k: calls.append(torch.is_grad_enabled()) or scan(self, *a, **k))
    remade = _step(model, x, recompute=True, autocast=autocast)
    n_mixers = sum(isinstance(m, (MultiDirectionMamba, SS2D)) for m in model.modules())
    assert calls.count(True) == n_mixers  # the forward's gathers
    assert calls.count(False) >= n_mixers  # the backward's, each where an op unpacked the sequences
    for a, b in zip(kept, remade):
        assert torch.equal(a, b)


def test_recompute_stands_aside_under_grad_checkpointing(monkeypatch):
    """Inside torch.utils.checkpoint (saved-tensor hooks of its own) the mixers keep out of the way: no recipe is
    stored, and the gradients are those of the plain model."""
    torch.manual_seed(0)
    model = timm.create_model("local_vim_tiny_cifar")
    x = torch.randn(2, 3, 32, 32)
    plain = _step(model, x, recompute=False, autocast=False)
    model.set_grad_checkpointing(True)
    opened = []
    monkeypatch.setattr(RecomputeScope, "__enter__", lambda self: opened.append(self) or self)
    checkpointed = _step(model, x, recompute=True, autocast=False)
    assert not opened
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_wanted_follows_the_setting_and_autograd():
    x = torch.randn(2, 3)
    assert not wanted(x, None)  # the default: CUDA tensors only
    assert wanted(x, True) and not wanted(x, False)
    with torch.no_grad():
        assert not wanted(x, True)  # nothing is saved without autograd
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        assert not wanted(x, True)  # someone else's hooks: ours would replace them


def test_a_recipe_that_does_not_repeat_the_forward_is_an_error():
    """A recipe whose tensor has another storage than the kept one fails loudly in the backward."""
    a = torch.randn(4, 3, requires_grad=True)
    with RecomputeScope() as scope:
        t = scope.add(torch.randn(4, 5), lambda: torch.zeros(4, 6))
        out = (a * t[:, :3]).sum()
    with pytest.raises(RuntimeError, match="does not repeat the forward"):
        out.backward()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["local_vim_tiny", "local_vssm_tiny"])
def test_recompute_on_cuda_lowers_training_memory_with_the_same_gradients(name):
    """The CUDA default: a bf16 training step keeps less memory and gives the kept run's gradients."""
    torch.manual_seed(0)
    model = timm.create_model(name, img_size=112).cuda()
    x = torch.randn(8, 3, 112, 112, device="cuda")
    peaks, results = [], []
    for recompute in (False, None):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        results.append(_step(model, x, recompute=recompute, autocast=True))
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated() - base)
    assert peaks[1] < 0.95 * peaks[0]
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
