"""What the activation recompute costs and saves: training steps with it and without, alternating in one process.

    python benchmarks/recompute_ab.py                       # LocalVim-T from CUDA graphs, LocalVMamba-T eager

Each round runs a model's training step (bf16 autocast, AdamW, batch 128 at 224, as ``bench_models.py``) with the
mixers remaking their scanned sequences and delta in the backward (the CUDA default,
:mod:`localmamba.layers.recompute`), then with ``model.set_activation_recompute(False)``. LocalVim-T runs from CUDA
graphs: eagerly its step is bound by the host's op dispatch, whose noise hides a difference of a few percent.
Figures: benchmarks/RESULTS.md, "Model throughput on the GPU".
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_models as bm  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="*", default=["local_vim_tiny:graph", "local_vssm_tiny:kept"],
                    help="model:formulation pairs ('kept' times the eager training step alone)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        ap.error("needs a CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    keep = [False]
    plain = bm.set_formulation

    def set_formulation(model, formulation):
        run = plain(model, formulation)
        model.set_activation_recompute(False if keep[0] else None)
        return run
    bm.set_formulation = set_formulation
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}")
    for pair in args.runs:
        name, formulation = pair.split(":")
        for rnd in range(args.rounds):
            for keep[0] in (False, True):
                r = bm.bench_cuda(name, formulation, 128, 224, args.steps, "auto")[-1]
                print(f"{name} {formulation} {'kept' if keep[0] else 'recompute'} round {rnd}: "
                      f"train {r['img_per_s']:.1f} img/s {r['peak_gib']:.2f} GiB", flush=True)


if __name__ == "__main__":
    main()
