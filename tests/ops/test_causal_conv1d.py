"""The causal depthwise conv: the reference against nn.functional.conv1d, the torch, C (CPU) and Triton backends
against the reference."""
import warnings

import pytest
import torch
import torch.nn.functional as F

from localmamba.ops import causal_conv1d, causal_conv1d_cpu, causal_conv1d_ref, causal_conv1d_torch
from localmamba.ops._cpu_kernels import cpu_kernel_available, cpu_kernel_error
from localmamba.ops.conv1d import CONV1D

needs_kernel = pytest.mark.skipif(not cpu_kernel_available(), reason=f"no C kernel: {cpu_kernel_error()}")

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


def compare_on_cpu(fn, oracle, layout, L, W, bias, activation, out_tol, grad_tol, C=6):
    """fn against oracle on one CPU problem: outputs, x's layout kept, gradients of x, w and b.
    Returns (x, w, b, fn's output)."""
    torch.manual_seed(0)
    x = LAYOUTS[layout](2, C, L).requires_grad_(True)
    w = torch.randn(C, W, requires_grad=True)
    b = torch.randn(C, requires_grad=True) if bias else None
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
    assert causal_conv1d(x, w, b, activation, backend="torch").equal(out)


# ------------------------------------------------------------------------------------- the C kernel
@needs_kernel
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("W", [2, 3, 4])
@pytest.mark.parametrize("L", [1, 3, 37])
@pytest.mark.parametrize("bias,activation", [(True, "silu"), (False, None), (True, None), (False, "silu")])
def test_cpu_kernel_equals_reference(layout, W, L, bias, activation):
    """Outputs and dx, dweight, dbias; 20 channels: two whole vectors of 8 and a partial one; L from 1 (shorter
    than the kernel) to several steps; the output in x's layout."""
    x, w, b, out = compare_on_cpu(causal_conv1d_cpu, causal_conv1d_ref, layout, L, W, bias, activation,
                                  (1e-5, 1e-6), (1e-5, 1e-5), C=20)
    assert causal_conv1d(x, w, b, activation).equal(out), "auto runs the C kernel on CPU"
    for backend in ("cpu", "cuda"):  # "cuda" has no conv of its own: it runs "auto"
        assert causal_conv1d(x, w, b, activation, backend=backend).equal(out), backend


@needs_kernel
@pytest.mark.parametrize("W", [1, 5, 8])
def test_cpu_kernel_other_widths(W):
    """Widths without code of their own take the kernel's generic loop."""
    compare_on_cpu(causal_conv1d_cpu, causal_conv1d_ref, "(L, B, C) storage", 11, W, True, "silu", (1e-5, 1e-6),
                   (1e-5, 1e-5), C=20)


@needs_kernel
def test_cpu_kernel_strided_inputs():
    """Channels not at stride 1 (a slice of every other channel), an expanded x, a transposed weight and a
    strided bias: the same numbers as the reference."""
    torch.manual_seed(1)
    x = torch.randn(9, 2, 40).permute(1, 2, 0)[:, ::2]                  # (2, 20, 9), channel stride 2
    w = torch.randn(4, 20).t()                                          # (20, 4), tap-major
    b = torch.randn(40)[::2]
    for xi in (x, torch.randn(1, 20, 9).expand(3, 20, 9)):
        torch.testing.assert_close(causal_conv1d_cpu(xi, w, b, "silu"), causal_conv1d_ref(xi, w, b, "silu"),
                                   rtol=1e-5, atol=1e-6)
    xg = x.detach().requires_grad_(True)
    (causal_conv1d_cpu(xg, w, b, "silu") * x.sin()).sum().backward()   # a dout not in x's layout
    expected = torch.autograd.grad((causal_conv1d_ref(xg, w, b, "silu") * x.sin()).sum(), xg)[0]
    torch.testing.assert_close(xg.grad, expected, rtol=1e-5, atol=1e-6)


@needs_kernel
def test_cpu_kernel_saves_nothing_without_grad():
    """Under no_grad, or with no input requiring grad, the kernel runs without an autograd node."""
    x, w, b = torch.randn(2, 16, 7), torch.randn(16, 4, requires_grad=True), torch.randn(16)
    with torch.no_grad():
        assert causal_conv1d_cpu(x, w, b, "silu").grad_fn is None
    assert causal_conv1d_cpu(x, w.detach(), b, "silu").grad_fn is None
    assert causal_conv1d_cpu(x, w, b, "silu").grad_fn is not None


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_cpu_kernel_other_dtypes_run_torch(dtype):
    """The kernel computes in fp32; other dtypes (gradcheck's fp64, autocast's bf16) take the torch path, in
    their own precision."""
    x = torch.randn(2, 16, 9, dtype=dtype)
    w, b = torch.randn(16, 4, dtype=dtype), torch.randn(16, dtype=dtype)
    out = causal_conv1d(x, w, b, "silu", backend="cpu")
    assert out.dtype == dtype and out.equal(causal_conv1d_torch(x, w, b, "silu"))
    if dtype == torch.float64:
        torch.autograd.gradcheck(lambda *t: causal_conv1d(*t, "silu", backend="cpu"),
                                 tuple(t.requires_grad_() for t in (x[:, :4, :5], w[:4], b[:4])))


@needs_kernel
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_cpu_kernel_errors():
    x = torch.randn(2, 6, 9)
    with pytest.raises(ValueError, match="weight must be"):
        causal_conv1d(x, torch.randn(5, 4), backend="cpu")
    with pytest.raises(ValueError, match="CPU tensors"):
        causal_conv1d(x.to("meta"), torch.randn(6, 4, device="meta"), backend="cpu")
    assert causal_conv1d(x.to("meta"), torch.randn(6, 4, device="meta")).device.type == "meta"  # auto: torch
    assert CONV1D.resolve("auto", "cpu") == "cpu" and CONV1D.resolve("auto", "meta") == "torch"
    with pytest.raises(RuntimeError, match="torch.jit"):
        torch.jit.trace(lambda t: causal_conv1d(t, torch.randn(6, 4), backend="cpu"), (x,), check_trace=False)


def test_without_compiler_auto_falls_back_and_cpu_raises(no_compiler):
    x, w = torch.randn(2, 6, 9), torch.randn(6, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [CONV1D.resolve("auto", "cpu") for _ in range(2)] == ["torch"] * 2
        assert causal_conv1d(x, w, activation="silu").equal(causal_conv1d_torch(x, w, activation="silu"))
    assert len(caught) == 1 and "apt install gcc" in str(caught[0].message)
    with pytest.raises(RuntimeError, match="apt install gcc"):
        causal_conv1d(x, w, backend="cpu")


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
