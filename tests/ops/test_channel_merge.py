"""The channel-attention merge: the reference against its definition, the Triton kernels against the reference."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from localmamba.ops import channel_merge, channel_merge_ref


def merge_by_definition(rows, index, gate, s=None):
    """Direction by direction: gather its tokens, gate them, LayerNorm, mean over tokens; then the sum."""
    xs = [rows[:, idx] * (s if s is not None else 1) for idx in index]  # K x (B, T, C)
    m = torch.stack([F.layer_norm(x, x.shape[-1:]).mean(1) for x in xs], 1)  # (B, K, C)
    g = gate(m)
    return sum(x * g[:, k, None] for k, x in enumerate(xs))


def make(B=2, K=3, T=7, C=12, pad=2, seed=0):
    torch.manual_seed(seed)
    rows = torch.randn(B, K * T + pad, C) * 2 + 0.5
    index = torch.randperm(K * T + pad)[:K * T].view(K, T)
    gate = nn.Sequential(nn.Linear(C, 5), nn.GELU(), nn.Linear(5, C), nn.Sigmoid())
    return rows, index, gate, torch.rand(B, T, C)


@pytest.mark.parametrize("with_s", [False, True])
def test_reference_equals_definition(with_s):
    rows, index, gate, s = make()
    rows.requires_grad_(True)
    s = s.requires_grad_(True) if with_s else None
    out = channel_merge_ref(rows, index, gate, s=s)
    ref = merge_by_definition(rows, index, gate, s)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    leaves = [t for t in (rows, s, *gate.parameters()) if t is not None]
    w = torch.randn_like(out)
    for a, r in zip(torch.autograd.grad((out * w).sum(), leaves), torch.autograd.grad((ref * w).sum(), leaves)):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)


def test_bad_inputs_are_clear_errors():
    rows, index, gate, s = make()
    with pytest.raises(ValueError, match="rows must be"):
        channel_merge(rows[0], index, gate)
    with pytest.raises(ValueError, match="index must be an integer"):
        channel_merge(rows, index.float(), gate)
    with pytest.raises(ValueError, match="s must be"):
        channel_merge(rows, index, gate, s=s[:, :3])
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        channel_merge(rows, index, gate, backend="fast")


def test_backend_names_without_a_merge_run_auto():
    """The layers pass one backend name to every op: a name this op lacks ("torch", "cpu", "cuda") runs its
    "auto" choice, the reference on CPU."""
    rows, index, gate, s = make()
    ref = channel_merge_ref(rows, index, gate, s=s)
    for backend in ("torch", "cpu", "cuda", "auto"):
        assert channel_merge(rows, index, gate, s=s, backend=backend).equal(ref), backend


CHECK = r"""
import torch, torch.nn as nn
from localmamba.ops import channel_merge_ref, channel_merge_triton
import localmamba.ops.merge_triton as M
dev = "{device}"
worst = 0.0
# (B, K, T, C, rows no direction reads, s, dtype): C below and at a power of two, tokens over several blocks
cases = [(2, 3, 7, 12, 2, True, torch.float32), (1, 4, 19, 32, 0, False, torch.float32),
         (2, 2, 5, 24, 0, True, torch.float32), (3, 1, 33, 8, 3, True, torch.float32)]
if dev == "cuda":
    cases += [(4, 4, 197, 384, 0, True, torch.bfloat16), (2, 4, 196, 192, 4, False, torch.float32),
              (2, 4, 49, 1536, 0, True, torch.bfloat16)]
for B, K, T, C, pad, with_s, dtype in cases:
    torch.manual_seed(0)
    rows = (torch.randn(B, K * T + pad, C) * 2 + 0.5).to(dev, dtype).requires_grad_(True)
    index = torch.randperm(K * T + pad)[:K * T].view(K, T).to(dev)
    gate = nn.Sequential(nn.Linear(C, 5), nn.GELU(), nn.Linear(5, C), nn.Sigmoid()).to(dev)
    s = torch.rand(B, T, C).to(dev, dtype).requires_grad_(True) if with_s else None
    params = tuple(gate.parameters())
    with torch.autocast(dev, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):  # bf16: as in the models
        out = channel_merge_triton(rows, index, gate, s=s)
        ref = channel_merge_ref(rows, index, gate, s=s)
    assert out.dtype == ref.dtype and out.shape == (B, T, C), (out.dtype, ref.dtype, out.shape)
    w = torch.randn(B, T, C, device=dev)
    leaves = [t for t in (rows, s, *params) if t is not None]
    grads = torch.autograd.grad((out.float() * w).sum(), leaves)
    grads_ref = torch.autograd.grad((ref.float() * w).sum(), leaves)
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    names = ["rows", "s"][:1 + with_s] + ["params"] * len(params)
    for name, a, r in [("out", out, ref), *zip(names, grads, grads_ref)]:
        assert a.shape == r.shape and a.dtype == r.dtype, (name, a.shape, r.shape, a.dtype, r.dtype)
        err = ((a.float() - r.float()).abs().max() / (r.float().abs().max() + 1e-6)).item()
        worst = max(worst, err) if dtype == torch.float32 else worst
        assert err < tol, (B, K, T, C, name, err)
    if pad:  # rows that no direction reads get zero gradient
        unread = torch.ones(K * T + pad, dtype=torch.bool, device=dev)
        unread[index.flatten()] = False
        assert (grads[0][:, unread] == 0).all(), "unread rows got a gradient"
print("worst relative error", worst)
# a repeated or out-of-range index is refused (the kernels' gradients assume each row is read once)
for bad in (torch.tensor([[0, 1], [1, 2]]), torch.tensor([[0, 1], [2, 99]])):
    try:
        channel_merge_triton(torch.randn(1, 4, 8, device=dev), bad.to(dev), torch.sigmoid)
    except ValueError as e:
        assert "index" in str(e)
    else:
        raise AssertionError("bad index accepted")
"""


def test_triton_kernels_match_reference_in_interpreter(triton_interpreted):
    triton_interpreted(CHECK)


@pytest.mark.cuda
def test_triton_kernels_match_reference_on_gpu(triton_on_gpu):
    triton_on_gpu(CHECK)
