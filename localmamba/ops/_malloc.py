"""glibc's allocator tuned for the CPU path: large blocks kept in the heap instead of mapped afresh.

A CPU forward allocates and frees activations of a few MB at every op (LocalVim-T at batch 2: 2.4 MB per mixer
tensor). glibc serves blocks over its mmap threshold with a fresh mapping and returns freed heap tops to the
system, so each such tensor costs page faults and the kernel's zeroing of its pages, again at every step.
Raising the mmap threshold to 32 MiB and the trim threshold to 256 MiB keeps them in the heap for reuse.
Measured on a 2-core CPU (benchmarks/RESULTS.md, "CPU speed"): LocalVim-T's forward at batch 2, 0.19-0.28 s
-> 0.14-0.15 s; a ``local_vim_tiny_cifar`` training step at batch 32, 1.48-1.62 s -> 1.34-1.45 s.

This is a process-wide setting (it affects every allocation of the process, not only this package's), applied
once, when the CPU kernels are first loaded; the process keeps up to 256 MiB of freed memory for reuse.
``LOCALMAMBA_MALLOC_TUNING=0`` leaves the allocator alone. Not glibc (macOS, musl, Windows): nothing happens.
"""
from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["tune_malloc"]

_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 256 << 20
_state: list[bool] = []  # [whether it was applied], once decided


def tune_malloc() -> bool:
    """Apply the thresholds once per process (see the module docstring); True if they are in effect."""
    if not _state:
        _state.append(_apply())
    return _state[0]


def _apply() -> bool:
    if os.environ.get("LOCALMAMBA_MALLOC_TUNING", "1").strip() == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only: musl's mallopt is a no-op
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
