"""The "cpu" backend (the C kernel) against the oracle: outputs and every gradient over options, shapes,
groupings, dtypes and the layers' layouts; its threading; its build cache; its fallbacks and errors."""
import os
import threading
import warnings

import pytest
import torch
from .test_selective_scan import assert_close, compare_to_oracle, make_inputs, positive_steps, run

from localmamba.ops import available_backends, reads_time_major, selective_scan, selective_scan_ref

from localmamba.ops import _cpu_kernels as kernels
from localmamba.ops import _dispatch
from localmamba.ops import scan_cpu as cpu
from localmamba.ops.scan import BACKENDS, SCAN

pytestmark = pytest.mark.skipif(not cpu.cpu_kernel_available(), reason=f"no C kernel: {cpu.cpu_kernel_error()}")

SIZES = [  # (b, d, l, n, g): l = 1, 7, 197; n = 1, 16; d/g not a multiple of the kernel's 8 lanes; grouped or not
    (2, 16, 7, 16, None),
    (1, 6, 1, 3, 2),
    (2, 24, 197, 16, 4),
    (2, 10, 7, 1, None),
    (3, 36, 23, 4, 3),
]
OPTIONS = [  # (D, z, delta_bias, softplus)
    (True, True, True, True),
    (False, False, False, False),
    (True, False, True, True),
    (False, True, True, False),
]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: "b{}d{}l{}n{}g{}".format(*s))
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "D{}z{}bias{}sp{}".format(*map(int, o)))
def test_matches_oracle(size, opts):
    b, d, l, n, g = size
    D, z, bias, softplus = opts
    x = positive_steps(make_inputs(b, d, l, n, g, D=D, z=z, delta_bias=bias, seed=b * d + l), softplus)
    compare_to_oracle("cpu", x, softplus)


@pytest.mark.parametrize("groups", [(None, 2), (2, 3), (4, 2)], ids=lambda g: "B{}C{}".format(*g))
def test_groups_of_B_and_C_differ(groups):
    """B and C grouped differently: the kernel runs lcm(gB, gC) groups and sums dB, dC back."""
    gB, gC = groups
    x = make_inputs(2, 24, 21, 4, gC, seed=23)
    x["B"] = make_inputs(2, 24, 21, 4, gB, seed=29)["B"]
    compare_to_oracle("cpu", x, True)


def _layer_layout(x, K, dtype=torch.float32):
    """The CPU mixers' layouts as views of leaf storages: u, delta, z as (b, d, l) views of time-major
    (l, b, d) storage; B and C as (b, K, n, l) views of one (l, b, K, R + 2n) projection (DirectionalSSM).
    Returns (leaves, views): gradients land on the storages, through the views, as in the layers."""
    b, d, l = x["u"].shape
    n = x["A"].shape[1]
    leaves = {k: x[k].permute(2, 0, 1).to(dtype).contiguous() for k in ("u", "delta", "z")}  # (l, b, d)
    proj = torch.randn(l, b, K, 3 + 2 * n, generator=torch.Generator().manual_seed(4))  # (l, b, K, R+2n)
    proj[..., 3:3 + n] = x["B"].permute(3, 0, 1, 2)
    proj[..., 3 + n:] = x["C"].permute(3, 0, 1, 2)
    leaves.update(proj=proj.to(dtype), A=x["A"], D=x["D"], delta_bias=x["delta_bias"])
    leaves = {k: v.clone().requires_grad_() for k, v in leaves.items()}

    def views():
        p = leaves["proj"]
        return dict({k: leaves[k].permute(1, 2, 0) for k in ("u", "delta", "z")},  # (b, d, l)
                    B=p[..., 3:3 + n].permute(1, 2, 3, 0), C=p[..., 3 + n:].permute(1, 2, 3, 0),  # (b, K, n, l)
                    A=leaves["A"], D=leaves["D"], delta_bias=leaves["delta_bias"])
    return leaves, views


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_layer_layout(dtype):
    """The layers' own layout (LocalVim-T's: 4 groups, l = 197, n = 16), read in place; bf16 as the LocalVim
    mixer passes it under autocast: fp32 math on the rounded inputs, each gradient in its input's dtype."""
    leaves, views = _layer_layout(make_inputs(2, 32, 197, 16, 4, seed=31), 4, dtype)
    x = views()
    out = selective_scan(**x, delta_softplus=True, backend="cpu")
    assert out.dtype == dtype and out.stride() == x["u"].stride()       # the output takes u's layout
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad((out.float() * w).sum(), list(leaves.values()))
    for k, v in leaves.items():                                        # the oracle: the same values in fp32
        leaves[k] = v.detach().float().requires_grad_()
    out_ref = selective_scan_ref(**views(), delta_softplus=True)
    grads_ref = torch.autograd.grad((out_ref * w).sum(), list(leaves.values()))
    tol = 1e-4 if dtype == torch.float32 else 1e-2
    assert_close(out.float(), out_ref, tol, "out")
    for k, g, gr in zip(leaves, grads, grads_ref):
        assert g.dtype == (dtype if k in ("u", "delta", "z", "proj") else torch.float32), k
        assert_close(g.float(), gr, tol, f"d{k}")


