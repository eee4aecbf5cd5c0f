"""Operators: the selective scan, the causal depthwise conv and the channel-attention merge, each with one
signature and several backends.

``localmamba.ops.selective_scan`` is the function; the module of the same name (its helpers, constants and
the ``SelectiveScanTorchFn`` autograd Function) is ``importlib.import_module("localmamba.ops.selective_scan")``.
"""
from .causal_conv1d import causal_conv1d, causal_conv1d_ref, causal_conv1d_torch, causal_conv1d_triton
from .channel_merge import channel_merge, channel_merge_ref, channel_merge_triton
from .selective_scan import (
    DEFAULT_CHUNK_SIZE, SelectiveScanTorchFn, available_backends, cpu_kernel_available, reads_time_major,
    selective_scan, selective_scan_ref, selective_scan_torch,
)
from .selective_scan_cpu import selective_scan_cpu

__all__ = ["available_backends", "reads_time_major", "selective_scan", "selective_scan_ref", "selective_scan_torch",
           "selective_scan_cpu", "cpu_kernel_available", "SelectiveScanTorchFn", "DEFAULT_CHUNK_SIZE",
           "causal_conv1d", "causal_conv1d_ref", "causal_conv1d_torch", "causal_conv1d_triton", "channel_merge",
           "channel_merge_ref", "channel_merge_triton"]
