"""The CPU path's allocator tuning (localmamba.ops._malloc): large blocks come from the heap once tuned, and the
opt-out leaves the allocator alone. Each check runs in a fresh process, since the setting is process-wide."""
import ctypes
import os
import subprocess
import sys

import pytest

CHECK = r"""
import ctypes, os
from localmamba.ops._malloc import tune_malloc

class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def mapped_by(size):  # bytes of mmapped blocks a malloc(size) adds while it is held
    before = libc.mallinfo2().hblkhd
    p = libc.malloc(size)
    added = libc.mallinfo2().hblkhd - before
    libc.free(p)
    return added

size = 8 << 20  # a LocalVim-T-sized activation, over glibc's default mmap threshold
assert mapped_by(size) >= size  # glibc's default: a fresh mapping
applied = tune_malloc()
assert applied == (os.environ.get("LOCALMAMBA_MALLOC_TUNING") != "0"), applied
# untuned, glibc raises its threshold to the largest block freed so far (8 MiB): a larger one is mapped again
assert (mapped_by(2 * size) == 0) == applied  # tuned: the heap serves it
"""


def _glibc_with_mallinfo2() -> bool:
    try:
        libc = ctypes.CDLL(None)
        return hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _glibc_with_mallinfo2(),
                    reason="glibc >= 2.33 (mallinfo2) only")
@pytest.mark.parametrize("setting", ["1", "0"])
def test_large_blocks_come_from_the_heap_once_tuned_unless_opted_out(setting):
    env = dict(os.environ, LOCALMAMBA_MALLOC_TUNING=setting)
    env.pop("GLIBC_TUNABLES", None)
    r = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
