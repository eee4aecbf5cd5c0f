"""The Triton kernel against the oracle: on a GPU when there is one, else in Triton's CPU interpreter."""
import pytest

CHECK = r"""
import torch
from localmamba.ops.scan_triton import selective_scan_triton
from localmamba.ops import selective_scan_ref
import localmamba.ops.scan_triton as T
torch.manual_seed(0)
dev = "{device}"
worst = 0.0
default_bwd = T.backward_kernel


def use(kernel):  # force the step or the segmented backward; None: the default choice
    T.backward_kernel = default_bwd if kernel is None else (lambda *a, kernel=kernel: kernel)
cases = [((1, 12, 5, 3, None), 0, 0, 0, 0, 0), ((2, 16, 9, 16, 4), 1, 0, 1, 1, 0), ((1, 6, 4, 5, 3), 1, 1, 0, 1, 0),
         ((3, 8, 7, 4, 2), 1, 1, 1, 1, 0), ((2, 8, 6, 4, 2), 1, 1, 1, 1, 1),
         # several segments (and a partial last one) for the segmented backward; d_state 1 as in LocalVMamba
         ((2, 8, 21, 4, 2), 1, 1, 1, 1, 1), ((2, 16, 19, 1, 4), 1, 1, 1, 1, 1)]
# each case through the step backward, the segmented one, and the default choice
kernels = ["step", "seg", None]
for ((b, d, l, n, g), D, z, bias, sp, tm), kernel in [(c, k) for c in cases for k in kernels]:
    use(kernel)
    # tm: u, delta and z time-major, (b, d, l) views of (b, l, d) storage, as the GPU mixers pass them
    randn = (lambda b, d, l: torch.randn(b, l, d).transpose(1, 2)) if tm else torch.randn
    u = randn(b, d, l); dl = torch.rand(b, d, l) if not sp else randn(b, d, l) * 0.5
    A = -torch.rand(d, n) * 2 - 0.1
    B = torch.randn(b, g, n, l) if g else torch.randn(b, n, l); C = torch.randn_like(B)
    inp = dict(u=u, delta=dl, A=A, B=B, C=C, D=torch.randn(d) if D else None, z=randn(b, d, l) if z else None,
               delta_bias=torch.randn(d) * 0.3 if bias else None)
    inp = {{k: v.to(dev).requires_grad_(True) for k, v in inp.items() if v is not None}}
    out = selective_scan_triton(**inp, delta_softplus=bool(sp))
    ref = selective_scan_ref(**inp, delta_softplus=bool(sp))
    assert out.stride() == inp["u"].stride(), "the output takes u's layout"
    w = torch.randn_like(out)
    grads = torch.autograd.grad((out * w).sum(), list(inp.values()))
    grads_ref = torch.autograd.grad((ref * w).sum(), list(inp.values()))
    for a, r in [(out, ref), *zip(grads, grads_ref)]:
        assert a.shape == r.shape and a.dtype == r.dtype
        worst = max(worst, ((a - r).abs().max() / (r.abs().max() + 1e-6)).item())
print("worst relative error", worst)
assert worst < 1e-4, worst
# batch slicing of the backward scratch (here one image a slice) gives the same gradients, every kernel;
# and segments of 3 steps (several, the last one partial) the same as the default length
T._SCRATCH_ELEMENTS = 1
T.SEG = T.SEG._replace(seg=3)
for kernel in kernels[:2]:
    use(kernel)
    sliced = torch.autograd.grad((selective_scan_triton(**inp, delta_softplus=bool(sp)) * w).sum(),
                                 list(inp.values()))
    for a, r in zip(sliced, grads):
        assert torch.allclose(a, r, rtol=1e-5, atol=1e-6)
"""


