"""The C kernels of the "cpu" backend: built once, loaded with ctypes, run on torch's threads.

One shared library holds every CPU kernel (``scan_cpu.c``: the selective scan; ``conv1d_cpu.c``: the causal
conv), with the vector helpers of ``cpu_vec.h`` and the threading of ``cpu_team.c``; :mod:`.scan_cpu` and
:mod:`.conv1d_cpu` call into it through :func:`run`.

- Sources next to this file, plain C (no torch headers), compiled on first use with the system C compiler
  (``$CC``, else ``cc``, else ``gcc``) at ``-O3 -march=native`` and loaded with ctypes. The ``.so`` is cached
  under ``$LOCALMAMBA_CACHE`` (default ``~/.cache/localmamba``), keyed by a hash of the sources, the flags, the
  compiler and its ``-march=native`` target macros and the CPU's flags, so a build never runs on a CPU that
  lacks its instructions; it is built into a temporary file and renamed into place, so concurrent processes
  can build at once.
- Threads: a kernel's independent tasks are split over ``torch.get_num_threads()`` threads of torch's own
  OpenMP team, which the library enters through the runtime's ``GOMP_parallel`` (found in the library torch
  loaded: no second runtime, and no threads of ours left to compete with OpenMP workers that spin after every
  torch op). Where torch has no OpenMP, Python threads (ctypes releases the GIL during a call).
- Loading the kernels also raises glibc's mmap and trim thresholds, once per process (:mod:`._malloc`; opt out
  with ``LOCALMAMBA_MALLOC_TUNING=0``): the CPU path's large activations then stay in the heap.
- The backend registers here as "cpu" (:mod:`._dispatch`); ``LOCALMAMBA_CPU_KERNEL=0`` turns it off ("auto"
  then uses "torch"), for A/B comparisons.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ._dispatch import register_backend
from ._malloc import tune_malloc

__all__ = ["cpu_kernel_available", "cpu_kernel_error", "check_runnable", "CPU_KERNEL_INSTALL_HINT", "KernelArgs",
           "run", "load"]

_HERE = Path(__file__).parent
SOURCES = tuple(_HERE / name for name in ("scan_cpu.c", "conv1d_cpu.c", "cpu_team.c"))
HEADERS = (_HERE / "cpu_vec.h",)
#: No -ffast-math: GCC < 13 links crtfastmath.o into a -ffast-math shared library, and loading it sets
#: flush-to-zero for the whole process (torch's denormals included). The kernels' math needs none of it.
FLAGS = ("-O3", "-march=native", "-fPIC", "-shared")
#: Task functions, each ``int fn(const void *args, int64_t task0, int64_t task1)``
ENTRY_POINTS = ("ss_forward", "ss_backward", "cc_forward", "cc_backward")
CPU_KERNEL_INSTALL_HINT = ("install a C compiler (Debian/Ubuntu: apt install gcc; Fedora: dnf install gcc; "
                           "conda: conda install c-compiler; macOS: xcode-select --install), or set $CC")
VL = 8  # channels per vector in the kernels (cpu_vec.h)


# --------------------------------------------------------------------------------------------------
# build and load
# --------------------------------------------------------------------------------------------------
_lib = None         # the loaded library
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
    """Hash of the sources, flags, compiler command, the compiler's target macros for -march=native (its
    version, __AVX2__, __FMA__, ...) and the CPU's flags."""
    macros = subprocess.run([*cc, "-march=native", "-dM", "-E", "-x", "c", os.devnull],
                            capture_output=True, text=True, timeout=60)
    if macros.returncode:
        raise RuntimeError(f"{shlex.join(cc)} failed: {macros.stderr.strip()[-2000:]}")
    h = hashlib.sha256()
    for part in (*(p.read_bytes() for p in SOURCES + HEADERS), " ".join(FLAGS).encode(), shlex.join(cc).encode(),
                 macros.stdout.encode(), _cpu_flags().encode(), platform.machine().encode()):
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()[:20]


def _cache_dir() -> Path:
    return Path(os.environ.get("LOCALMAMBA_CACHE") or Path.home() / ".cache" / "localmamba")


def _build() -> Path:
    """The cached .so for these sources, compiler and CPU, compiled if missing (temp file + atomic rename)."""
    cc = _compiler()
    cache = _cache_dir()
    so = cache / f"localmamba_cpu-{_cache_key(cc)}.so"
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
        r = subprocess.run([*cc, *FLAGS, "-o", tmp, *map(str, SOURCES)], capture_output=True, text=True,
                           timeout=300)
        if r.returncode:
            names = ", ".join(p.name for p in SOURCES)
            raise RuntimeError(f"compiling {names} with {shlex.join(cc)} failed:\n{r.stderr.strip()[-4000:]}")
        os.replace(tmp, so)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return so


