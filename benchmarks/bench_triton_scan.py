"""The Triton selective scan alone at the models' layer shapes, its launch settings, and CIFAR training steps (GPU).

    python benchmarks/bench_triton_scan.py                  # scan at three layer shapes, two layouts
    python benchmarks/bench_triton_scan.py --grid           # also the launch settings: warps x channels
    python benchmarks/bench_triton_scan.py --policy         # the kernels against each other, the models' real inputs
    python benchmarks/bench_triton_scan.py --seg-grid       # the segmented backward's settings (SEG)
    python benchmarks/bench_triton_scan.py --train          # also CIFAR training images/s, eager and compiled

Shapes are (batch, K*d_inner, length, d_state, groups K): a LocalVim-T CIFAR layer at batch 256, a
LocalVim-T layer at batch 128 (224 px), a LocalVMamba-T stage-1 layer; each with u, delta and z stored
(B, D, L) and time-major ((B, L, D) storage, what the GPU mixers pass), fp32: the backward ``backward_kernel``
picks for them runs. Times are medians of CUDA events, ms, forward and forward+backward.
``--grid`` sweeps the step kernels' launch settings (it forces the step backward). To compare with an earlier
kernel, check out its ``localmamba/ops/scan_triton.py`` and run again on the same machine.
Figures: benchmarks/RESULTS.md, section "Selective scan, the op alone" (``bash benchmarks/gpu_suite.sh`` runs
it with the rest).
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import timm
import torch
from bench_models import cuda_time, scan_ms, train_img_s

import localmamba  # noqa: F401
import localmamba.ops.scan_triton as T

SHAPES = {"LocalVim-T CIFAR b256": (256, 1536, 65, 16, 4), "LocalVim-T 224 b128": (128, 1536, 197, 16, 4),
          "LocalVMamba-T stage 1 b128": (128, 768, 3136, 16, 4)}
@contextlib.contextmanager
def backward_forced(kernel: str):
    """Every scan's backward through ``kernel`` ("step" or "seg") instead of :func:`backward_kernel`'s pick."""
    chosen = T.backward_kernel
    T.backward_kernel = lambda *a: kernel
    try:
        yield
    finally:
        T.backward_kernel = chosen


def model_scan_calls(model: str, batch: int = 128) -> list[tuple[str, tuple]]:
    """The selective-scan calls of one forward of ``model`` (one per distinct input signature), in fp32
    and under bf16 autocast: their real shapes, strides and dtypes, and out_dtype last (LocalVMamba-T's SS2D
    scans its bf16 activations with an fp32 output under autocast; LocalVim's mixer is all bf16)."""
    import localmamba.ops.scan as S  # the entry point: the backend table, or the Triton op itself for out_dtype
    real, real_out, calls, seen = S.SCAN.impls["triton"], S.selective_scan_triton, [], set()

    def record(*args, out_dtype=None):
        args = (*args, out_dtype)
        key = tuple((tuple(a.shape), a.stride(), a.dtype) if torch.is_tensor(a) else a for a in args)
        if key not in seen:
            seen.add(key)
            calls.append((mode, tuple(torch.empty_strided(a.shape, a.stride(), dtype=a.dtype, device=a.device)
                                      .copy_(a) if torch.is_tensor(a) else a for a in args)))
        return real_out(*args)
    m = timm.create_model(model, backend="triton").cuda().eval()
    x = torch.randn(batch, 3, 224, 224, device="cuda")
    S.SCAN.impls["triton"] = S.selective_scan_triton = record
    try:
        for mode, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            with torch.no_grad(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                m(x)
    finally:
        S.SCAN.impls["triton"], S.selective_scan_triton = real, real_out
    return calls


def policy_table(models=("local_vim_tiny", "local_vssm_tiny")) -> None:
    """The two backwards, forward and backward ms, at every scan call of the models (their real inputs), and
    the one :func:`backward_kernel` picks for each."""
    for model in models:
        for mode, args in model_scan_calls(model):
            u, delta, A, B = args[:4]
            leaves = [a.requires_grad_(True) if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
            row = {}
            for kernel in ("step", "seg"):
                with backward_forced(kernel):
                    f = cuda_time(lambda lv=leaves: T.selective_scan_triton(*lv), 10, warmup=3) * 1e3
                    fb = cuda_time(lambda lv=leaves: T.selective_scan_triton(*lv).sum().backward(), 10, warmup=3) * 1e3
                row[kernel] = (f, fb - f)
            b, d, l = u.shape
            pick = T.backward_kernel(l, T._scratch_dtype(u))
            out = args[9] or u.dtype
            print(f"  {model:15s} {mode} ({b}, {d}, {l}, {A.shape[1]}) u {str(u.dtype)[6:]:8s} delta "
                  f"{str(delta.dtype)[6:]:8s} B {str(B.dtype)[6:]:8s} out {str(out)[6:]:8s} "
                  + "  ".join(f"{k}: fwd {v[0]:6.2f} bwd {v[1]:6.2f}" for k, v in row.items())
                  + f"  -> bwd {pick}", flush=True)
            del leaves, args


SEG_SHAPES = {"LocalVim-T": (128, 1536, 197, 16, 4), "LocalVMamba-T stage 1": (128, 768, 3136, 16, 4),
              "LocalVMamba-T stage 3": (128, 3072, 196, 16, 4)}


def seg_grid() -> None:
    """Backward ms (forward+backward less forward) of the segmented kernel over its settings, fp32, time-major,
    at a LocalVim-T layer and LocalVMamba-T's stage-1 and stage-3 layers (batch 128 at 224); the step kernel's
    first, for scale. The best: the least sum of ratios to each shape's fastest setting."""
    seg, totals = T.SEG, {}

    def bwd_ms(shp):
        return scan_ms(*shp, "triton", True, True) - scan_ms(*shp, "triton", False, True)
    with backward_forced("step"):
        print("  step: " + "  ".join(f"{k} {bwd_ms(v):6.2f}" for k, v in SEG_SHAPES.items()), flush=True)
    with backward_forced("seg"):
        for cfg in itertools.product((4, 8, 16), (16, 32), (1, 2)):
            T.SEG = T.SegConfig(*cfg)
            totals[T.SEG] = [bwd_ms(v) for v in SEG_SHAPES.values()]
            print(f"  seg {cfg}: " + "  ".join(f"{k} {v:6.2f}" for k, v in zip(SEG_SHAPES, totals[T.SEG])), flush=True)
    T.SEG = seg
    fastest = [min(r[i] for r in totals.values()) for i in range(len(SEG_SHAPES))]
    print("  best:", min(totals, key=lambda c: sum(v / f for v, f in zip(totals[c], fastest))), flush=True)


def cifar(model: str, batch: int) -> tuple:
    """A CIFAR variant (Triton scan, no drop path) on the GPU, in training mode, and a random batch."""
    m = timm.create_model(model, backend="triton", drop_path_rate=0.0).cuda().train()
    return m, torch.randn(batch, 3, 32, 32, device="cuda"), torch.randint(0, 10, (batch,), device="cuda")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", action="store_true", help="also time CIFAR training steps, eager and compiled")
    ap.add_argument("--grid", action="store_true", help="also time the launch settings (warps x channels)")
    ap.add_argument("--policy", action="store_true", help="also time the kernels on the models' scan inputs")
    ap.add_argument("--seg-grid", action="store_true", help="also time the segmented backward's settings")
    args = ap.parse_args()
    print(torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
    for name, shp in SHAPES.items():
        for tm in (False, True):
            print(f"{name:28s} {shp} {'time-major' if tm else '(B, D, L)':10s}: "
                  f"fwd {scan_ms(*shp, 'triton', False, tm):6.2f} ms  fwd+bwd {scan_ms(*shp, 'triton', True, tm):6.2f} ms",
                  flush=True)
    block_d, warps = T._BLOCK_D, T._NUM_WARPS
    with backward_forced("step"):  # the grid's settings are the step kernels'
        for name, shp in list(SHAPES.items())[:2] if args.grid else []:
            for w in (1, 2, 4):
                for cap in (16, 32, 64):
                    T._NUM_WARPS, T._BLOCK_D = w, cap
                    print(f"  {name} time-major, warps {w} block_d {cap}: "
                          f"fwd {scan_ms(*shp, 'triton', False, True):.2f} "
                          f"fwd+bwd {scan_ms(*shp, 'triton', True, True):.2f}", flush=True)
    T._BLOCK_D, T._NUM_WARPS = block_d, warps
    if args.seg_grid:
        seg_grid()
    if args.policy:
        policy_table()
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
