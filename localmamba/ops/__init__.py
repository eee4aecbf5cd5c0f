"""Operators: the selective scan with one signature and several backends.

``localmamba.ops.selective_scan`` is the function; the module of the same name (its helpers, constants and
the ``SelectiveScanTorchFn`` autograd Function) is ``importlib.import_module("localmamba.ops.selective_scan")``.
"""
from .selective_scan import (
    DEFAULT_CHUNK_SIZE, SelectiveScanTorchFn, available_backends, reads_time_major, selective_scan, selective_scan_ref,
    selective_scan_torch,
)

__all__ = ["available_backends", "reads_time_major", "selective_scan", "selective_scan_ref", "selective_scan_torch",
           "SelectiveScanTorchFn", "DEFAULT_CHUNK_SIZE"]
