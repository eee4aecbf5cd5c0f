"""LocalVim against the Vim-style baseline on real CIFAR-10: same recipe, same epochs, same GPUs.

    python benchmarks/cifar_compare.py --data data/cifar10_train_jpeg.npz --out runs/cifar   # both, in turn
    python benchmarks/cifar_compare.py --data ... --out runs/cifar --models vim_tiny_cifar  # one of them
    python benchmarks/cifar_compare.py --out runs/cifar --report                           # the table
    python benchmarks/cifar_compare.py --data ... --out runs/cifar_stem2 --tag _stem2       # configs/*_stem2.yaml
    python benchmarks/cifar_compare.py --data ... --out runs/cifar_4gpu --tag _4gpu --nproc 4  # torchrun, 4 GPUs

Each model trains alone on the GPU (or the ``--nproc`` GPUs, through torchrun) with its
``configs/cifar10_*.yaml`` (the two differ in the model name alone). The 50,000 training images of the .npz are split class-stratified (``val_split: 5000``,
``split_seed: 0``): 45,000 train, the same 5,000 held out for validation in every run; the official
test split is not used. The table gives the final validation top-1 (the last epoch, not the best).

The .npz comes from torchvision's CIFAR-10 download (README.md, "Training": ``save_npz``). Figures:
benchmarks/RESULTS.md, section "CIFAR-10 accuracy".
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from localmamba.engine.distributed import read_metrics

MODELS = {"local_vim_tiny_cifar": "configs/cifar10_local_vim_tiny{}.yaml", "vim_tiny_cifar": "configs/cifar10_vim_tiny{}.yaml"}


def run(model: str, args: argparse.Namespace) -> int:
    out = os.path.join(args.out, model)
    os.makedirs(out, exist_ok=True)
    launch = [sys.executable, "-m"] if args.nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.nproc), "-m"]
    cmd = [*launch, "localmamba.train", "--config", MODELS[model].format(args.tag), "--data-dir",
           args.data, "--output", out, "--no-progress", "--model-kwargs", json.dumps({"backend": args.backend})]
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    print(" ".join(cmd), flush=True)
    start = time.time()
    with open(os.path.join(out, "log.txt"), "w") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    with open(os.path.join(out, "log.txt")) as f:
        print(f"== {model}: exit {code} after {time.time() - start:.0f} s\n{f.read()[-1200:]}", flush=True)
    return code


def report(out: str) -> None:
    rows = []
    for model in MODELS:
        path = os.path.join(out, model, "metrics.jsonl")
        epochs = read_metrics(path)
        if not epochs:
            print(f"{model}: no metrics in {path}")
            continue
        last = epochs[-1]
        rows.append((model, len(epochs), last.get("top1"), max(e.get("top1") or 0 for e in epochs),
                     sum(e.get("images_per_sec") or 0 for e in epochs) / len(epochs), sum(e.get("epoch_time") or 0 for e in epochs)))
    print(f"{'model':24s} {'epochs':>6s} {'val top-1':>9s} {'best':>6s} {'img/s':>7s} {'train s':>8s}")
    for r in rows:
        print(f"{r[0]:24s} {r[1]:6d} {r[2]:9.2f} {r[3]:6.2f} {r[4]:7.0f} {r[5]:8.0f}")
    if len(rows) == 2:
        print(f"LocalVim - Vim-style: {rows[0][2] - rows[1][2]:+.2f} points (final epoch)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="the CIFAR-10 .npz or folder")
    ap.add_argument("--out", default="runs/cifar_compare")
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--tag", default="", help="config set: configs/cifar10_<model>_tiny<TAG>.yaml")
    ap.add_argument("--backend", default="auto", help="selective-scan backend of both models")
    ap.add_argument("--nproc", type=int, default=1, help="processes (GPUs) per run, through torchrun")
    ap.add_argument("--epochs", type=int, default=None, help="override the configs' epochs (both alike)")
    ap.add_argument("--report", action="store_true", help="only print the table of runs already in --out")
    args = ap.parse_args()
    if not args.report:
        if not args.data:
            ap.error("--data is required unless --report")
        for model in args.models:
            if run(model, args):
                sys.exit(f"{model} failed: see {os.path.join(args.out, model, 'log.txt')}")
    report(args.out)


if __name__ == "__main__":
    main()