@pytest.mark.parametrize("layout", ["batch-major", "time-innermost", "expanded"])
def test_other_layouts(layout):
    """(b, l, d) storage (channels innermost), contiguous (b, d, l) (read lane by lane) and a stride-0 A."""
    x = make_inputs(2, 32, 19, 8, 4, seed=19)
    if layout == "batch-major":
        for k in ("u", "delta", "z"):
            x[k] = x[k].transpose(1, 2).contiguous().transpose(1, 2)     # (b, d, l), view of (b, l, d)
    elif layout == "expanded":
        x["A"] = x["A"][:1].expand(32, 8)                                # (d, n), one row for all channels
    out = selective_scan(**x, delta_softplus=True, backend="cpu")
    assert out.stride() == x["u"].stride()
    compare_to_oracle("cpu", x, True)
    compare_to_oracle("cpu", dict(x, D=None, z=None), True)


def test_threads_and_splits_agree(monkeypatch):
    """One thread, torch's OpenMP team, Python threads, and the backward's split groups (b*G below the
    thread count): the same numbers, and the oracle's."""
    x = make_inputs(1, 40, 33, 16, None, seed=37)                       # b*G = 1: each group split in 5
    results = []
    threads = torch.get_num_threads()
    try:
        for n_threads, omp in ((1, True), (4, True), (4, False)):
            torch.set_num_threads(n_threads)
            if not omp:
                monkeypatch.setattr(kernels, "_omp_parallel", lambda: 0)
            assert cpu._splits(1, 1, 5) == (4 if n_threads == 1 else 5)
            results.append(run(selective_scan, x, True, backend="cpu"))
    finally:
        torch.set_num_threads(threads)
    for out, grads in results[1:]:
        assert_close(out, results[0][0], 1e-6, "out")
        for k in grads:
            assert_close(grads[k], results[0][1][k], 1e-6, f"d{k}")
    compare_to_oracle("cpu", x, True)


def test_large_delta_times_A_and_nan():
    """Steps that decay to nothing give finite results, as the oracle; a NaN stays a NaN."""
    x = make_inputs(2, 8, 40, 6, 2, seed=7, delta_scale=40.0, A_scale=50.0)
    x["delta"] = x["delta"].abs() + 10
    out, grads = run(selective_scan, x, True, backend="cpu")
    assert torch.isfinite(out).all() and all(torch.isfinite(v).all() for v in grads.values())
    compare_to_oracle("cpu", x, True)
    x["delta"][1, 3, 5] = float("nan")
    out = selective_scan(**x, delta_softplus=True, backend="cpu")
    assert out[1, 3, 5:].isnan().all() and not out[0].isnan().any() and not out[1, :, :5].isnan().any()


def test_saves_only_the_inputs_and_nothing_without_grad():
    x = make_inputs(2, 16, 30, 8, 2)

    def saved(**kw):
        total = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: total.append(t.numel()) or t, lambda t: t):
            selective_scan(**kw, delta_softplus=True, backend="cpu")
        return sum(total)

    assert saved(**x) == 0                                             # nothing requires grad
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    with torch.no_grad():
        assert saved(**leaves) == 0
    assert saved(**leaves) == sum(v.numel() for v in x.values())       # the inputs themselves


