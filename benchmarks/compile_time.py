"""How long ``torch.compile`` takes on the 224 models, and what it gains once compiled.

    python benchmarks/compile_time.py --device cuda --models local_vim_tiny local_vssm_tiny

For each model and mode (fp32 inference, bf16-autocast training step with AdamW, as ``bench_models.py``):
seconds from :func:`localmamba.models.compile_model` to the end of the first call (the compile, warm-up
included), then images/s of the compiled and the eager model in the same process. A fresh process per
model keeps the compile caches of one model from helping the next; ``--timeout`` stops a compile that runs
too long and reports it (the issue's bar is 2 minutes). Figures: benchmarks/RESULTS.md, "torch.compile".
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch


def measure(name: str, device: str, batch: int, img: int, steps: int, mode: str) -> dict:
    import timm
    from bench_models import make_train_step, median_time

    import localmamba  # noqa: F401
    from localmamba.models import compile_model

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    model = timm.create_model(name).to(device)
    x = torch.randn(batch, 3, img, img, device=device)
    y = torch.randint(0, model.num_classes, (batch,), device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    row = dict(model=name, mode=mode, device=device, batch=batch)
    if mode == "infer fp32":
        model.eval()
        t0 = time.perf_counter()
        compiled = compile_model(model)
        with torch.no_grad():
            compiled(x)
        sync()
        row["compile_s"] = time.perf_counter() - t0
        for label, m in (("compiled", compiled), ("eager", model)):
            with torch.no_grad():
                t = median_time(lambda: m(x), device, steps, 3)
            row[f"{label}_img_s"] = batch / t
    else:
        model.train()
        t0 = time.perf_counter()
        compiled = compile_model(model)
        step, _ = make_train_step(compiled, x, y, autocast=device == "cuda")
        step()
        sync()
        row["compile_s"] = time.perf_counter() - t0
        row["compiled_img_s"] = batch / median_time(step, device, steps, 2)
        eager, _ = make_train_step(model, x, y, autocast=device == "cuda")
        row["eager_img_s"] = batch / median_time(eager, device, steps, 2)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--models", nargs="*", default=["local_vim_tiny", "local_vssm_tiny"])
    ap.add_argument("--modes", nargs="*", default=["infer fp32", "train bf16"], choices=["infer fp32", "train bf16"])
    ap.add_argument("--batch-size", type=int, default=None, help="default: 128 on cuda, 2 on cpu")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds a model and mode may take in all")
    ap.add_argument("--json", help="write the rows here too")
    ap.add_argument("--one", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    batch = args.batch_size or (128 if args.device == "cuda" else 2)
    if args.one:
        print(json.dumps(measure(args.one[0], args.device, batch, args.img_size, args.steps, args.one[1])))
        return
    rows = []
    for name in args.models:
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--device", args.device, "--batch-size", str(batch), "--img-size",
                   str(args.img_size), "--steps", str(args.steps), "--one", name, mode]
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                if p.returncode != 0:
                    row = dict(model=name, mode=mode, error=p.stderr.strip().splitlines()[-1:])
                else:
                    row = json.loads(p.stdout.strip().splitlines()[-1])
            except subprocess.TimeoutExpired:
                row = dict(model=name, mode=mode, error=f"not done after {args.timeout:.0f} s")
            rows.append(row)
            if "error" in row:
                print(f"{name:18s} {mode:11s} {row['error']}", flush=True)
            else:
                print(f"{name:18s} {mode:11s} compile {row['compile_s']:6.1f} s  compiled {row['compiled_img_s']:8.1f} "
                      f"img/s  eager {row['eager_img_s']:8.1f} img/s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
