"""One backend registry for every op: the names, the "auto" rule per device, availability, one-time warnings.

The vocabulary, shared by all ops (a layer passes one ``backend`` string to every op it calls)::

    "auto"    per device, the first available backend of the op's preference list (below)
    "ref"     the plain-PyTorch oracle of every op
    "torch"   pure-PyTorch fast paths (scan: chunked recurrence; conv: shifted adds on contiguous taps)
    "cpu"     this package's C kernels (scan and conv; CPU tensors, built on first use by a C compiler)
    "cuda"    mamba-ssm's selective scan (CUDA tensors)
    "triton"  this package's Triton kernels (scan, conv and merge; CUDA tensors)

An op without an implementation under a valid name runs its own "auto" choice for the tensors' device, so
``backend="cuda"`` means mamba-ssm's scan with the Triton conv and merge, and ``backend="cpu"`` the C scan and
conv with the reference merge; except "torch", which always means plain PyTorch: an op without a torch
path runs its reference (the merge). An unknown name raises ValueError listing the names. The "auto"
preference lists (first available wins; a fallback from the first choice warns once per backend and device)::

    op                CUDA tensors              CPU tensors      other devices (meta, mps, ...)
    selective_scan    triton, cuda, torch       cpu, torch       torch
    causal_conv1d     triton, torch             cpu, torch       torch
    channel_merge     triton, ref               ref              ref

Triton comes first on CUDA because it is the fastest path for the models (one H200, batch 128, fp32
inference: LocalVim-T 2862 img/s against 1567 with mamba-ssm's scan, LocalVMamba-T 2072 against 756;
``benchmarks/gpu_suite.sh`` re-checks it); mamba-ssm stays selectable as "cuda". Under a ``torch.jit`` trace
"auto" skips backends a trace cannot see (the C kernel writes through ctypes; a Triton launch is not a
traceable op). An explicit backend that cannot run here (not installed, no compiler) raises RuntimeError
naming what to install.

Backends register their availability check here (``register_backend``), ops declare their implementations
(:class:`Op`); this module imports nothing of the package, so there is no import circle.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch

__all__ = ["BACKENDS", "Op", "register_backend", "backend_error", "check_backend_name"]

BACKENDS = ("auto", "ref", "torch", "cpu", "cuda", "triton")


@dataclass(frozen=True)
class _Backend:
    error: Callable[[], str | None]  # why it cannot run here, or None
    hint: str                        # what to install
    what: str                        # its name in a sentence
    traceable: bool = True           # whether torch.jit.trace sees its writes
    quiet: Callable[[str], bool] = lambda reason: False  # a reason chosen by the user: fall back silently


_ALWAYS = _Backend(lambda: None, "", "")
_REGISTRY: dict[str, _Backend] = {"ref": _ALWAYS, "torch": _Backend(lambda: None, "", "the pure-PyTorch path")}
_warned: set = set()  # (backend, device type) pairs whose fallback already warned


def register_backend(name: str, error: Callable[[], str | None], hint: str, what: str, traceable: bool = True,
                     quiet: Callable[[str], bool] | None = None) -> None:
    """Declare how to tell whether backend ``name`` runs here (``error()`` is None) and what to install."""
    check_backend_name(name)
    _REGISTRY[name] = _Backend(error, hint, what, traceable, quiet or (lambda reason: False))


def check_backend_name(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")


def backend_error(name: str) -> str | None:
    """Why backend ``name`` cannot run here (not registered: its module did not load), or None."""
    b = _REGISTRY.get(name)
    return "it is not registered" if b is None else b.error()


@dataclass(frozen=True)
class Op:
    """One op's backends: ``impls`` maps backend names to functions of one signature, ``auto`` device types
    ("cuda", "cpu", and None for any other) to the preference list of "auto"."""
    name: str
    impls: dict[str, Callable]
    auto: dict[str | None, tuple[str, ...]] = field(default_factory=dict)

    def resolve(self, backend: str, device: torch.device | str) -> str:
        """The implementation to run for ``backend`` on ``device``: "auto" and names this op lacks map to the
        device's first available choice; an explicit backend that cannot run raises with the install hint."""
        if backend == "torch" and backend not in self.impls:
            return "ref"  # "torch" asks for plain PyTorch: an op without a faster torch path runs its reference
        if backend == "auto" or backend not in self.impls:
            check_backend_name(backend)
            return self._auto(torch.device(device).type)
        if backend not in ("ref", "torch"):
            err = backend_error(backend)
            if err is not None:
                b = _REGISTRY.get(backend)
                raise RuntimeError(f"backend={backend!r} cannot run here: {err}. "
                                   f"To install it: {b.hint if b else 'see the documentation'}")
        return backend

    def _auto(self, device_type: str) -> str:
        prefs = self.auto.get(device_type) or self.auto[None]
        tracing = torch.jit.is_tracing()
        for name in prefs:
            b = _REGISTRY.get(name)
            if b is None or (tracing and not b.traceable):
                continue
            err = b.error()
            if err is None:
                return name
            key = (name, device_type)
            if key not in _warned and not b.quiet(err):
                _warned.add(key)
                warnings.warn(f"{b.what} cannot run here ({err}), so {device_type.upper()} tensors take a slower "
                              f"path. To install it: {b.hint}", RuntimeWarning, stacklevel=4)
        return prefs[-1]  # the last choice always runs ("torch" or "ref")

    def __call__(self, backend: str, device: torch.device | str) -> Callable:
        return self.impls[self.resolve(backend, device)]


def reset_warnings() -> None:
    """Forget which fallbacks warned (for tests)."""
    _warned.clear()
