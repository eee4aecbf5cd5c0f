"""Selective scan: every backend against the oracle (outputs and all gradients), gradcheck, dtypes, errors.

Runs in a few seconds on a 2-core CPU; CUDA cases skip without a GPU (and "cuda" without mamba-ssm).
"""
import itertools
import warnings

import pytest
import torch

from localmamba.ops import available_backends, selective_scan, selective_scan_ref, selective_scan_torch

from localmamba.ops import _dispatch, _triton, scan_cuda
from localmamba.ops.scan import SCAN

HAS_CUDA = torch.cuda.is_available()
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(b, d, l, n, g=None, *, D=True, z=True, delta_bias=True, dtype=torch.float32,
                device="cpu", seed=0, delta_scale=1.0, A_scale=1.0):
    """Random inputs in mamba-ssm's shapes; g=None gives ungrouped B, C: (b, n, l)."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    bc_shape = (b, n, l) if g is None else (b, g, n, l)
    x = dict(
        u=rnd(b, d, l),
        delta=0.5 * rnd(b, d, l) * delta_scale,
        A=-torch.exp(0.5 * rnd(d, n)) * A_scale,                      # negative, like -exp(A_log)
        B=rnd(*bc_shape),
        C=rnd(*bc_shape),
        D=rnd(d) if D else None,
        z=rnd(b, d, l) if z else None,
        delta_bias=0.3 * rnd(d) if delta_bias else None,
    )
    return {k: (v.to(device=device, dtype=dtype) if v is not None else None) for k, v in x.items()}


def run(fn, inputs, softplus, grad=True, seed=1, **kw):
    """Output, and the gradients of <out, w> for a fixed random w, w.r.t. every tensor input."""
    leaves = {k: v.detach().clone().requires_grad_(grad) for k, v in inputs.items() if v is not None}
    out = fn(**leaves, delta_softplus=softplus, **kw)
    if not grad:
        return out.detach(), {}
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out)
    grads = torch.autograd.grad((out.float() * w.float()).sum(), list(leaves.values()))
    return out.detach(), dict(zip(leaves, grads))


def assert_close(actual, expected, tol, name=""):
    """max |actual - expected| <= tol * (max |expected| + tol): a relative check on the whole tensor."""
    assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (name, actual.dtype, expected.dtype)
    err = (actual.double() - expected.double()).abs().max().item()
    scale = expected.double().abs().max().item()
    assert err <= tol * (scale + tol), f"{name}: max error {err:.3g} vs max |expected| {scale:.3g}"


def compare_to_oracle(backend, inputs, softplus, tol=1e-4, **kw):
    fn = selective_scan_torch if backend == "torch" and kw else selective_scan
    if fn is selective_scan:
        kw = dict(backend=backend)
    out, grads = run(fn, inputs, softplus, **kw)
    out_ref, grads_ref = run(selective_scan_ref, inputs, softplus)
    assert_close(out, out_ref, tol, "out")
    assert set(grads) == set(grads_ref)
    for k in grads_ref:
        assert_close(grads[k], grads_ref[k], tol, f"d{k}")


FAST_BACKENDS = [
    pytest.param(b, marks=[pytest.mark.cuda] if b == "cuda" else [])
    for b in ("torch", "cpu", "cuda") if b in available_backends()
]
SIZES = [  # (b, d, l, n, g): l not a multiple of the chunk, l = 1, a multiple of it, grouped and not
    (2, 8, 37, 4, 2),
    (1, 4, 1, 3, None),
    (2, 6, 32, 5, 3),
    (1, 12, 50, 8, None),
    (2, 8, 17, 16, 1),
]
OPTIONS = [  # (D, z, delta_bias, softplus)
    (True, True, True, True),
    (False, False, False, False),
    (True, False, True, False),
    (False, True, False, True),
]


def positive_steps(x, softplus):
    """Without softplus the caller owns positivity: a step delta + bias < 0 makes exp(delta*A) > 1 and the
    state grow exponentially, where kernels that sum in another order (mamba-ssm's parallel scan)
    legitimately differ by more than fp32 rounding; keep the step positive, as models do."""
    if not softplus:
        x["delta"] = x["delta"].abs() + (x["delta_bias"].abs()[:, None] if x["delta_bias"] is not None else 0)
    return x


def _device(backend):
    return "cuda" if backend == "cuda" else "cpu"


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "b{}d{}l{}n{}g{}".format(*s))
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "D{}z{}bias{}sp{}".format(*map(int, o)))
def test_matches_oracle(backend, size, opts):
    b, d, l, n, g = size
    D, z, bias, softplus = opts
    inputs = positive_steps(make_inputs(b, d, l, n, g, D=D, z=z, delta_bias=bias, device=_device(backend)), softplus)
    compare_to_oracle(backend, inputs, softplus)


@pytest.mark.parametrize("chunk_size", [1, 3, 16, 64])
def test_torch_chunk_sizes(chunk_size):
    """Any chunk size gives the oracle's numbers (chunk boundaries carry state and adjoint correctly)."""
    compare_to_oracle("torch", make_inputs(2, 6, 29, 4, 2, seed=3), True, chunk_size=chunk_size)


@pytest.mark.parametrize("groups", [(None, 2), (2, 3), (4, 2)], ids=lambda g: "B{}C{}".format(*g))
def test_torch_groups_of_B_and_C_differ(groups):
    """B and C grouped differently: the torch backend scans lcm(gB, gC) internal groups."""
    gB, gC = groups
    x = make_inputs(2, 12, 21, 4, gC, seed=23)
    x["B"] = make_inputs(2, 12, 21, 4, gB, seed=29)["B"]
    compare_to_oracle("torch", x, True)


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("options", [False, True])
def test_torch_gradcheck_fp64(grouped, options):
    inputs = make_inputs(2, 4, 7, 3, 2 if grouped else None, D=options, z=options, delta_bias=options,
                         dtype=torch.float64, seed=5)
    names = [k for k, v in inputs.items() if v is not None]
    leaves = [inputs[k].clone().requires_grad_() for k in names]

    def f(*xs):
        return selective_scan_torch(**dict(zip(names, xs)), delta_softplus=options, chunk_size=3)

    assert f(*leaves).dtype == torch.float64
    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_large_delta_times_A_is_safe():
    """Steps that decay to exactly zero (delta*|A| ~ 1e4) give finite outputs and gradients, as the oracle."""
    inputs = make_inputs(2, 4, 40, 6, 2, seed=7, delta_scale=40.0, A_scale=50.0)
    inputs["delta"] = inputs["delta"].abs() + 10
    out, grads = run(selective_scan, {**inputs}, True, backend="torch")
    assert torch.isfinite(out).all() and all(torch.isfinite(v).all() for v in grads.values())
    compare_to_oracle("torch", inputs, True)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_bf16_close_to_fp32(backend):
    device = _device(backend)
    x32 = make_inputs(2, 8, 40, 8, 2, device=device, seed=11)
    x16 = {k: (v.bfloat16() if k in ("u", "delta", "z", "B", "C") else v) for k, v in x32.items()}
    out16 = selective_scan(**x16, delta_softplus=True, backend=backend)
    out32 = selective_scan(**x32, delta_softplus=True, backend=backend)
    assert out16.dtype == torch.bfloat16
    assert_close(out16.float(), out32, 3e-2, "bf16 vs fp32")
    # the same bf16-rounded inputs in fp32 math: only the output rounding differs
    ref = selective_scan_ref(**{k: (v.float() if v is not None else None) for k, v in x16.items()},
                             delta_softplus=True)
    assert_close(out16.float(), ref, 1e-2, "bf16 vs oracle on the same inputs")
    # gradients come back in each input's own dtype
    _, grads = run(selective_scan, x16, True, backend=backend)
    for k, v in grads.items():
        assert v.dtype == x16[k].dtype, k


@pytest.mark.parametrize("backend", [b for b in ("ref", "torch", "cpu") if b in available_backends()])
def test_autocast_keeps_fp32_math(backend):
    inputs = make_inputs(2, 8, 21, 4, 2, seed=13)
    out, grads = run(selective_scan, inputs, True, backend=backend)
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):             # forward under autocast,
        out_ac = selective_scan(**leaves, delta_softplus=True, backend=backend)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    grads_ac = dict(zip(leaves, torch.autograd.grad((out_ac * w).sum(), list(leaves.values()))))  # backward outside
    assert out_ac.dtype == torch.float32
    out_ac = out_ac.detach()
    assert_close(out_ac, out, 1e-6, "out under autocast")
    for k in grads:
        assert_close(grads_ac[k], grads[k], 1e-6, f"d{k} under autocast")


