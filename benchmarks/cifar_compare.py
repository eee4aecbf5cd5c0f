"""LocalVim against the Vim-style baseline on real CIFAR-10, same recipe and epochs, in one GPU call.

    python benchmarks/cifar_compare.py --data data/cifar10_train_jpeg.npz --budget-s 480 --out runs/cifar

The 50,000 training images of the .npz are split class-stratified (seed 0): 45,000 to train, 5,000
held out for validation (``--val-split 5000``; the official test split is not used). Both models run
``configs/cifar10_*.yaml``; the number of epochs is chosen once, from the measured training speed of
the slower model, so that both runs, started together on one GPU, end within ``--budget-s``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import timm
import torch
import torch.nn.functional as F

import localmamba  # noqa: F401

CONFIGS = {"local_vim_tiny_cifar": "configs/cifar10_local_vim_tiny.yaml", "vim_tiny_cifar": "configs/cifar10_vim_tiny.yaml"}


def train_speed(name: str, batch: int, backend: str, seconds: float = 8.0) -> float:
    """Images/s of a bf16 training step (forward, loss, backward, AdamW) on random 32x32 data."""
    model = timm.create_model(name, backend=backend).cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, 32, 32, device="cuda")
    y = torch.randint(0, 10, (batch,), device="cuda")
    n, start = 0, None
    while True:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        n += 1
        if n == 3:
            torch.cuda.synchronize()
            start, n = time.perf_counter(), 0
        elif start is not None and time.perf_counter() - start > seconds:
            torch.cuda.synchronize()
            return n * batch / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--budget-s", type=float, default=480, help="wall time for both runs together")
    ap.add_argument("--out", default="runs/cifar_compare")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=None, help="skip the speed probe and use this")
    args = ap.parse_args()
    epochs = args.epochs
    if epochs is None:
        speeds = {m: train_speed(m, args.batch_size, args.backend) for m in CONFIGS}
        print("probe, images/s alone:", {m: round(s) for m, s in speeds.items()}, flush=True)
        # run together, the two share the GPU: a step of each costs about the sum of their step times;
        # 75% of the budget goes to training, the rest to start-up, data decoding and validation
        per_image_s = sum(1 / s for s in speeds.values())
        epochs = max(1, int(0.75 * args.budget_s / (45_000 * per_image_s)))
    print(f"epochs: {epochs}", flush=True)
    procs = {}
    for model, cfg in CONFIGS.items():
        out = os.path.join(args.out, model)
        cmd = [sys.executable, "-m", "localmamba.train", "--config", cfg, "--data-dir", args.data, "--epochs",
               str(epochs), "--batch-size", str(args.batch_size), "--output", out, "--no-progress",
               "--model-kwargs", json.dumps({"backend": args.backend})]
        print(" ".join(cmd), flush=True)
        os.makedirs(out, exist_ok=True)
        procs[model] = subprocess.Popen(cmd, stdout=open(os.path.join(out, "log.txt"), "w"), stderr=subprocess.STDOUT)
    for model, p in procs.items():
        p.wait()
        with open(os.path.join(args.out, model, "log.txt")) as f:
            tail = f.read()[-1500:]
        print(f"== {model} (exit {p.returncode})\n{tail}", flush=True)
    rows = {}
    for model in CONFIGS:
        path = os.path.join(args.out, model, "summary.json")
        if os.path.exists(path):
            rows[model] = json.load(open(path))
    print(json.dumps({m: {k: v for k, v in s.items() if k != "config"} for m, s in rows.items()}, indent=1))


if __name__ == "__main__":
    main()
