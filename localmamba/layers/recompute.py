"""Activations remade in the backward instead of kept from the forward.

A mixer's largest saved tensors are K-fold copies of its activations that are cheap to make again from tensors
kept anyway: the scanned sequences (a gather of the unscanned activations; LocalVim's conv keeps them, LocalVMamba's
scan and x projection do) and delta (a rank-R GEMM of the x projection's output, whose B and C parts the scan keeps;
the scan keeps delta). Inside a :class:`RecomputeScope`, autograd's saved-tensor hooks store, for a tensor
registered with :meth:`RecomputeScope.add`, its recipe instead of the tensor, and the backward runs the recipe when an op
unpacks it: the same ops on the same inputs under the same autocast state, so the values, and the gradients, are
those of the kept tensor. The mixers open a scope where :func:`wanted` says so (and pass it to :class:`~localmamba.layers.DirectionalSSM`): on CUDA tensors by default (GPU
memory is what training runs out of; on a CPU the recompute is time the CPU goals cannot spare).

Like ``torch.utils.checkpoint``, a recipe reads the parameters and kept tensors as they are at the backward: a loop
that changes weights in place between a forward and its backward gets gradients of the changed weights.

The scope stands aside where other saved-tensor hooks are active (``torch.utils.checkpoint``, whose block
recompute keeps nothing anyway, or a user's ``save_on_cpu``): only the innermost hooks act, so ours would
silently replace theirs.
"""
from __future__ import annotations

from typing import Callable

import torch

__all__ = ["RecomputeScope", "wanted"]


def _hooks_free() -> bool:
    """Whether saved-tensor hooks are allowed here and no other hooks are active (ours would replace them)."""
    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    enabled = getattr(torch._C._autograd, "_saved_tensors_hooks_is_enabled", lambda: True)
    return top is not None and top(False) is None and enabled()


def wanted(x: torch.Tensor, setting: bool | None) -> bool:
    """Whether a mixer given ``x`` remakes its activations: ``setting`` (None: for CUDA tensors), and only where
    autograd records, outside torch.compile (which plans its own recompute) and outside other saved-tensor hooks."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    return (x.is_cuda if setting is None else setting) and torch.is_grad_enabled() and _hooks_free()


class _Recipe:
    """What is stored instead of a saved tensor: how to make its storage again, and the view of it that was saved."""

    __slots__ = ("fn", "nbytes", "size", "stride", "offset", "autocast")

    def __init__(self, fn, nbytes, t: torch.Tensor, autocast):
        self.fn, self.nbytes, self.autocast = fn, nbytes, autocast
        self.size, self.stride, self.offset = t.size(), t.stride(), t.storage_offset()

    def unpack(self) -> torch.Tensor:
        device_type, dtype, enabled = self.autocast
        with torch.no_grad(), torch.autocast(device_type, dtype=dtype, enabled=enabled):
            base = self.fn()
        if base.untyped_storage().nbytes() != self.nbytes:
            raise RuntimeError("a remade activation does not have the storage of the one it replaces: its recipe "
                               "does not repeat the forward")
        return base.as_strided(self.size, self.stride, self.offset)


class RecomputeScope:
    """``with RecomputeScope() as scope:`` the tensors given to :meth:`add` inside are remade in the backward rather
    than kept (see the module doc). The mixers open one only where :func:`wanted` says so, and pass it down."""

    def __init__(self):
        self._recipes: list[tuple[torch.Tensor, Callable[[], torch.Tensor], tuple]] = []
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)

    def __enter__(self) -> "RecomputeScope":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        self._recipes.clear()  # the registered tensors themselves are kept only while the scope is open

    def add(self, t: torch.Tensor, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Register ``t``: an op that saves ``t``, or a view of its storage, inside the scope stores ``fn`` instead,
        and its backward gets ``fn()``'s storage under the saved view. ``fn`` must make a tensor with the storage of
        ``t`` (same values, dtype and layout) from tensors that are kept anyway. Returns ``t``."""
        device = t.device.type
        autocast = (device, torch.get_autocast_dtype(device), torch.is_autocast_enabled(device))
        self._recipes.append((t, fn, autocast))
        return t

    def _pack(self, t: torch.Tensor):
        ptr = t.untyped_storage().data_ptr()
        if ptr:
            for kept, fn, autocast in self._recipes:  # a storage this scope holds open: no other tensor can reuse it
                if kept.untyped_storage().data_ptr() == ptr and kept.dtype == t.dtype:
                    return _Recipe(fn, kept.untyped_storage().nbytes(), t, autocast)
        return t


def _unpack(packed):
    return packed.unpack() if isinstance(packed, _Recipe) else packed
