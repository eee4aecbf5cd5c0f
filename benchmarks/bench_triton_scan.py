"""The Triton selective scan alone at the models' layer shapes, its launch settings, and CIFAR training steps (GPU).

    python benchmarks/bench_triton_scan.py                  # scan at three layer shapes, warps x channels grid
    python benchmarks/bench_triton_scan.py --train          # also CIFAR training images/s, eager and compiled

Shapes are (batch, K*d_inner, length, d_state, groups K): a LocalVim-T CIFAR layer at batch 256, a
LocalVim-T layer at batch 128 (224 px), a LocalVMamba-T stage-1 layer. Times are medians of CUDA events,
ms, forward and forward+backward. To compare with an earlier kernel, check out its
``localmamba/ops/selective_scan_triton.py`` and run again on the same machine.
"""
from __future__ import annotations

import argparse
import time

import timm
import torch
from bench_models import cuda_time, make_train_step

import localmamba  # noqa: F401
import localmamba.ops.selective_scan_triton as T

SHAPES = {"LocalVim-T CIFAR b256": (256, 1536, 65, 16, 4), "LocalVim-T 224 b128": (128, 1536, 197, 16, 4),
          "LocalVMamba-T stage 1 b128": (128, 768, 3136, 1, 4)}


def scan_ms(b: int, d: int, l: int, n: int, g: int, bwd: bool) -> float:
    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, device="cuda") * scale).requires_grad_(bwd)
    u, dl, z = rnd(b, d, l), rnd(b, d, l, scale=0.5), rnd(b, d, l)  # (B, D, L)
    A = (-torch.rand(d, n, device="cuda") * 2 - 0.1).requires_grad_(bwd)  # (D, N)
    B, C = rnd(b, g, n, l), rnd(b, g, n, l)  # (B, G, N, L)
    D, db = rnd(d), rnd(d, scale=0.3)

    def f():
        o = T.selective_scan_triton(u, dl, A, B, C, D, z=z, delta_bias=db, delta_softplus=True)
        if bwd:
            o.sum().backward()
    return cuda_time(f, 10, warmup=3) * 1e3


def train_img_s(model: str, batch: int, compile: bool = False, seconds: float = 6.0) -> tuple[float, float]:
    """Images/s of bf16 training steps (AdamW) on random 32x32 images, and the seconds of the first 3 steps."""
    m = timm.create_model(model, backend="triton", drop_path_rate=0.0).cuda().train()
    x = torch.randn(batch, 3, 32, 32, device="cuda")
    y = torch.randint(0, 10, (batch,), device="cuda")
    t0 = time.perf_counter()
    step, _ = make_train_step(torch.compile(m) if compile else m, x, y)
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    t0, k = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        step()
        k += 1
        if k % 5 == 0:
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    return k * batch / (time.perf_counter() - t0), first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", action="store_true", help="also time CIFAR training steps, eager and compiled")
    args = ap.parse_args()
    print(torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
    for name, shp in SHAPES.items():
        print(f"{name:28s} {shp}: fwd {scan_ms(*shp, False):6.2f} ms  fwd+bwd {scan_ms(*shp, True):6.2f} ms",
              flush=True)
    block_d, warps = T._block_d, T._NUM_WARPS
    for name, shp in list(SHAPES.items())[:2]:
        for w in (2, 4, 8):
            for cap in (16, 32, 64):
                T._NUM_WARPS, T._block_d = w, (lambda dg, cap=cap: min(cap, dg & -dg))
                print(f"  {name} warps {w} block_d {cap}: fwd {scan_ms(*shp, False):.2f} "
                      f"fwd+bwd {scan_ms(*shp, True):.2f}", flush=True)
    T._block_d, T._NUM_WARPS = block_d, warps
    if args.train:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        for model in ("local_vim_tiny_cifar", "vim_tiny_cifar"):
            for batch in (256, 128):
                print(f"{model} batch {batch} train bf16: {train_img_s(model, batch)[0]:.0f} img/s", flush=True)
            s, first = train_img_s(model, 256, compile=True, seconds=8)
            print(f"{model} batch 256 train bf16, torch.compile: {s:.0f} img/s (first 3 steps {first:.0f} s)",
                  flush=True)


if __name__ == "__main__":
    main()