def load():
    """The kernels' library, built on the first call; None (and _lib_error set) when it cannot be had."""
    global _lib, _lib_error
    if _lib is None and _lib_error is None:
        tune_malloc()  # the CPU path's first use: large blocks stay in the heap (._malloc)
        try:
            lib = ctypes.CDLL(str(_build()))
            for name in ENTRY_POINTS:
                fn = getattr(lib, name)
                fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]
                fn.restype = ctypes.c_int
            lib.lm_parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                        ctypes.c_void_p]
            lib.lm_parallel.restype = ctypes.c_int
            _lib = lib
        except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as e:
            _lib_error = str(e)
    return _lib


def cpu_kernel_error() -> str | None:
    """Why the "cpu" backend is unavailable, or None when it is (builds the kernels on the first call)."""
    if os.environ.get("LOCALMAMBA_CPU_KERNEL", "1").strip() == "0":
        return "the CPU kernel is turned off by LOCALMAMBA_CPU_KERNEL=0"
    return None if load() is not None else _lib_error


def cpu_kernel_available() -> bool:
    """Whether the "cpu" backend can run here: a C compiler built the kernels (or a cached build loads)."""
    return cpu_kernel_error() is None


def check_runnable(tensors) -> None:
    """Raise unless a kernel can run on ``tensors`` (None entries skipped): ValueError for tensors on another
    device, RuntimeError under a torch.jit trace (it would not see the kernel's writes) or without the kernels
    (naming what to install)."""
    devices = sorted({str(t.device) for t in tensors if t is not None and t.device.type != "cpu"})
    if devices:
        raise ValueError(f"backend='cpu' needs CPU tensors, got tensors on {', '.join(devices)}; use backend='auto' "
                         "on other devices")
    if torch.jit.is_tracing():
        raise RuntimeError("backend='cpu' cannot be traced by torch.jit (the trace would not see the kernel's "
                           "writes); trace with backend='torch' (or 'auto', which picks it under a trace)")
    err = cpu_kernel_error()
    if err is not None:  # a direct call; the entry point's dispatch raised this already
        raise RuntimeError(f"backend='cpu' needs its C kernel, which is unavailable: {err}. "
                           f"To build it, {CPU_KERNEL_INSTALL_HINT}")


register_backend("cpu", lambda: cpu_kernel_error(), CPU_KERNEL_INSTALL_HINT,
                 what="the C kernels (selective scan, causal conv)",
                 traceable=False,  # torch.jit would not see the kernels' writes
                 quiet=lambda reason: "LOCALMAMBA_CPU_KERNEL" in reason)  # turned off on purpose


# --------------------------------------------------------------------------------------------------
# calling it
# --------------------------------------------------------------------------------------------------
class KernelArgs(ctypes.Structure):
    """Base of a kernel's argument struct: pointer fields and, for a field ``x``, its strides ``sx``."""

    def set(self, name: str, t: torch.Tensor | None) -> None:
        """Pointer and strides of fp32 tensor t (or NULL) into field ``name`` and its ``s`` + name."""
        if t is None:
            return
        assert t.dtype == torch.float32 and t.device.type == "cpu", (name, t.dtype, t.device)
        setattr(self, name, t.data_ptr())
        if hasattr(self, "s" + name):
            s = t.stride()
            setattr(self, "s" + name, s[0] if t.dim() == 1 else (ctypes.c_int64 * len(s))(*s))


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


def run(entry: str, args: KernelArgs, tasks: int) -> int:
    """Task function ``entry`` of the library over tasks [0, tasks), split in contiguous ranges over
    torch.get_num_threads() threads; returns the kernel's status (nonzero: it failed).

    On torch's own OpenMP team when it has one: after every torch op its workers spin for a while (libgomp's
    default), so threads of our own would share the cores with them. LocalVim-T's scan forward at batch 2 on
    2 cores, right after a torch op: 5.2 ms on the team, 10 ms on Python threads (9.8 ms on one thread).
    Otherwise on Python threads (the pool's and the calling one; ctypes drops the GIL during the call)."""
    global _pool, _pool_key
    lib = load()
    fn = getattr(lib, entry)
    p = max(1, min(torch.get_num_threads(), tasks))
    ref = ctypes.byref(args)
    if p == 1 or _omp_parallel():
        return lib.lm_parallel(ctypes.cast(fn, ctypes.c_void_p), ref, tasks, p, _omp_parallel() or None)
    bounds = [tasks * i // p for i in range(p + 1)]
    if _pool_key != (os.getpid(), p - 1):
        _pool, _pool_key = ThreadPoolExecutor(p - 1, thread_name_prefix="localmamba-cpu"), (os.getpid(), p - 1)
    futures = [_pool.submit(fn, ref, bounds[i], bounds[i + 1]) for i in range(1, p)]
    return fn(ref, bounds[0], bounds[1]) | any(f.result() for f in futures)
