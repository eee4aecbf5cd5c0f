"""Where a model's time goes: the top operators/kernels of one training or inference step.

    python benchmarks/profile_models.py --device cuda --model local_vim_tiny --batch-size 128 --mode train
    python benchmarks/profile_models.py --device cpu --model local_vim_tiny --batch-size 2 --mode infer

Prints torch.profiler's table sorted by device time (CUDA) or CPU time, after warm-up steps; the first
question to answer before making a model faster (on the H200 the selective scan dominated, see README).
"""
from __future__ import annotations

import argparse

import timm
import torch
from bench_models import make_train_step

import localmamba  # noqa: F401


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--model", default="local_vim_tiny")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 128 on cuda, 2 on cpu")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--mode", choices=["train", "infer"], default="infer")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--rows", type=int, default=25)
    args = ap.parse_args()
    cuda = args.device == "cuda"
    torch.backends.cuda.matmul.allow_tf32 = True
    batch = args.batch_size or (128 if cuda else 2)
    model = timm.create_model(args.model, backend=args.backend).to(args.device)
    x = torch.randn(batch, 3, args.img_size, args.img_size, device=args.device)
    y = torch.randint(0, model.num_classes, (batch,), device=args.device)
    train_step, _ = make_train_step(model, x, y, autocast=cuda)

    def step():
        if args.mode == "infer":
            with torch.no_grad():
                model.eval()(x)
            return
        model.train()
        train_step()

    for _ in range(3):
        step()
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    with torch.profiler.profile(activities=activities) as prof:
        step()
        if cuda:
            torch.cuda.synchronize()
    print(f"{args.model}, {args.mode}, batch {batch}, {args.device}")
    table = prof.key_averages()
    for key in (["self_device_time_total", "self_cuda_time_total"] if cuda else ["self_cpu_time_total"]):
        try:  # the device-time key was renamed across torch releases
            print(table.table(sort_by=key, row_limit=args.rows))
            break
        except (AttributeError, KeyError, ValueError):
            continue


if __name__ == "__main__":
    main()
