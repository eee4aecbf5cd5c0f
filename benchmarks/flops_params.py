"""Parameters and FLOPs of the registered models, counted the way the paper did.

    python benchmarks/flops_params.py [--json out.json]

LocalVim: the original ``VisionMamba.flops()`` formula (``LocalVim.flops(paper=True)``), which charges
each layer's conv1d/x_proj/dt_proj once although each direction has its own; we also print the full
count (``paper=False``). LocalVMamba: fvcore's counter, as the original ``VSSM.flops()``, with the
selective scan charged 9*B*L*D*N + B*D*L (mamba-ssm issue 110's rule) and elementwise ops ignored.
Figures: benchmarks/RESULTS.md, section "Parameters and FLOPs".
"""
from __future__ import annotations

import argparse
import json

import timm
import localmamba  # noqa: F401
from localmamba.models.flops import PAPER, count_params, paper_flops

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the table here too")
    ap.add_argument("--models", nargs="*", default=list(PAPER))
    args = ap.parse_args()
    rows = []
    print(f"{'model':34s} {'params':>8s} {'orig':>7s} {'diff':>7s} {'GFLOPs':>7s} {'paper':>6s} {'diff':>7s} {'full':>6s}")
    for name in args.models:
        model = timm.create_model(name)
        params = count_params(model) / 1e6
        flops = paper_flops(model) / 1e9
        # ``full`` differs for LocalVim's formula alone: the fvcore trace of LocalVMamba is not run twice
        full = paper_flops(model, full=True) / 1e9 if hasattr(model, "flops") else flops
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
