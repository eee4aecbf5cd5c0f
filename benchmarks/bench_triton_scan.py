"""The Triton selective scan alone at the models' layer shapes, its launch settings, and CIFAR training steps (GPU).

    python benchmarks/bench_triton_scan.py                  # scan at three layer shapes, two layouts
    python benchmarks/bench_triton_scan.py --grid           # also the launch settings: warps x channels
    python benchmarks/bench_triton_scan.py --train          # also CIFAR training images/s, eager and compiled

Shapes are (batch, K*d_inner, length, d_state, groups K): a LocalVim-T CIFAR layer at batch 256, a
LocalVim-T layer at batch 128 (224 px), a LocalVMamba-T stage-1 layer; each with u, delta and z stored
(B, D, L) and time-major ((B, L, D) storage, what the GPU mixers pass). Times are medians of CUDA events,
ms, forward and forward+backward. To compare with an earlier kernel, check out its
``localmamba/ops/selective_scan_triton.py`` and run again on the same machine.
"""
from __future__ import annotations

import argparse
import timm
import torch
from bench_models import scan_ms, train_img_s

import localmamba  # noqa: F401
import localmamba.ops.selective_scan_triton as T

SHAPES = {"LocalVim-T CIFAR b256": (256, 1536, 65, 16, 4), "LocalVim-T 224 b128": (128, 1536, 197, 16, 4),
          "LocalVMamba-T stage 1 b128": (128, 768, 3136, 1, 4)}


def cifar(model: str, batch: int) -> tuple:
    """A CIFAR variant (Triton scan, no drop path) on the GPU, in training mode, and a random batch."""
    m = timm.create_model(model, backend="triton", drop_path_rate=0.0).cuda().train()
    return m, torch.randn(batch, 3, 32, 32, device="cuda"), torch.randint(0, 10, (batch,), device="cuda")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", action="store_true", help="also time CIFAR training steps, eager and compiled")
    ap.add_argument("--grid", action="store_true", help="also time the launch settings (warps x channels)")
    args = ap.parse_args()
    print(torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
    for name, shp in SHAPES.items():
        for tm in (False, True):
            print(f"{name:28s} {shp} {'time-major' if tm else '(B, D, L)':10s}: "
                  f"fwd {scan_ms(*shp, 'triton', False, tm):6.2f} ms  fwd+bwd {scan_ms(*shp, 'triton', True, tm):6.2f} ms",
                  flush=True)
    block_d, warps = T._block_d, T._NUM_WARPS
    for name, shp in list(SHAPES.items())[:2] if args.grid else []:
        for w in (2, 4, 8):
            for cap in (16, 32, 64):
                T._NUM_WARPS, T._block_d = w, (lambda dg, cap=cap: min(cap, dg & -dg))
                print(f"  {name} time-major, warps {w} block_d {cap}: fwd {scan_ms(*shp, 'triton', False, True):.2f} "
                      f"fwd+bwd {scan_ms(*shp, 'triton', True, True):.2f}", flush=True)
    T._block_d, T._NUM_WARPS = block_d, warps
    if args.train:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        for model in ("local_vim_tiny_cifar", "vim_tiny_cifar"):
            for batch in (256, 128):
                print(f"{model} batch {batch} train bf16: {train_img_s(*cifar(model, batch))[0]:.0f} img/s",
                      flush=True)
            s, first = train_img_s(*cifar(model, 256), seconds=8, compile=True)
            print(f"{model} batch 256 train bf16, torch.compile: {s:.0f} img/s (first 3 steps {first:.0f} s)",
                  flush=True)


if __name__ == "__main__":
    main()