def test_inputs_not_modified_and_noncontiguous_ok():
    inputs = make_inputs(2, 6, 1, 4, None, seed=17)              # l = 1: time-major views alias inputs
    before = {k: v.clone() for k, v in inputs.items()}
    run(selective_scan, inputs, True, backend="torch")
    for k, v in inputs.items():
        assert torch.equal(v, before[k]), k
    # non-contiguous u / delta / z, as a layer may pass them: views of (b, l, d) and of time-major (l, b, d)
    # storage (the latter is the backend's own layout: y is then computed in the output's memory)
    for perm, inverse in (((0, 2, 1), (0, 2, 1)), ((2, 0, 1), (1, 2, 0))):
        x = make_inputs(2, 6, 19, 4, 3, seed=19)
        for k in ("u", "delta", "z"):
            x[k] = x[k].permute(*perm).contiguous().permute(*inverse)
            assert not x[k].is_contiguous()
        compare_to_oracle("torch", x, True)
        compare_to_oracle("torch", dict(x, D=None), True)


def test_torch_backend_does_not_store_every_state():
    """Autograd keeps O(b*d*n*l/T) for the torch backend, against O(b*d*n*l) for the oracle."""
    b, d, l, n, g = 2, 32, 96, 16, 2
    inputs = {k: v.requires_grad_() for k, v in make_inputs(b, d, l, n, g).items()}

    def saved_numel(fn, **kw):
        total = []

        def pack(t):
            total.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn(**inputs, delta_softplus=True, **kw)
        return sum(total)

    full = b * d * l * n                                           # one (b, d, l, n) tensor
    T = 16
    # at most: u, delta, z, softplus'(delta) (b, d, l); B, C; A, D; the state at each chunk start
    bound = 4 * b * d * l + 2 * b * g * n * l + d * n + d + -(-l // T) * b * d * n
    saved_torch = saved_numel(selective_scan_torch, chunk_size=T)
    assert saved_torch <= bound, (saved_torch, bound)
    assert saved_torch < 0.5 * full
    assert saved_numel(selective_scan_ref) > 2 * full


def test_available_backends():
    names = available_backends()
    assert names[:2] == ["ref", "torch"]
    assert ("cuda" in names) == (HAS_CUDA and scan_cuda._mamba_selective_scan_fn() is not None)


# ------------------------------------------------------------------------------------------- errors
def _good():
    return make_inputs(2, 8, 10, 4, 2)


@pytest.mark.parametrize("field,value,match", [
    ("u", torch.zeros(2, 8), "u must be"),
    ("delta", torch.zeros(2, 8, 9), "delta must"),
    ("A", torch.zeros(7, 4), "A must be"),
    ("A", torch.zeros(8, 4, dtype=torch.complex64), "complex"),
    ("B", torch.zeros(2, 4, 9), "B must be"),
    ("B", torch.zeros(2, 3, 4, 10), "does not divide"),
    ("C", torch.zeros(2, 2, 5, 10), "C must be"),
    ("C", torch.zeros(8, 4), "C must be"),
    ("D", torch.zeros(7), "D must be"),
    ("z", torch.zeros(2, 8, 11), "z must"),
    ("delta_bias", torch.zeros(8, 1), "delta_bias must"),
])
@pytest.mark.parametrize("backend", ["ref", "torch", "cpu", "auto"])
def test_bad_shapes_raise(field, value, match, backend):
    x = _good()
    x[field] = value
    with pytest.raises(ValueError, match=match):
        selective_scan(**x, backend=backend)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'no-such-backend'; choose one of .*'triton'"):
        selective_scan(**_good(), backend="no-such-backend")


def test_cuda_backend_without_mamba_names_install_command(monkeypatch):
    monkeypatch.setattr(scan_cuda, "_mamba_selective_scan_fn", lambda: None)
    with pytest.raises(RuntimeError, match="pip install mamba-ssm"):
        selective_scan(**_good(), backend="cuda")


def test_cuda_backend_needs_cuda_tensors(monkeypatch):
    monkeypatch.setattr(scan_cuda, "_mamba_selective_scan_fn", lambda: (lambda *a, **k: None))
    with pytest.raises(ValueError, match="CUDA tensors"):
        selective_scan(**_good(), backend="cuda")


def test_auto_falls_back_and_warns_once(monkeypatch):
    """On CUDA, "auto" prefers the Triton kernel, then mamba-ssm, then torch; each fallback warns once."""
    monkeypatch.setattr(scan_cuda, "_mamba_selective_scan_fn", lambda: None)
    monkeypatch.setattr(_triton, "triton_error", lambda: "no triton here")  # no GPU kernel at all
    monkeypatch.setattr(_dispatch, "_warned", set())
    assert SCAN.resolve("auto", "cpu") == ("cpu" if "cpu" in available_backends() else "torch")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [SCAN.resolve("auto", "cuda") for _ in range(3)] == ["torch"] * 3
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2, messages  # triton missing, mamba-ssm missing: once each
    assert "pip install triton" in messages[0] and "pip install mamba-ssm" in messages[1]
    monkeypatch.setattr(_dispatch, "_warned", set())
    monkeypatch.setattr(scan_cuda, "_mamba_selective_scan_fn", lambda: (lambda *a, **k: None))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert SCAN.resolve("auto", "cuda") == "cuda"                 # mamba-ssm is the first fallback
    assert len(caught) == 1 and "Triton" in str(caught[0].message)
    monkeypatch.setattr(_triton, "triton_error", lambda: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert SCAN.resolve("auto", "cuda") == "triton"               # the fastest for the models: no warning


# --------------------------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("opts", list(itertools.product([False, True], repeat=2)))
def test_torch_backend_on_cuda(opts):
    grouped, options = opts
    inputs = make_inputs(2, 16, 45, 8, 4 if grouped else None, D=options, z=options, delta_bias=options,
                         device="cuda")
    compare_to_oracle("torch", inputs, options)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_auto_and_autocast_on_cuda(monkeypatch):
    inputs = make_inputs(2, 16, 33, 8, 4, device="cuda")
    expected = selective_scan(**inputs, delta_softplus=True, backend="torch")
    monkeypatch.setattr(_dispatch, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = selective_scan(**inputs, delta_softplus=True, backend="auto")
    if "triton" in available_backends():                           # the first choice: no warning
        assert not caught
    else:                                                          # mamba-ssm or torch, with a warning
        assert caught and "pip install triton" in str(caught[0].message)
    assert_close(out, expected, 1e-4, "auto vs torch")
    for backend in (b for b in available_backends() if b != "cpu"):  # "cpu" takes CPU tensors only
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out_ac = selective_scan(**inputs, delta_softplus=True, backend=backend)
        assert out_ac.dtype == torch.float32
        assert_close(out_ac, expected, 1e-4, f"{backend} under autocast")
