"""Where the K scanned sequences of a mixer live in memory, named once instead of permutation tuples.

A mixer's scan input is always seen as (B, K, D, L), the shape of the selective scan's ``(b, K*D, l)``, but
the storage under that view is chosen per device and backend (:meth:`Layout.for_device`), once per forward:

- ``STACKED``: (B, K, D, L) contiguous, what mamba-ssm's kernel ("cuda") reads.
- ``TIME_MAJOR``: (L, B, K, D), the CPU layout: a time step is one contiguous row of K*D channels, which the
  torch scan and the C kernel read without a transpose. Its gathers move whole rows of D channels (one
  ``index_select`` along the first dim of the storage, straight into the target layout, its gradient one
  ``index_add``): on a CPU, ``index_select`` along a middle dim, as the plan's own gathers do, runs at about a
  tenth of that speed (a LocalVim-T CIFAR mixer at batch 32: 6.1 against 0.47 ms), and their output would
  still need a copy into this storage.
- ``INTERLEAVED``: (B, L, K, D), the GPU layout of the Triton kernels and the torch scan: the K directions
  interleaved per position, so each step of a kernel reads and writes its K*D channels at once, and the
  channel merge reads the scan's rows in place (:meth:`~localmamba.layers.merge.DirectionMerge.merge_rows`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

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
    row_gathers: bool = False        # time-major storage: scan and reverse as gathers of whole rows (see above)

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
        if self.row_gathers:
            xs = _scan_rows(x, plan)  # (L, B, K, C)
            return (xs if dtype is None else xs.to(dtype)).permute(*self.to_bkdl)
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
        if self.row_gathers:
            return _reverse_rows(y, plan)
        return multi_reverse(self.rows(y), plan, layout=self.scan_layout)

    def __repr__(self) -> str:
        return f"Layout.{self.name.upper()}"


#                    name           scan    storage (from multi_scan)  to (B,K,D,L)  to multi_reverse
STACKED = Layout("stacked", "bklc", (0, 1, 3, 2), (0, 1, 2, 3), (0, 1, 3, 2))  # (B, K, D, L)
TIME_MAJOR = Layout("time_major", "bklc", (2, 0, 1, 3), (1, 2, 3, 0), (0, 1, 3, 2), row_gathers=True)  # (L, B, K, D)
INTERLEAVED = Layout("interleaved", "blkc", (0, 1, 2, 3), (0, 2, 3, 1), (0, 3, 1, 2))  # (B, L, K, D)


def _scan_rows(x: torch.Tensor, plan: ScanPlan) -> torch.Tensor:
    """:func:`multi_scan` of tokens x (B, T, C) straight into time-major storage: -> (L, B, K, C) contiguous."""
    B, T, C = x.shape
    if x.shape[1] != plan.T:
        raise ValueError(f"Layout.scan: x must be (B, {plan.T}, C) for this plan, got {tuple(x.shape)}")
    if plan.padded:  # row T of every image is the zero that padding reads
        x = F.pad(x, (0, 0, 0, 1))  # (B, T+1, C)
    Tp = x.shape[1]
    if x.is_contiguous():  # (B, T+1, C) storage
        rows, s_b, s_t = x.reshape(B * Tp, C), Tp, 1
    else:  # (T+1, B, C) storage (or a copy into it)
        rows, s_b, s_t = x.transpose(0, 1).reshape(Tp * B, C), 1, B
    g = plan.gather.to(x.device).t()  # (L, K): token read at each position, by direction
    b = torch.arange(B, device=x.device)
    index = (g[:, None, :] * s_t + b[None, :, None] * s_b).flatten()  # (L*B*K,) rows of (l, b, k)
    return rows.index_select(0, index).view(plan.L, B, plan.K, C)  # (L, B, K, C)


def _reverse_rows(y: torch.Tensor, plan: ScanPlan) -> torch.Tensor:
    """:func:`multi_reverse` of the scan's output y (B, K, D, L) held in time-major storage: -> (B, K, T, D)."""
    B, K, D, L = y.shape
    if (K, L) != (plan.K, plan.L):
        raise ValueError(f"Layout.reverse: y must be (B, {plan.K}, D, {plan.L}) for this plan, got {tuple(y.shape)}")
    rows = y.permute(3, 0, 1, 2).reshape(L * B * K, D)  # a view where y is time-major, else one copy
    r = plan.reverse.to(y.device)  # (K, T): position of each token, by direction
    b = torch.arange(B, device=y.device)
    k = torch.arange(K, device=y.device)
    index = ((r[None] * B + b[:, None, None]) * K + k[None, :, None]).flatten()  # (B*K*T,) rows of (b, k, t)
    return rows.index_select(0, index).view(B, K, plan.T, D)  # (B, K, T, D)
