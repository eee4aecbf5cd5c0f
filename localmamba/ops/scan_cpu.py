"""The "cpu" backend of the selective scan: a fused C kernel, forward and backward, for CPU tensors.

The torch backend runs the recurrence as many elementwise passes over (b, d, T, n) buffers; here one pass
per (batch, block of 8 channels) keeps the state in registers and does everything (bias, softplus, exp,
the recurrence, y, D, the silu gate) in it. The backward recomputes the states of a block into a small
per-thread scratch (h_{t-1} and exp(delta_t A) of every step: 2*l*n vectors of 8 floats), walks the
adjoint recurrence backwards, and writes every gradient; nothing but the inputs is saved for it.

- Source: ``scan_cpu.c`` next to this file, plain C (no torch headers), compiled on first use
  with the system C compiler (``$CC``, else ``cc``, else ``gcc``) at ``-O3 -march=native`` and loaded with
  ctypes. The ``.so`` is cached under ``$LOCALMAMBA_CACHE`` (default ``~/.cache/localmamba``), keyed by a
  hash of the source, the flags, the compiler and its ``-march=native`` target macros and the CPU's flags,
  so a build never runs on a CPU that lacks its instructions; it is built into a temporary file and
  renamed into place, so concurrent processes can build at once.
- Threads: the independent tasks are split over ``torch.get_num_threads()`` threads of torch's own OpenMP
  team, which the kernel enters through the runtime's ``GOMP_parallel`` (found in the library torch
  loaded: no second runtime, and no threads of ours left to compete with OpenMP workers that spin after
  every torch op). Where torch has no OpenMP, Python threads (ctypes releases the GIL during a call).
- Arithmetic in fp32 for fp32/bf16/fp16 inputs (they are converted first); fp64 inputs are refused here,
  and :func:`~localmamba.ops.selective_scan` sends them to the "torch" backend. The output is in u.dtype,
  each gradient in its input's dtype. Any strides work; channels at stride 1 (the CPU mixers' time-major
  (l, b, d) storage, or (b, l, d)) are read as whole vectors, and the output takes u's layout.
- ``LOCALMAMBA_CPU_KERNEL=0`` turns the kernel off ("auto" then uses "torch"), for A/B comparisons.
"""
from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from ._checks import check_scan_inputs
from ._dispatch import register_backend

__all__ = ["selective_scan_cpu", "cpu_kernel_available", "cpu_kernel_error", "SelectiveScanCpuFn",
           "CPU_KERNEL_INSTALL_HINT", "selective_scan_cpu_checked"]

SOURCE = Path(__file__).with_name("scan_cpu.c")
#: No -ffast-math: GCC < 13 links crtfastmath.o into a -ffast-math shared library, and loading it sets
#: flush-to-zero for the whole process (torch's denormals included). The kernel's math needs none of it.
FLAGS = ("-O3", "-march=native", "-fPIC", "-shared")
CPU_KERNEL_INSTALL_HINT = ("install a C compiler (Debian/Ubuntu: apt install gcc; Fedora: dnf install gcc; "
                           "conda: conda install c-compiler; macOS: xcode-select --install), or set $CC")
VL = 8  # channels per vector in the kernel


# --------------------------------------------------------------------------------------------------
# build and load
# --------------------------------------------------------------------------------------------------
_lib = None         # the loaded kernel
_lib_error = None   # why it could not be built or loaded (remembered: one try per process)


def _compiler() -> list[str]:
    """The C compiler's command: $CC (may carry arguments), else cc, else gcc."""
    if os.environ.get("CC"):
        return shlex.split(os.environ["CC"])
    for name in ("cc", "gcc"):
        path = shutil.which(name)
        if path:
            return [path]
    raise RuntimeError(f"no C compiler found ($CC unset, no cc or gcc on PATH): {CPU_KERNEL_INSTALL_HINT}")


