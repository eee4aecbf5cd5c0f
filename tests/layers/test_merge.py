"""The direction merge: channel attention's gate and the weighted sum, against their plain definitions."""
import pytest
import torch
import torch.nn.functional as F

from localmamba.layers import ChannelAttention, DirectionMerge


def gate_by_definition(attn: ChannelAttention, x: torch.Tensor) -> torch.Tensor:
    """sigmoid(W2 gelu(W1 mean_tokens(LayerNorm(x)))), as the original's BiAttn."""
    g = attn.norm(x).mean(-2, keepdim=True)
    return torch.sigmoid(attn.channel_select(F.gelu(attn.global_reduce(g))))


def trained_like(attn: ChannelAttention) -> ChannelAttention:
    with torch.no_grad():  # LayerNorm's affine parameters away from their (1, 0) initialisation
        attn.norm.weight.normal_(1.0, 0.3)
        attn.norm.bias.normal_(0.0, 0.3)
    return attn


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("autocast", [False, True])
def test_gate_equals_layernorm_definition(autocast, device):
    """Outside autograd, fp32 CUDA inputs take the statistics-only path (no normalised copy of x): it
    equals LayerNorm's mean over tokens, under autocast too (where LayerNorm runs in fp32). In training
    (and on CPU), LayerNorm's path."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    torch.manual_seed(0)
    attn = trained_like(ChannelAttention(32)).to(device)
    x = torch.randn(2, 3, 11, 32, device=device) * 3 + 1
    tol = dict(rtol=2e-2, atol=2e-3) if autocast else dict(rtol=1e-5, atol=1e-6)  # the MLP runs in bf16 then
    with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
        with torch.no_grad():
            torch.testing.assert_close(attn._mean_normalized(x), attn.norm(x).float().mean(-2, keepdim=True),
                                       rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(attn.gate(x), gate_by_definition(attn, x), **tol)
        x.requires_grad_(True)
        g, ref = attn.gate(x), gate_by_definition(attn, x)
    torch.testing.assert_close(g, ref, **tol)
    w = torch.randn_like(g)
    params = [x, *attn.parameters()]
    for a, b in zip(torch.autograd.grad((g * w).sum(), params), torch.autograd.grad((ref * w).sum(), params)):
        torch.testing.assert_close(a, b, **tol)


def test_gate_of_bf16_inputs_is_layernorms():
    torch.manual_seed(0)
    attn = trained_like(ChannelAttention(16))
    x = torch.randn(2, 2, 7, 16).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(attn.gate(x), gate_by_definition(attn, x))


@pytest.mark.parametrize("K", [1, 2, 4])
def test_merge_is_sum_of_attended_directions(K):
    torch.manual_seed(0)
    merge = DirectionMerge(16, K)
    trained_like(merge.attn)
    xs = torch.randn(2, K, 9, 16)
    with torch.no_grad():  # inference: the in-place weighted sum and the statistics-only gate
        torch.testing.assert_close(merge(xs), (xs * gate_by_definition(merge.attn, xs)).sum(1), rtol=1e-5, atol=1e-6)
    xs.requires_grad_(True)
    out = merge(xs)
    ref = (xs * gate_by_definition(merge.attn, xs)).sum(1)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    w = torch.randn_like(out)
    params = [xs, *merge.parameters()]
    for a, b in zip(torch.autograd.grad((out * w).sum(), params), torch.autograd.grad((ref * w).sum(), params)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
