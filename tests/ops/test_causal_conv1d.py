"""The causal depthwise conv: the reference against nn.functional.conv1d, the torch and Triton backends against the
reference."""

import pytest
import torch
import torch.nn.functional as F

from localmamba.ops import causal_conv1d, causal_conv1d_ref, causal_conv1d_torch

LAYOUTS = {
    "(B, C, L)": lambda B, C, L: torch.randn(B, C, L),
    "(B, L, C) storage": lambda B, C, L: torch.randn(B, L, C).transpose(1, 2),
    "(L, B, C) storage": lambda B, C, L: torch.randn(L, B, C).permute(1, 2, 0),
}


def conv1d_oracle(x, weight, bias, activation):
    """nn.functional.conv1d, depthwise, padded on the left."""
    C, W = weight.shape
    out = F.conv1d(x, weight[:, None], bias, padding=W - 1, groups=C)[..., :x.shape[-1]]
    return F.silu(out) if activation else out


def compare_on_cpu(fn, oracle, layout, L, W, bias, activation, out_tol, grad_tol):
    """fn against oracle on one CPU problem: outputs, x's layout kept, gradients of x, w and b.
    Returns (x, w, b, fn's output)."""
    torch.manual_seed(0)
    x = LAYOUTS[layout](2, 6, L).requires_grad_(True)
    w = torch.randn(6, W, requires_grad=True)
    b = torch.randn(6, requires_grad=True) if bias else None
    out = fn(x, w, b, activation)
    ref = oracle(x, w, b, activation)
    assert out.stride() == x.stride(), "the output keeps x's layout"
    torch.testing.assert_close(out, ref, rtol=out_tol[0], atol=out_tol[1])
    g = torch.randn_like(out)
    leaves = [t for t in (x, w, b) if t is not None]
    for a, r in zip(torch.autograd.grad((out * g).sum(), leaves), torch.autograd.grad((ref * g).sum(), leaves)):
        torch.testing.assert_close(a, r, rtol=grad_tol[0], atol=grad_tol[1])
    return x, w, b, out


CPU_CASES = pytest.mark.parametrize("L,W,bias,activation", [(9, 4, True, "silu"), (9, 4, False, None),
                                                            (2, 4, True, "silu"), (7, 3, True, None)])


@pytest.mark.parametrize("layout", LAYOUTS)
@CPU_CASES
def test_reference_equals_conv1d(layout, L, W, bias, activation):
    compare_on_cpu(causal_conv1d_ref, conv1d_oracle, layout, L, W, bias, activation, (1e-5, 1e-6), (1e-5, 1e-5))


@pytest.mark.parametrize("layout", LAYOUTS)
@CPU_CASES
def test_torch_equals_reference(layout, L, W, bias, activation):
    """The same multiply-adds in the same order: equal outputs and gradients, and x's layout kept."""
    x, w, b, out = compare_on_cpu(causal_conv1d_torch, causal_conv1d_ref, layout, L, W, bias, activation,
                                  (1e-6, 1e-7), (1e-6, 1e-6))
    assert causal_conv1d(x, w, b, activation).equal(out), "auto runs the torch backend on CPU"
    for backend in ("cpu", "cuda"):  # names without a conv of their own run "auto"
        assert causal_conv1d(x, w, b, activation, backend=backend).equal(out), backend


def test_bad_inputs_are_clear_errors():
    x = torch.randn(2, 6, 9)
    with pytest.raises(ValueError, match="weight must be"):
        causal_conv1d(x, torch.randn(5, 4))
    with pytest.raises(ValueError, match="bias must be"):
        causal_conv1d(x, torch.randn(6, 4), torch.randn(5))
    with pytest.raises(ValueError, match="activation"):
        causal_conv1d(x, torch.randn(6, 4), activation="relu")
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        causal_conv1d(x, torch.randn(6, 4), backend="fast")
    with pytest.raises(ValueError, match=r"\(batch, dim, seqlen\)"):
        causal_conv1d(x[0], torch.randn(6, 4))


CHECK = r"""
import torch
from localmamba.ops import causal_conv1d_ref, causal_conv1d_triton
import localmamba.ops.conv1d_triton as T
torch.manual_seed(0)
dev = "{device}"
layouts = [lambda B, C, L: torch.randn(B, C, L), lambda B, C, L: torch.randn(B, L, C).transpose(1, 2),
           lambda B, C, L: torch.randn(L, B, C).permute(1, 2, 0)]
worst = 0.0
# C and L not multiples of the kernel's blocks; L shorter than the kernel; several row blocks, and for
# width 4 (its own backward walk) several segments of rows, the last one partial
T._SEG = 16
for (B, C, L, W), bias, act in [((2, 70, 37, 4), True, "silu"), ((1, 8, 3, 4), True, "silu"),
                                ((2, 16, 40, 4), False, None), ((3, 12, 9, 3), True, None),
                                ((2, 9, 16, 4), True, None), ((1, 5, 5, 2), False, "silu")]:
    for make in layouts:
        x = make(B, C, L).to(dev).requires_grad_(True)
        w = torch.randn(C, W, device=dev, requires_grad=True)
        b = torch.randn(C, device=dev, requires_grad=True) if bias else None
        out = causal_conv1d_triton(x, w, b, act)
        ref = causal_conv1d_ref(x, w, b, act)
        assert out.stride() == x.stride(), "the output keeps x's layout"
        g = torch.randn_like(out)
        leaves = [t for t in (x, w, b) if t is not None]
        grads = torch.autograd.grad((out * g).sum(), leaves)
        grads_ref = torch.autograd.grad((ref * g).sum(), leaves)
        for a, r in [(out, ref), *zip(grads, grads_ref)]:
            assert a.shape == r.shape and a.dtype == r.dtype
            worst = max(worst, ((a - r).abs().max() / (r.abs().max() + 1e-6)).item())
print("worst relative error", worst)
assert worst < 1e-5, worst
"""


def test_triton_kernels_match_reference_in_interpreter(triton_interpreted):
    triton_interpreted(CHECK)


@pytest.mark.cuda
def test_triton_kernels_match_reference_on_gpu(triton_on_gpu):
    triton_on_gpu(CHECK)
