"""Where the K scanned sequences of a mixer live in memory, named once instead of permutation tuples.

A mixer's scan input is always seen as (B, K, D, L), the shape of the selective scan's ``(b, K*D, l)``, but
the storage under that view is chosen per device and backend (:meth:`Layout.for_device`), once per forward:

- ``STACKED``: (B, K, D, L) contiguous, what mamba-ssm's kernel ("cuda") reads.
- ``TIME_MAJOR``: (L, B, K, D), the CPU layout: a time step is one contiguous row of K*D channels, which the
  torch scan and the C kernel read without a transpose.
- ``INTERLEAVED``: (B, L, K, D), the GPU layout of the Triton kernels and the torch scan: the K directions
  interleaved per position, so each step of a kernel reads and writes its K*D channels at once, and the
  channel merge reads the scan's rows in place (:meth:`~localmamba.layers.merge.DirectionMerge.merge_rows`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..ops import reads_time_major
from ..scan import ScanPlan, multi_reverse, multi_scan

__all__ = ["Layout", "STACKED", "TIME_MAJOR", "INTERLEAVED"]


@dataclass(frozen=True)
class Layout:
    name: str
    scan_layout: str                 # the layout argument of multi_scan / multi_reverse: "bklc" or "blkc"
    storage: tuple[int, ...]         # multi_scan's output -> the storage order (applied before the copy)
    to_bkdl: tuple[int, ...]         # storage -> the (B, K, D, L) view the scan reads
    to_rows: tuple[int, ...]         # (B, K, D, L) -> multi_reverse's input (B, K, L, D) or (B, L, K, D)

    @property
    def interleaved(self) -> bool:
        return self.scan_layout == "blkc"

    @staticmethod
    def for_device(device: torch.device | str, backend: str) -> "Layout":
        """The layout for tensors on ``device`` run with ``backend``: TIME_MAJOR on CPU, INTERLEAVED on other
        devices with a scan that reads time-major inputs, else STACKED (mamba-ssm)."""
        device = torch.device(device)
        if device.type == "cpu":
            return TIME_MAJOR
        return INTERLEAVED if reads_time_major(backend, device) else STACKED

    def scan(self, x: torch.Tensor, plan: ScanPlan, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Tokens (B, T, C) scanned in every direction of ``plan`` into this layout's storage, in ``dtype``:
        -> the (B, K, C, L) view of it that the selective scan reads."""
        xs = multi_scan(x, plan, layout=self.scan_layout)  # (B, K, L, C) or (B, L, K, C)
        if self.interleaved:  # already the storage
            return (xs if dtype is None else xs.to(dtype)).permute(*self.to_bkdl)
        xs = xs.permute(*self.storage).to(dtype or xs.dtype, memory_format=torch.contiguous_format, copy=True)
        return xs.permute(*self.to_bkdl)  # (B, K, C, L)

    def rows(self, y: torch.Tensor) -> torch.Tensor:
        """The scan's output (B, K, D, L), in this layout, as the scanned sequences multi_reverse reads."""
        return y.permute(*self.to_rows)  # (B, K, L, D) or (B, L, K, D), a view

    def reverse(self, y: torch.Tensor, plan: ScanPlan) -> torch.Tensor:
        """The scan's output (B, K, D, L) back in token order, every direction: -> (B, K, T, D)."""
        return multi_reverse(self.rows(y), plan, layout=self.scan_layout)

    def __repr__(self) -> str:
        return f"Layout.{self.name.upper()}"


#                    name           scan    storage (from multi_scan)  to (B,K,D,L)  to multi_reverse
STACKED = Layout("stacked", "bklc", (0, 1, 3, 2), (0, 1, 2, 3), (0, 1, 3, 2))  # (B, K, D, L)
TIME_MAJOR = Layout("time_major", "bklc", (2, 0, 1, 3), (1, 2, 3, 0), (0, 1, 3, 2))  # (L, B, K, D)
INTERLEAVED = Layout("interleaved", "blkc", (0, 1, 2, 3), (0, 2, 3, 1), (0, 3, 1, 2))  # (B, L, K, D)
