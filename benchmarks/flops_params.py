"""Parameters and FLOPs of the registered models, counted the way the paper did.

    python benchmarks/flops_params.py [--json out.json]

LocalVim: the original ``VisionMamba.flops()`` formula (``LocalVim.flops(paper=True)``), which charges
each layer's conv1d/x_proj/dt_proj once although each direction has its own; we also print the full
count (``paper=False``). LocalVMamba: fvcore's counter, as the original ``VSSM.flops()``, with the
selective scan charged 9*B*L*D*N + B*D*L (mamba-ssm issue 110's rule) and elementwise ops ignored.
"""
from __future__ import annotations

import argparse
import json

import timm
import torch

import localmamba  # noqa: F401

PAPER = {  # name: (params M as printed by the original code, FLOPs G in the paper)
    "local_vim_tiny": (7.99, 1.5), "local_vim_tiny_middle_cls_token": (7.99, 1.5), "local_vim_small": (27.78, 4.8),
    "local_vim_tiny_search": (5.47, None), "local_vssm_tiny": (25.53, 5.7), "local_vssm_small": (49.75, 11.4),
    "local_vssm_tiny_search": (4.58, None),
}


def selective_scan_flop_jit(inputs, outputs):
    """fvcore handle: inputs are (u, delta, A, B, C, D, z, delta_bias, ...) of the torch backend."""
    B, D, L = inputs[0].type().sizes()
    N = inputs[2].type().sizes()[1]
    return 9 * B * L * D * N + B * D * L


def fvcore_flops(model: torch.nn.Module, size: int = 224) -> int:
    from fvcore.nn import FlopCountAnalysis
    model = model.eval()
    for m in model.modules():  # count through the torch backend's autograd Function
        if hasattr(m, "backend"):
            m.backend = "torch"
    x = torch.randn(1, 3, size, size)
    fca = FlopCountAnalysis(model, (x,))
    fca.set_op_handle("prim::PythonOp.SelectiveScanTorchFn", selective_scan_flop_jit)
    for op in ("aten::silu", "aten::neg", "aten::exp", "aten::flip", "aten::index_select", "aten::softplus",
               "aten::gelu", "aten::sigmoid", "aten::mul", "aten::add", "aten::mean", "aten::sum", "aten::softmax"):
        fca.set_op_handle(op, None)
    fca.unsupported_ops_warnings(False)
    fca.uncalled_modules_warnings(False)
    with torch.no_grad():
        return int(fca.total())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the table here too")
    ap.add_argument("--models", nargs="*", default=list(PAPER))
    args = ap.parse_args()
    rows = []
    print(f"{'model':34s} {'params':>8s} {'orig':>7s} {'diff':>7s} {'GFLOPs':>7s} {'paper':>6s} {'diff':>7s} {'full':>6s}")
    for name in args.models:
        model = timm.create_model(name)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        if hasattr(model, "flops"):
            flops, full = model.flops() / 1e9, model.flops(paper=False) / 1e9
        else:
            flops = full = fvcore_flops(model) / 1e9
        p_ref, f_ref = PAPER.get(name, (None, None))
        pd = f"{100 * (params - p_ref) / p_ref:+.2f}%" if p_ref else "-"
        fd = f"{100 * (flops - f_ref) / f_ref:+.1f}%" if f_ref else "-"
        print(f"{name:34s} {params:7.2f}M {p_ref or '-':>7} {pd:>7s} {flops:7.2f} {f_ref or '-':>6} {fd:>7s} {full:6.2f}")
        rows.append(dict(model=name, params_m=params, params_original_m=p_ref, gflops_paper_method=flops,
                         gflops_paper=f_ref, gflops_full=full))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
