"""Operators: the selective scan, the causal depthwise conv and the channel-attention merge, each with one
signature, a plain-PyTorch ``*_ref`` oracle and several backends chosen by one string (see :mod:`._dispatch`
for the names and the "auto" rules, shared by all ops).

Layout: one entry module per op, one file per backend that is more than a few lines; no module is named
like a function, so ``localmamba.ops.selective_scan`` is the function and every module imports plainly::

    _dispatch.py      the backend registry: names, "auto" per device, availability, one-time warnings
    _checks.py        input checks shared by each op's backends
    _triton.py        triton imported once for every Triton kernel
    _cpu_kernels.py   the C kernels of "cpu" built, loaded and run on torch's threads (cpu_vec.h, cpu_team.c)
    scan.py           selective_scan (entry point), available_backends, reads_time_major
    scan_ref.py       "ref": the oracle loop              scan_torch.py   "torch": chunked recurrence
    scan_cpu.py/.c    "cpu": the C kernel                 scan_cuda.py    "cuda": mamba-ssm's kernel
    scan_triton.py    "triton": the Triton kernels
    conv1d.py         causal_conv1d (entry, "ref", "torch")     conv1d_triton.py   its "triton" kernels
    conv1d_cpu.py/.c  its "cpu" C kernel
    merge.py          channel_merge (entry, "ref")              merge_triton.py    its "triton" kernels
"""
from ._dispatch import BACKENDS
from .conv1d import causal_conv1d, causal_conv1d_cpu, causal_conv1d_ref, causal_conv1d_torch, causal_conv1d_triton
from .merge import channel_merge, channel_merge_ref, channel_merge_triton
from .scan import available_backends, reads_time_major, selective_scan
from .scan_cpu import cpu_kernel_available, selective_scan_cpu
from .scan_ref import selective_scan_ref
from .scan_torch import DEFAULT_CHUNK_SIZE, SelectiveScanTorchFn, selective_scan_torch

__all__ = ["BACKENDS", "available_backends", "reads_time_major", "selective_scan", "selective_scan_ref",
           "selective_scan_torch", "selective_scan_cpu", "cpu_kernel_available", "SelectiveScanTorchFn",
           "DEFAULT_CHUNK_SIZE", "causal_conv1d", "causal_conv1d_ref", "causal_conv1d_torch", "causal_conv1d_cpu",
           "causal_conv1d_triton",
           "channel_merge", "channel_merge_ref", "channel_merge_triton"]
