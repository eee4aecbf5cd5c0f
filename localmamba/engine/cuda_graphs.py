"""CUDA graphs for inference and training: a whole forward (and backward) replayed with one launch.

A LocalVim-T layer is a few dozen small kernels; at batch 128 on an H200 the host took 118 ms of CPU
time to issue a training step whose GPU work was 121 ms, so the model ran as fast as the host could
dispatch ops, and slower on a slower host CPU. Captured once into a CUDA graph, the same kernels replay
without Python, autograd or launch overhead, and the GPU sets the speed.

What CUDA graphs require, and these helpers check or arrange:

- fixed input shapes, dtypes and device: :class:`InferenceGraph` captures one graph per input shape;
  :func:`graph_for_training` captures one shape and refuses others with a ``ValueError``;
- the same autocast setting at every call as at capture (refused otherwise: a graph captured in fp32
  would silently keep running in fp32 under autocast);
- parameters updated in place (every torch optimizer does) and not replaced; no host syncs inside the
  model: the scan plans, index tensors and checks are built in the warm-up calls before capture.

Random ops inside (drop path) draw new numbers at every replay: torch's CUDA generator is graph-aware.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

__all__ = ["InferenceGraph", "graph_for_training"]


def _cuda_device(model: nn.Module, what: str) -> torch.device:
    p = next(model.parameters(), None)
    if p is None or p.device.type != "cuda":
        raise ValueError(f"{what} needs a model on a CUDA device (CUDA graphs), got one on "
                         f"{None if p is None else p.device}; run the model eagerly on other devices")
    return p.device


def _autocast(dtype: Optional[torch.dtype]):
    """Autocast without its weight-cast cache, which CUDA graph capture cannot use."""
    if dtype is None:
        return torch.autocast("cuda", enabled=False)
    return torch.autocast("cuda", dtype=dtype, cache_enabled=False)


def _active_autocast() -> Optional[torch.dtype]:
    """The autocast dtype of the calling context on CUDA, None when autocast is off."""
    return torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else None


def _check_autocast(captured: Optional[torch.dtype], what: str) -> None:
    active = _active_autocast()
    if active != captured:
        raise ValueError(f"{what} was captured with autocast {captured or 'off'} but is called with autocast "
                         f"{active or 'off'}: a graph replays the dtypes it captured; capture another one for "
                         f"this setting (autocast_dtype={active})")


class InferenceGraph:
    """``model(x)`` under ``torch.no_grad()`` replayed from a CUDA graph, captured per input shape.

    The model must be in eval mode (a graph would freeze train-mode behaviour such as drop path); its
    parameters may change in place afterwards (a later replay reads the new values). ``autocast_dtype``
    (e.g. ``torch.bfloat16``) captures under autocast; an autocast around the call does not matter. Each
    call returns a copy of the graph's output, so results survive the next call.
    """

    def __init__(self, model: nn.Module, *, autocast_dtype: Optional[torch.dtype] = None, warmup: int = 2):
        self.model, self.autocast_dtype, self.warmup = model, autocast_dtype, warmup
        self.device = _cuda_device(model, "InferenceGraph")
        self._graphs: dict = {}  # (shape, dtype) -> (graph, static input, static output)
        self._pool = torch.cuda.graph_pool_handle()  # graphs replay one at a time and we copy outputs out

    def _capture(self, x: torch.Tensor):
        if self.model.training:
            raise ValueError("InferenceGraph captures inference: call model.eval() first")
        static_x = x.detach().clone()
        run = lambda: self.model(static_x)  # noqa: E731
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.no_grad(), _autocast(self.autocast_dtype):
            with torch.cuda.stream(stream):  # warm-up off the default stream, as capture requires
                for _ in range(self.warmup):
                    run()
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                static_out = run()
        return graph, static_x, static_out

    def __call__(self, x: torch.Tensor):
        if x.device != self.device:
            raise ValueError(f"InferenceGraph runs on {self.device}, got an input on {x.device}")
        key = (tuple(x.shape), x.dtype)
        if key not in self._graphs:
            self._graphs[key] = self._capture(x)
        graph, static_x, static_out = self._graphs[key]
        static_x.copy_(x)
        graph.replay()
        return torch.utils._pytree.tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, static_out)


def _warm_up(model: nn.Module, params: list, sample: torch.Tensor, autocast_dtype: Optional[torch.dtype],
             steps: int) -> None:
    """Training forwards and backwards on ``sample`` before capture, so that lazy work (Triton compiles, scan
    plans, index checks, cuBLAS handles) is not captured; ``.grad`` untouched (``autograd.grad``).

    Done here rather than by ``make_graphed_callables``: its warm-up leaves a training step's memory cached
    in the allocator's ordinary pool while the capture fills a private one, twice a step's memory (out of
    memory for LocalVMamba-T at batch 128 on an 80 GB H100); and train-mode forwards move BatchNorm running
    statistics (the CIFAR stems), so every buffer is put back as it was.
    """
    saved = [b.detach().clone() for b in model.buffers()]
    device = sample.device
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream), _autocast(autocast_dtype):
        for _ in range(steps):
            outs = [o for o in torch.utils._pytree.tree_leaves(model(sample)) if o.requires_grad]
            torch.autograd.grad(outs, params, grad_outputs=[torch.ones_like(o) for o in outs], allow_unused=True)
            del outs
    torch.cuda.current_stream(device).wait_stream(stream)
    with torch.no_grad():
        for b, v in zip(model.buffers(), saved):
            b.copy_(v)
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()  # the warm-up's cached blocks back to the device before the private pool fills


def graph_for_training(model: nn.Module, sample: torch.Tensor, *, autocast_dtype: Optional[torch.dtype] = None,
                       warmup: int = 3) -> nn.Module:
    """``model`` with its training forward and backward captured as CUDA graphs, for inputs like ``sample``.

    Returns the same module (``torch.cuda.make_graphed_callables``): in train mode its forward replays the
    forward graph and autograd replays the backward graph; in eval mode it runs eagerly. Loss, optimizer,
    gradient clipping and schedulers stay outside, eager and unchanged. Call it in train mode, before
    wrapping in DDP or an EMA copy, and call the model under the same autocast as ``autocast_dtype``
    (``None``: autocast off). The warm-up runs forward and backward on ``sample`` without touching
    ``.grad`` or the buffers (BatchNorm statistics); drop path consumes random numbers. Gradient
    accumulation works; ``zero_grad(set_to_none=True)`` (the default) avoids a copy of every gradient
    per step.
    """
    _cuda_device(model, "graph_for_training")
    if getattr(model, "_training_graph_shape", None) is not None:
        raise ValueError(f"this model already has a training graph (inputs {model._training_graph_shape})")
    if not model.training:
        raise ValueError("graph_for_training captures the training forward: call model.train() first")
    if sample.device.type != "cuda":
        raise ValueError(f"the sample input must be on the model's CUDA device, got {sample.device}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("graph_for_training: no parameter of the model requires a gradient")
    shape, dtype = tuple(sample.shape), sample.dtype
    sample = sample.detach().clone()
    _warm_up(model, params, sample, autocast_dtype, warmup)
    with _autocast(autocast_dtype):  # captures without running: the buffers stay as the warm-up restored them
        torch.cuda.make_graphed_callables(model, (sample,), num_warmup_iters=0)
    graphed_forward = model.forward  # runs the graph in train mode, the original forward in eval mode

    def forward(x: torch.Tensor):
        if model.training:
            if tuple(x.shape) != shape or x.dtype != dtype:
                raise ValueError(f"this model's training graph was captured for inputs {shape} {dtype}, got "
                                 f"{tuple(x.shape)} {x.dtype}: CUDA graphs have fixed shapes (use equal batches, "
                                 "e.g. drop_last=True, or run without graphs)")
            _check_autocast(autocast_dtype, "the training graph")
            # The backward hands out its static gradient buffers, which autograd keeps as .grad when that was
            # None; the next replay overwrites them. Gradients kept for accumulation (or zeroed in place) are
            # copied out first, so that autograd adds the new gradient to the old one, not to itself.
            for p in params:
                if p.grad is not None:
                    p.grad = p.grad.clone()
        return graphed_forward(x)

    model.forward = forward
    model._training_graph_shape = shape
    return model

