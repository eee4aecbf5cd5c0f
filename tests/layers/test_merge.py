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
    """The gate is built from the mean of the non-affine LayerNorm (``gate_from_mean``, the form the fused
    merge op computes): equal to the affine LayerNorm's, in and outside autograd, under autocast too."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    torch.manual_seed(0)
    attn = trained_like(ChannelAttention(32)).to(device)
    x = torch.randn(2, 3, 11, 32, device=device) * 3 + 1
    tol = dict(rtol=2e-2, atol=2e-3) if autocast else dict(rtol=1e-5, atol=1e-6)  # the MLP runs in bf16 then
    with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
        with torch.no_grad():
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
    with torch.no_grad():  # inference: the in-place weighted sum
        torch.testing.assert_close(merge(xs), (xs * gate_by_definition(merge.attn, xs)).sum(1), rtol=1e-5, atol=1e-6)
    xs.requires_grad_(True)
    out = merge(xs)
    ref = (xs * gate_by_definition(merge.attn, xs)).sum(1)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    w = torch.randn_like(out)
    params = [xs, *merge.parameters()]
    for a, b in zip(torch.autograd.grad((out * w).sum(), params), torch.autograd.grad((ref * w).sum(), params)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("search", [False, True])
def test_merge_rows_equals_merge_of_reversed_rows(search):
    """merge_rows reads x_kt = rows[index[k, t]] * s_t itself: equal to the merge of the gathered, gated rows."""
    torch.manual_seed(0)
    K, T, C = 3, 7, 16
    merge = DirectionMerge(C, K, search=search)
    trained_like(merge.attn)
    rows = torch.randn(2, K * T + 2, C, requires_grad=True)  # two rows no direction reads (padding)
    index = torch.randperm(K * T + 2)[:K * T].view(K, T)
    s = torch.rand(2, T, C, requires_grad=True)
    out = merge.merge_rows(rows, index, s=s)
    ref = merge(rows[:, index.flatten()].view(2, K, T, C) * s.unsqueeze(1))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    w = torch.randn_like(out)
    params = [rows, s, *merge.parameters()]
    for a, b in zip(torch.autograd.grad((out * w).sum(), params), torch.autograd.grad((ref * w).sum(), params)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="directions"):
        merge.merge_rows(rows, index[:2], s=s)