def test_fp64_runs_the_torch_backend():
    x = make_inputs(2, 8, 11, 4, 2, dtype=torch.float64, seed=5)
    out = selective_scan(**x, delta_softplus=True, backend="cpu")
    assert out.dtype == torch.float64
    assert torch.equal(out, selective_scan(**x, delta_softplus=True, backend="torch"))
    with pytest.raises(ValueError, match="fp64"):
        cpu.selective_scan_cpu(**x, delta_softplus=True)


def test_other_devices_raise():
    x = {k: v.to("meta") for k, v in make_inputs(2, 8, 10, 4, 2).items()}
    with pytest.raises(ValueError, match="CPU tensors"):
        selective_scan(**x, backend="cpu")


def test_registered():
    assert "cpu" in BACKENDS and "cpu" in available_backends()
    assert SCAN.resolve("auto", "cpu") == "cpu"
    assert SCAN.resolve("auto", "meta") == "torch"  # meta, mps, ...
    assert reads_time_major("cpu", "cpu") and reads_time_major("auto", "cpu")


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_auto_on_meta_tensors_and_under_jit_trace():
    """"auto" runs "torch" where the kernel cannot: meta tensors (shape inference) and torch.jit traces,
    which would not see the kernel's writes; an explicit "cpu" refuses a trace."""
    x = make_inputs(2, 8, 10, 4, 2)
    out = selective_scan(**{k: v.to("meta") for k, v in x.items()}, delta_softplus=True)
    assert out.shape == (2, 8, 10) and out.device.type == "meta"
    names = list(x)
    traced = torch.jit.trace(lambda *t: selective_scan(**dict(zip(names, t)), delta_softplus=True), tuple(x.values()),
                             check_trace=False)
    x2 = make_inputs(2, 8, 10, 4, 2, seed=3)
    assert_close(traced(*x2.values()), selective_scan(**x2, delta_softplus=True), 1e-5, "traced")
    with pytest.raises(RuntimeError, match="torch.jit"):
        torch.jit.trace(lambda *t: selective_scan(**dict(zip(names, t)), delta_softplus=True, backend="cpu"),
                        tuple(x.values()), check_trace=False)


# ------------------------------------------------------------------------------- availability, cache
def test_explicit_cpu_without_compiler_names_the_install(no_compiler):
    with pytest.raises(RuntimeError, match="apt install gcc"):
        selective_scan(**make_inputs(2, 8, 10, 4, 2), backend="cpu")
    assert "cpu" not in available_backends()


def test_auto_without_compiler_falls_back_and_warns_once(no_compiler):
    x = make_inputs(2, 8, 10, 4, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outs = [selective_scan(**x, delta_softplus=True) for _ in range(3)]
        assert [SCAN.resolve("auto", "cpu") for _ in range(2)] == ["torch"] * 2
    assert len(caught) == 1 and "apt install gcc" in str(caught[0].message)
    assert torch.equal(outs[0], selective_scan(**x, delta_softplus=True, backend="torch"))


def test_env_var_turns_it_off(monkeypatch):
    monkeypatch.setenv("LOCALMAMBA_CPU_KERNEL", "0")
    monkeypatch.setattr(_dispatch, "_warned", set())
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                 # turned off on purpose: no warning
        assert SCAN.resolve("auto", "cpu") == "torch"
    with pytest.raises(RuntimeError, match="LOCALMAMBA_CPU_KERNEL=0"):
        selective_scan(**make_inputs(2, 8, 10, 4, 2), backend="cpu")


def test_build_cache(monkeypatch, tmp_path):
    """Concurrent first builds leave one .so and no temporary file; a cached build is not rebuilt; another
    CPU (other feature flags) gets a build of its own."""
    monkeypatch.setenv("LOCALMAMBA_CACHE", str(tmp_path))
    paths = []
    threads = [threading.Thread(target=lambda: paths.append(kernels._build())) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(paths) == 3 and len(set(paths)) == 1 and os.listdir(tmp_path) == [paths[0].name]
    mtime = paths[0].stat().st_mtime_ns
    assert kernels._build() == paths[0] and paths[0].stat().st_mtime_ns == mtime
    monkeypatch.setattr(kernels, "_cpu_flags", lambda: "flags : sse2")
    other = kernels._build()
    assert other != paths[0] and sorted(os.listdir(tmp_path)) == sorted([paths[0].name, other.name])
