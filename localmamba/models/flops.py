"""Parameters and FLOPs counted the way the paper did, next to the paper's numbers.

LocalVim: the original ``VisionMamba.flops()`` formula (:meth:`LocalVim.flops`). LocalVMamba: fvcore's
counter, as the original ``VSSM.flops()``, with each selective scan charged 9*B*L*D*N + B*D*L (the rule
of mamba-ssm issue 110) and elementwise ops ignored. fvcore is needed for LocalVMamba only
(``pip install fvcore``; it is in the ``dev`` and ``notebooks`` extras).
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn

__all__ = ["PAPER", "count_params", "paper_flops", "traceable"]

#: name -> (parameters in M as printed by the original code, ImageNet FLOPs in G from the paper; None: not reported)
PAPER = {
    "local_vim_tiny": (7.99, 1.5), "local_vim_tiny_middle_cls_token": (7.99, 1.5), "local_vim_small": (27.78, 4.8),
    "local_vim_tiny_search": (5.47, None), "local_vssm_tiny": (25.53, 5.7), "local_vssm_small": (49.75, 11.4),
    "local_vssm_tiny_search": (4.58, None),
}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _selective_scan_flop_jit(inputs, outputs):
    B, D, L = inputs[0].type().sizes()
    N = inputs[2].type().sizes()[1]
    return 9 * B * L * D * N + B * D * L


def _einsum_flop_jit(inputs, outputs):
    """Multiply-accumulates of an einsum, the product of its index sizes (fvcore's own handle expects the
    two inputs that older torch traced; newer torch traces a third, the contraction path)."""
    equation = inputs[0].toIValue().replace(" ", "")
    operands = [v.type().sizes() for v in inputs[1].node().inputs()]
    sizes = {}
    for letters, shape in zip(equation.split("->")[0].split(","), operands):
        sizes.update(zip(letters, shape))
    return math.prod(sizes.values())


def paper_flops(model: nn.Module, img_size: int = 224, full: bool = False) -> int:
    """FLOPs (multiply-accumulates) for one image of ``img_size``, by the paper's rules.

    ``full=True`` for LocalVim also charges every direction's conv1d/x_proj/dt_proj (the paper's
    formula charges them once per layer).
    """
    if hasattr(model, "flops"):
        return model.flops((img_size, img_size), paper=not full)
    try:
        from fvcore.nn import FlopCountAnalysis
    except ImportError as e:
        raise ImportError("counting LocalVMamba FLOPs needs fvcore: pip install fvcore") from e
    was_training = model.training
    try:
        x = torch.randn(1, 3, img_size, img_size, device=next(model.parameters()).device)
        fca = FlopCountAnalysis(model.eval(), (x,))
        fca.set_op_handle("prim::PythonOp.SelectiveScanTorchFn", _selective_scan_flop_jit)
        fca.set_op_handle("aten::einsum", _einsum_flop_jit)
        # bmm runs only inside the torch scan, whose ops are traced too: the rule above covers them (a handle,
        # not None: None only silences an op without a handle)
        fca.set_op_handle("aten::bmm", lambda inputs, outputs: 0)
        for op in ("aten::silu", "aten::neg", "aten::exp", "aten::flip", "aten::index_select", "aten::softplus",
                   "aten::gelu", "aten::sigmoid", "aten::mul", "aten::add", "aten::mean", "aten::sum",
                   "aten::softmax", "aten::pad", "aten::constant_pad_nd"):
            fca.set_op_handle(op, None)
        fca.unsupported_ops_warnings(False)
        fca.uncalled_modules_warnings(False)
        with torch.no_grad(), traceable(model):
            return int(fca.total())
    finally:
        model.train(was_training)


@contextlib.contextmanager
def traceable(model: nn.Module):
    """Run ``model`` on paths that ``torch.jit.trace`` (fvcore's counter) can record, the counter's job
    rather than the layers': every ``backend`` attribute set to "torch" (the scan as the autograd Function
    that the scan rule above is attached to, not a C or Triton kernel the trace cannot see), the scan
    plan's gathers as their plain indexing ops (their autograd Function takes a plan, which a trace cannot
    record), and the block-diagonal GPU projections as per-direction ones (same products, counted alike)."""
    from .. import scan
    from ..layers import ssm

    backends = {m: m.backend for m in model.modules() if hasattr(m, "backend")}
    patches = []
    if hasattr(scan, "_gather") and hasattr(scan, "_OPS"):
        patches.append((scan, "_gather", lambda x, plan, op, interleaved: scan._OPS[op](x, plan, interleaved)))
    if hasattr(ssm, "_block_projection"):
        patches.append((ssm, "_block_projection", lambda rows: False))
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in patches]
    try:
        for m in backends:
            m.backend = "torch"
        for mod, name, fn in patches:
            setattr(mod, name, fn)
        yield model
    finally:
        for mod, name, fn in saved:
            setattr(mod, name, fn)
        for m, b in backends.items():
            m.backend = b
