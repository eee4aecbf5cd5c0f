"""The Triton scan kernels' registers, spills and shared memory for a GPU, compiled on any machine (no GPU needed).

    python benchmarks/kernel_resources.py                 # Hopper (sm_90), fp32 and bf16 inputs
    python benchmarks/kernel_resources.py --arch 80       # Ampere

The kernels are step loops bound by latency: how many programs an SM keeps resident (set by the registers a
thread needs) is what hides it, so a layout change shows here before any GPU time is spent. Each kernel is
compiled as Triton's launcher specializes it at the models' calls: time-major inputs (the unit channel and state
strides become constants; the other strides, the channel and state counts and the pointers are multiples of 16,
which decides how wide the loads are and with it the tiles' layout), D, delta bias and softplus on, no z (both
mixers gate after the scan), 16 states, and the library's launch settings (``_BLOCK_D`` channels and
``_NUM_WARPS`` warps a program, ``SEG`` for the segmented backward). Registers and spill stack come from
Triton's own cuobjdump; "warps/SM" is the register file (64K) over a warp's registers, at most 64. The figures
depend on the Triton version; benchmarks/RESULTS.md ("Selective scan, the op alone") gives the run behind the
kernels' state tiles.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget

import localmamba.ops.scan_triton as T

UNIT_STRIDES = {"su_d", "sdl_d", "sz_d", "so_d", "sdo_d", "sB_n", "sC_n", "sA_n"}
POINTERS_16BIT = {"u_ptr", "dl_ptr", "z_ptr", "B_ptr", "C_ptr", "out_ptr", "states_ptr", "du_ptr", "ddl_ptr",
                  "dz_ptr", "dout_ptr"}  # bf16 under autocast (the step backward's scratch too)
FLAGS = dict(HAS_D=True, HAS_Z=False, HAS_BIAS=True, SOFTPLUS=True, BLOCK_D=T._BLOCK_D, BLOCK_N=T._block_n(16))


def compile_kernel(kernel, constexprs: dict, bf16: bool, arch: int):
    """Compile ``kernel`` for sm_<arch> with the launcher's specializations and warps (module docstring)."""
    num_warps = T.SEG.warps if kernel is T._bwd_seg_kernel else T._NUM_WARPS
    sig, cst, attrs = {}, {}, {}
    for i, (name, p) in enumerate(zip(kernel.arg_names, kernel.params)):
        if p.is_constexpr:
            sig[name], cst[name] = "constexpr", constexprs.get(name, p.default)
        elif name in UNIT_STRIDES:
            sig[name], cst[name] = "constexpr", 1
        elif name.endswith("_ptr"):
            sig[name] = "*bf16" if bf16 and name in POINTERS_16BIT else "*fp32"
            attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            sig[name] = "i32"
            if name.startswith("s") or name in ("d", "n"):  # strides, channels, states: multiples of 16 at the models'
                attrs[(i,)] = [["tt.divisibility", 16]]
    src = triton.compiler.ASTSource(fn=kernel, signature=sig, constexprs=cst, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=dict(num_warps=num_warps))


def resources(compiled) -> dict:
    """Registers a thread, spill stack (bytes) and shared memory of a compiled kernel."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        report = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    m = re.search(r"REG:(\d+).*?STACK:(\d+)", report)
    if m is None:
        raise RuntimeError(f"no resource line in cuobjdump's report:\n{report}")
    regs = int(m.group(1))
    warp_regs = -(-regs // 8) * 8 * 32  # allocated in units of 8 registers a thread
    return dict(regs=regs, stack=int(m.group(2)), shared=compiled.metadata.shared,
                warps_per_sm=min(64, 65536 // warp_regs))


def kernels() -> dict:
    """The scan's kernels as the models call them: name -> (kernel, constexprs)."""
    return {
        "forward (output)": (T._fwd_kernel, dict(FLAGS, STORE_STATES=False, WRITE_OUT=True)),
        "forward (states, step backward)": (T._fwd_kernel, dict(FLAGS, STORE_STATES=True, WRITE_OUT=False)),
        "forward (checkpoints, seg backward)": (T._fwd_kernel, dict(FLAGS, STORE_STATES=False, WRITE_OUT=False,
                                                                     CKPT_EVERY=T.SEG.seg)),
        "step backward": (T._bwd_kernel, FLAGS),
        "segmented backward": (T._bwd_seg_kernel, dict(FLAGS, BLOCK_D=T.SEG.block_d, SEG=T.SEG.seg)),
    }


def table(arch: int = 90, dtypes=("fp32", "bf16")) -> list[dict]:
    rows = []
    for dtype in dtypes:
        for name, (kernel, constexprs) in kernels().items():
            if dtype == "bf16" and "checkpoints" in name:
                continue  # the checkpoints are fp32 whatever the inputs
            rows.append(dict(kernel=name, dtype=dtype, **resources(compile_kernel(kernel, constexprs,
                                                                                   dtype == "bf16", arch))))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", type=int, default=90, help="compute capability x10 (90: H100/H200)")
    args = ap.parse_args()
    print(f"triton {triton.__version__}, sm_{args.arch}")
    print(f"{'kernel':36s} {'inputs':6s} {'regs':>5s} {'spill B':>8s} {'shared B':>9s} {'warps/SM':>9s}")
    for r in table(args.arch):
        print(f"{r['kernel']:36s} {r['dtype']:6s} {r['regs']:5d} {r['stack']:8d} {r['shared']:9d} "
              f"{r['warps_per_sm']:9d}")


if __name__ == "__main__":
    main()