def _cpu_flags() -> str:
    """The CPU's feature flags (Linux), for the cache key."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return ""


def _cache_key(cc: list[str]) -> str:
    """Hash of what the binary depends on. The compiler's predefined macros under -march=native name its
    version (__VERSION__) and the instruction sets it would use on this CPU (__AVX2__, __FMA__, ...)."""
    macros = subprocess.run([*cc, "-march=native", "-dM", "-E", "-x", "c", os.devnull],
                            capture_output=True, text=True, timeout=60)
    if macros.returncode:
        raise RuntimeError(f"{shlex.join(cc)} failed: {macros.stderr.strip()[-2000:]}")
    h = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(FLAGS).encode(), shlex.join(cc).encode(), macros.stdout.encode(),
                 _cpu_flags().encode(), platform.machine().encode()):
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()[:20]


def _cache_dir() -> Path:
    return Path(os.environ.get("LOCALMAMBA_CACHE") or Path.home() / ".cache" / "localmamba")


def _build() -> Path:
    """The cached .so for this source, compiler and CPU, compiled if missing (temp file + atomic rename)."""
    cc = _compiler()
    cache = _cache_dir()
    so = cache / f"selective_scan_cpu-{_cache_key(cc)}.so"
    if so.exists():
        return so
    try:
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=so.stem + ".", suffix=".tmp")
    except OSError:  # a read-only cache: build for this process only
        cache = Path(tempfile.mkdtemp(prefix="localmamba-"))
        so = cache / so.name
        fd, tmp = tempfile.mkstemp(dir=cache, suffix=".tmp")
    os.close(fd)
    try:
        r = subprocess.run([*cc, *FLAGS, "-o", tmp, str(SOURCE)], capture_output=True, text=True, timeout=300)
        if r.returncode:
            raise RuntimeError(f"compiling {SOURCE.name} with {shlex.join(cc)} failed:\n{r.stderr.strip()[-4000:]}")
        os.replace(tmp, so)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return so


def _load():
    """The kernel library, built on the first call; None (and _lib_error set) when it cannot be had."""
    global _lib, _lib_error
    if _lib is None and _lib_error is None:
        try:
            lib = ctypes.CDLL(str(_build()))
            for fn in (lib.ss_forward, lib.ss_backward):
                fn.argtypes = [ctypes.POINTER(_Args), ctypes.c_int64, ctypes.c_int64]
                fn.restype = ctypes.c_int
            lib.ss_parallel.argtypes = [ctypes.c_int64, ctypes.POINTER(_Args), ctypes.c_int64, ctypes.c_int64,
                                        ctypes.c_void_p]
            lib.ss_parallel.restype = ctypes.c_int
            _lib = lib
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            _lib_error = str(e)
    return _lib


def cpu_kernel_error() -> str | None:
    """Why the "cpu" backend is unavailable, or None when it is (builds the kernel on the first call)."""
    if os.environ.get("LOCALMAMBA_CPU_KERNEL", "1").strip() == "0":
        return "the CPU kernel is turned off by LOCALMAMBA_CPU_KERNEL=0"
    return None if _load() is not None else _lib_error


def cpu_kernel_available() -> bool:
    """Whether the "cpu" backend can run here: a C compiler built the kernel (or a cached build loads)."""
    return cpu_kernel_error() is None


register_backend("cpu", lambda: cpu_kernel_error(), CPU_KERNEL_INSTALL_HINT, what="the selective scan's C kernel",
                 traceable=False,  # torch.jit would not see the kernel's writes
                 quiet=lambda reason: "LOCALMAMBA_CPU_KERNEL" in reason)  # turned off on purpose


# --------------------------------------------------------------------------------------------------
# calling it
# --------------------------------------------------------------------------------------------------
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p


class _Args(ctypes.Structure):
    """``ss_args`` of scan_cpu.c, field for field."""
    _fields_ = [(k, _I64) for k in ("b", "d", "l", "n", "gB", "gC", "G", "S", "softplus")] + [
        ("u", _PTR), ("su", _I64 * 3), ("delta", _PTR), ("sdelta", _I64 * 3), ("A", _PTR), ("sA", _I64 * 2),
        ("B", _PTR), ("sB", _I64 * 4), ("C", _PTR), ("sC", _I64 * 4), ("D", _PTR), ("sD", _I64),
        ("z", _PTR), ("sz", _I64 * 3), ("bias", _PTR), ("sbias", _I64), ("out", _PTR), ("sout", _I64 * 3),
        ("dout", _PTR), ("sdout", _I64 * 3), ("du", _PTR), ("sdu", _I64 * 3), ("ddelta", _PTR),
        ("sddelta", _I64 * 3), ("dz", _PTR), ("sdz", _I64 * 3), ("dA", _PTR), ("dD", _PTR), ("dbias", _PTR),
        ("dB", _PTR), ("dC", _PTR),
    ]

    def set(self, name: str, t: torch.Tensor | None) -> None:
        """Pointer and strides of fp32 tensor t (or NULL) into field ``name`` and its ``s`` + name."""
        if t is None:
            return
        assert t.dtype == torch.float32 and t.device.type == "cpu", (name, t.dtype, t.device)
        setattr(self, name, t.data_ptr())
        if hasattr(self, "s" + name):
            s = t.stride()
            setattr(self, "s" + name, s[0] if t.dim() == 1 else (_I64 * len(s))(*s))


_omp = None  # address of GOMP_parallel in torch's OpenMP runtime, 0 when torch has none (looked up once)
_pool: ThreadPoolExecutor | None = None
_pool_key = None  # (pid, workers): a forked child gets a new pool (the parent's threads are not in it)


def _omp_parallel() -> int:
    """Address of ``GOMP_parallel`` in the OpenMP runtime that torch's ops run on, or 0.

    dlsym on libtorch_cpu's handle searches its dependencies, so this finds the very runtime torch loaded
    (libgomp, libomp or libiomp5: all export the GOMP entry points), never a second one."""
    global _omp
    if _omp is None:
        _omp = 0
        if "OpenMP" in torch.__config__.parallel_info():
            libdir = Path(torch.__file__).parent / "lib"
            for name in ("libtorch_cpu.so", "libtorch_cpu.dylib"):
                try:
                    _omp = ctypes.cast(ctypes.CDLL(str(libdir / name)).GOMP_parallel, ctypes.c_void_p).value or 0
                    break
                except (OSError, AttributeError):
                    continue
    return _omp


def _run(lib, backward: bool, args: _Args, tasks: int) -> None:
    """The kernel's tasks [0, tasks) split in contiguous ranges over torch.get_num_threads() threads.

    On torch's own OpenMP team when it has one: after every torch op its workers spin for a while (libgomp's
    default), so threads of our own would share the cores with them. LocalVim-T's scan forward at batch 2 on
    2 cores, right after a torch op: 5.2 ms on the team, 10 ms on Python threads (9.8 ms on one thread).
    Otherwise on Python threads (the pool's and the calling one; ctypes drops the GIL during the call)."""
    global _pool, _pool_key
    p = max(1, min(torch.get_num_threads(), tasks))
    ref = ctypes.byref(args)
    if p == 1 or _omp_parallel():
        rc = lib.ss_parallel(int(backward), ref, tasks, p, _omp_parallel() or None)
    else:
        fn = lib.ss_backward if backward else lib.ss_forward
        bounds = [tasks * i // p for i in range(p + 1)]
        if _pool_key != (os.getpid(), p - 1):
            _pool, _pool_key = ThreadPoolExecutor(p - 1, thread_name_prefix="localmamba-scan"), (os.getpid(), p - 1)
        futures = [_pool.submit(fn, ref, bounds[i], bounds[i + 1]) for i in range(1, p)]
        rc = fn(ref, bounds[0], bounds[1]) | any(f.result() for f in futures)
    if rc:
        raise MemoryError("selective_scan (cpu backend): could not allocate the kernel's scratch")


def _prepare(u, delta, A, B, C, D, z, delta_bias, softplus):
    """fp32 inputs ((b, g, n, l) B and C) and the kernel's arguments with the inputs filled in."""
    f32 = [None if t is None else t.float() for t in (u, delta, A, B, C, D, z, delta_bias)]
    u, delta, A, B, C, D, z, delta_bias = f32
    B = B if B.dim() == 4 else B.unsqueeze(1)                            # (b, gB, n, l)
    C = C if C.dim() == 4 else C.unsqueeze(1)                            # (b, gC, n, l)
    b, d, l = u.shape
    gB, gC = B.shape[1], C.shape[1]
    a = _Args(b=b, d=d, l=l, n=A.shape[1], gB=gB, gC=gC, G=math.lcm(gB, gC), S=1, softplus=int(bool(softplus)))
    for name, t in zip(("u", "delta", "A", "B", "C", "D", "z", "bias"), (u, delta, A, B, C, D, z, delta_bias)):
        a.set(name, t)
    return (u, delta, A, B, C, D, z, delta_bias), a


def _forward(lib, u, delta, A, B, C, D, z, delta_bias, softplus) -> torch.Tensor:
    """out (b, d, l) in u's layout and dtype."""
    f32, a = _prepare(u, delta, A, B, C, D, z, delta_bias, softplus)
    out = torch.empty_like(f32[0])                                       # (b, d, l), u's layout
    a.set("out", out)
    _run(lib, False, a, a.b * a.G * -(-(a.d // a.G) // VL))
    return out.to(u.dtype)


def _splits(b: int, G: int, nblk: int) -> int:
    """Splits of each group's channel blocks in the backward: enough (batch, group, split) tasks to keep
    every thread busy (each split costs a partial (l, b, G, n) dB and dC to add up)."""
    target = 4 * torch.get_num_threads()
    return max(1, min(nblk, -(-target // (b * G)))) if b * G < target else 1


class SelectiveScanCpuFn(torch.autograd.Function):
    """The C kernel's forward and backward; saves only the inputs."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
        ctx.softplus = delta_softplus
        return _forward(_load(), u, delta, A, B, C, D, z, delta_bias, delta_softplus)

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        inputs = ctx.saved_tensors
        (u, delta, A, B, C, D, z, delta_bias), a = _prepare(*inputs, ctx.softplus)
        b, d, l, n, G = a.b, a.d, a.l, a.n, a.G
        a.S = S = _splits(b, G, -(-(d // G) // VL))
        dout = dout.float()                                              # (b, d, l)
        du, ddelta = torch.empty_like(u), torch.empty_like(delta)        # (b, d, l), the inputs' layouts
        dz = torch.empty_like(z) if z is not None else None
        dA = u.new_empty((b, d, n))                                      # per batch element
        dD = u.new_empty((b, d)) if D is not None else None
        dbias = u.new_empty((b, d)) if delta_bias is not None else None
        dB, dC = u.new_empty((S, l, b, G, n)), u.new_empty((S, l, b, G, n))  # per split of a group
        for name, t in (("dout", dout), ("du", du), ("ddelta", ddelta), ("dz", dz), ("dA", dA), ("dD", dD),
                        ("dbias", dbias), ("dB", dB), ("dC", dC)):
            a.set(name, t)
        _run(_load(), True, a, b * G * S)

        def groups(x, g, squeeze):
            """(S, l, b, G, n) partials -> (b, g, n, l) (or (b, n, l)), a view of time-major storage."""
            x = x.sum(0) if S > 1 else x[0]                              # (l, b, G, n)
            x = x.view(l, b, g, G // g, n).sum(3) if g != G else x       # (l, b, g, n)
            x = x.movedim(0, -1)                                         # (b, g, n, l)
            return x.squeeze(1) if squeeze else x

        grads = (du, ddelta, dA.sum(0), groups(dB, B.shape[1], inputs[3].dim() == 3),
                 groups(dC, C.shape[1], inputs[4].dim() == 3), dD.sum(0) if dD is not None else None, dz,
                 dbias.sum(0) if dbias is not None else None)
        return tuple(g.to(x.dtype) if g is not None and need else None
                     for g, x, need in zip(grads, inputs, ctx.needs_input_grad)) + (None,)


def selective_scan_cpu(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The C kernel (CPU tensors, fp32/bf16/fp16); same signature and semantics as ``selective_scan_ref``.

    Raises RuntimeError naming what to install when the kernel cannot be built, ValueError for tensors on
    another device or fp64 inputs (which :func:`~localmamba.ops.selective_scan` sends to "torch")."""
    check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    return selective_scan_cpu_checked(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


def selective_scan_cpu_checked(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """:func:`selective_scan_cpu` on inputs whose shapes are checked (the entry point checks them once)."""
    tensors = [t for t in (u, delta, A, B, C, D, z, delta_bias) if t is not None]
    if u.device.type != "cpu":
        raise ValueError(f"backend='cpu' needs CPU tensors, got u on {u.device}; use backend='auto' on other devices")
    if any(t.dtype == torch.float64 for t in tensors):
        raise ValueError("backend='cpu' computes in fp32; fp64 inputs run with backend='torch' "
                         "(selective_scan(..., backend='cpu') sends them there)")
    if torch.jit.is_tracing():
        raise RuntimeError("backend='cpu' cannot be traced by torch.jit (the trace would not see the kernel's "
                           "writes); trace with backend='torch' (or 'auto', which picks it under a trace)")
    err = cpu_kernel_error()
    if err is not None:  # a direct call; the entry point's dispatch raised this already
        raise RuntimeError(f"backend='cpu' needs its C kernel, which is unavailable: {err}. "
                           f"To build it, {CPU_KERNEL_INSTALL_HINT}")
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return SelectiveScanCpuFn.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return _forward(_load(), u, delta, A, B, C, D, z, delta_bias, delta_softplus)  # nothing saved
