"""benchmarks/kernel_resources.py: the scan kernels compiled for a GPU on a machine without one."""
import os
import pathlib
import sys

import pytest

triton = pytest.importorskip("triton")


@pytest.fixture(scope="module")
def kr():
    if not os.path.exists(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")):
        pytest.skip("this triton ships no NVIDIA tools")
    sys.path.insert(0, str(pathlib.Path(__file__).parents[2] / "benchmarks"))
    try:
        import kernel_resources
        yield kernel_resources
    finally:
        sys.path.pop(0)


def test_every_scan_kernel_is_listed(kr):
    import localmamba.ops.scan_triton as T
    listed = {kernel for kernel, _ in kr.kernels().values()}
    assert listed == {T._fwd_kernel, T._bwd_kernel, T._bwd_seg_kernel}


@pytest.mark.parametrize("name", ["forward (output)", "step backward"])
def test_resources_of_a_kernel(kr, name):
    kernel, constexprs = kr.kernels()[name]
    r = kr.resources(kr.compile_kernel(kernel, constexprs, bf16=False, arch=90))
    assert 0 < r["regs"] <= 255 and r["stack"] >= 0 and r["shared"] >= 0
    assert r["warps_per_sm"] == min(64, 65536 // (-(-r["regs"] // 8) * 8 * 32))
    if name == "forward (output)":
        # the (N, BLOCK_D) state tiles exist for this: with (BLOCK_D, N) tiles the forward took 158 registers
        # (12 warps an SM at fp32); a layout regression shows here before any GPU time is spent
        assert r["regs"] <= 128 and r["stack"] == 0, r
