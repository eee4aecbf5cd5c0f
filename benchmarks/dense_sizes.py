"""Backbones at dense-prediction sizes (issue 18): LocalVMamba-T and LocalVim-T (built for the image size,
its position embedding resized) as timm ``features_only=True`` backbones (four stages; four evenly spaced layers)
forward and backward at 1333x800, batch 2, under bf16 autocast: seconds per step and peak memory, or an
"out of memory" row.

    python3 benchmarks/dense_sizes.py --device cuda --out dense_sizes.json     # 800x1333, batch 2
    python3 benchmarks/dense_sizes.py --device cpu --height 64 --width 96      # smoke test

A step is: forward, the sum of the means of the features as the loss, backward (no optimizer). Backend
``auto``, TF32 on; the median of ``--steps`` after ``--warmup``; peak is ``torch.cuda.max_memory_allocated``.
"""
from __future__ import annotations

import argparse
import json
import warnings

import timm
import torch

import localmamba  # noqa: F401  (registers the models)

from bench_models import median_time

MODELS = {"LocalVMamba-T": "local_vssm_tiny", "LocalVim-T": "local_vim_tiny"}


def build(name: str, size: tuple[int, int]) -> torch.nn.Module:
    """The backbone as detection takes it: timm ``features_only=True``; LocalVim built for ``size``."""
    if name == "local_vssm_tiny":
        return timm.create_model(name, features_only=True)
    with warnings.catch_warnings():  # 1333 is not a multiple of 16: the patch embedding pads, as intended
        warnings.simplefilter("ignore")
        return timm.create_model(name, features_only=True, img_size=size)


def bench(label: str, name: str, args) -> dict:
    dev = args.device
    size = (args.height, args.width)
    res = dict(model=label, height=args.height, width=args.width, batch=args.batch_size)
    model = x = None
    try:
        model = build(name, size).to(dev).train()
        x = torch.randn(args.batch_size, 3, *size, device=dev)

        def step():
            with torch.autocast(dev, dtype=torch.bfloat16):
                feats = model(x)  # list of (B, C, h, w)
                loss = sum(f.float().mean() for f in feats)
            loss.backward()
            model.zero_grad(set_to_none=True)
            return feats

        shapes = [tuple(f.shape) for f in step()]
        if dev == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = median_time(step, dev, args.steps, args.warmup)
        if dev == "cuda":
            res["peak_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
        res.update(status="ok", seconds_per_step=t, img_per_s=args.batch_size / t, feature_shapes=shapes)
    except torch.OutOfMemoryError as e:
        res.update(status="out of memory", error=str(e).splitlines()[0])
    except Exception as e:  # noqa: BLE001  (the other backbone's row still comes)
        res.update(status=f"error: {type(e).__name__}: {str(e)[:200]}")
    finally:
        del model, x
        if dev == "cuda":
            torch.cuda.empty_cache()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--height", type=int, default=800)
    ap.add_argument("--width", type=int, default=1333)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--steps", type=int, default=None, help="timed repeats (median); default 5 cuda, 1 cpu")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps after the first; default 2 cuda, 0 cpu")
    ap.add_argument("--out", help="write the rows here (JSON)")
    args = ap.parse_args()
    args.steps = args.steps or (5 if args.device == "cuda" else 1)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.device == "cuda" else 0)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    rows = [bench(label, MODELS[label], args) for label in args.models]
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                           torch=torch.__version__, rows=rows), f, indent=1)
    print("| model | size | batch | status | s/step | img/s | peak GiB | features |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        timing = f"{r['seconds_per_step']:.3f} | {r['img_per_s']:.1f}" if r["status"] == "ok" else " | "
        peak = f"{r['peak_gib']:.2f}" if "peak_gib" in r else ""
        feats = " ".join("x".join(map(str, s[1:])) for s in r.get("feature_shapes", []))
        print(f"| {r['model']} | {r['width']}x{r['height']} | {r['batch']} | {r['status']} | {timing} | {peak} "
              f"| {feats} |")


if __name__ == "__main__":
    main()