CHECK_16BIT = r"""
import torch
from localmamba.ops import selective_scan, selective_scan_ref
import localmamba.ops.scan_triton as T
torch.manual_seed(1)
dev = "{device}"
# bf16 inputs, as under autocast: the kernels compute in fp32, keep the backward's state scratch in bf16 and
# write the output in u's dtype or in out_dtype (fp32 for LocalVMamba); the oracle runs on the same values in fp32
b, d, l, n, g = 2, 16, 13, 4, 2
for kernel, out_dtype in [(k, o) for o in (None, torch.float32) for k in ("step", "seg")]:
    T.backward_kernel = lambda *a, kernel=kernel: kernel
    half = dict(u=torch.randn(b, l, d).transpose(1, 2), delta=torch.randn(b, d, l) * 0.5, B=torch.randn(b, g, n, l),
                C=torch.randn(b, g, n, l), z=torch.randn(b, d, l))
    half = {{k: v.to(dev, torch.bfloat16).requires_grad_(True) for k, v in half.items()}}
    full = dict(A=-torch.rand(d, n) * 2 - 0.1, D=torch.randn(d), delta_bias=torch.randn(d) * 0.3)
    full = {{k: v.to(dev).requires_grad_(True) for k, v in full.items()}}
    up = {{k: v.detach().float().requires_grad_(True) for k, v in half.items()}}
    out = selective_scan(**half, **full, delta_softplus=True, backend="triton", out_dtype=out_dtype)
    ref = selective_scan_ref(**up, **full, delta_softplus=True)
    assert out.dtype == (out_dtype or torch.bfloat16) and out.stride() == half["u"].stride()
    w = torch.randn_like(ref)
    grads = torch.autograd.grad((out.float() * w).sum(), [*half.values(), *full.values()])
    grads_ref = torch.autograd.grad((ref * w).sum(), [*up.values(), *full.values()])
    tol = 1e-2 if out_dtype is None else 2e-6  # the output's rounding to bf16, else fp32 arithmetic alone
    err = ((out.float() - ref).norm() / ref.norm()).item()
    assert err < tol, (kernel, out_dtype, err)
    for name, a, r in zip([*half, *full], grads, grads_ref):
        assert a.dtype == (torch.bfloat16 if name in half else torch.float32)
        err = ((a.float() - r).norm() / r.norm()).item()
        assert err < 2e-2, (kernel, out_dtype, name, err)  # bf16 gradients and bf16 stored states
"""


CHECK_COMPILE = r"""
import torch
from localmamba.ops import selective_scan
import localmamba.ops.scan_triton as T
torch.manual_seed(2)
dev = "{device}"
# under torch.compile the scan is a custom op: its fake kernels must give the real outputs' shapes, dtypes and
# strides (opcheck), and a compiled forward and backward (inductor, one graph) the eager results
b, d, l, n, g = 2, 8, 12, 4, 2
for dtype, out_dtype, groups in [(torch.float32, None, True), (torch.bfloat16, torch.float32, False)]:
    Bs = (b, g, n, l) if groups else (b, n, l)
    x = dict(u=torch.randn(b, l, d, dtype=dtype).transpose(1, 2), delta=torch.randn(b, l, d, dtype=dtype).transpose(1, 2),
             A=-torch.rand(d, n) - 0.1, B=torch.randn(*Bs, dtype=dtype), C=torch.randn(*Bs, dtype=dtype),
             D=torch.randn(d), z=torch.randn(b, d, l, dtype=dtype) if groups else None, delta_bias=torch.randn(d) * 0.3)
    x = {{k: v.to(dev).requires_grad_(True) for k, v in x.items() if v is not None}}
    x.setdefault("z", None)
    torch.library.opcheck(T._scan_op, (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"],
                                       True, out_dtype))

    def f(u, delta, A, B, C, D, z, delta_bias):
        y = selective_scan(u, delta * 0.5, A, B, C, D, z, delta_bias, True, backend="triton", out_dtype=out_dtype)
        return (y.float().square() * 0.5 + y.float()).sum()
    leaves = [v for v in x.values() if v is not None]
    out = torch.compile(f, fullgraph=True)(**x)
    ref = f(**x)
    torch.testing.assert_close(out, ref)
    for a, r in zip(torch.autograd.grad(out, leaves), torch.autograd.grad(ref, leaves)):
        assert a.dtype == r.dtype and a.shape == r.shape
        torch.testing.assert_close(a, r)
"""

# the kernels against the oracle (fp32; 16-bit inputs and out_dtype) and the custom op under torch.compile
CHECKS = {"matches_oracle": CHECK, "16bit_inputs": CHECK_16BIT, "compiles_as_custom_op": CHECK_COMPILE}


@pytest.mark.parametrize("check", CHECKS)
def test_triton_scan_in_interpreter(triton_interpreted, check):
    triton_interpreted(CHECKS[check])


@pytest.mark.cuda
@pytest.mark.parametrize("check", CHECKS)
def test_triton_scan_on_gpu(triton_on_gpu, check):
    triton_on_gpu(CHECKS[check])
