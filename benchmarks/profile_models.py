"""Where a model's time goes: the top operators/kernels of one training or inference step.

    python benchmarks/profile_models.py --device cuda --model local_vim_tiny --batch-size 128 --mode train
    python benchmarks/profile_models.py --device cpu --model local_vim_tiny --batch-size 2 --mode infer
    python benchmarks/profile_models.py --device cuda --model local_vssm_tiny --mode infer-bf16

Prints torch.profiler's table sorted by device time (CUDA) or CPU time, after warm-up steps; the first
question to answer before making a model faster (on the H200 the selective scan dominated).
On CUDA it first prints how long the host takes to issue a step against how long a step takes: a model
whose GPU work is short (LocalVim-T) can be bound by the host's op dispatch instead (benchmarks/RESULTS.md,
section "Model throughput on the GPU"). ``bash benchmarks/gpu_suite.sh`` runs the training profile of LocalVim-T.
"""
from __future__ import annotations

import argparse
import time

import timm
import torch
from bench_models import make_train_step

import localmamba  # noqa: F401


def host_time(step, n: int = 5) -> tuple[float, float]:
    """(ms the host takes to issue a step, ms a step takes), over n steps without synchronising between
    them: when the first is close to the second the GPU waits for the host (op dispatch, launches), and a
    slower host CPU makes the model slower (LocalVim-T at batch 128 on an H200: 120 of 129 ms a training
    step)."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return 1e3 * (t1 - t0) / n, 1e3 * (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--model", default="local_vim_tiny")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 128 on cuda, 2 on cpu")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--mode", choices=["train", "infer", "infer-bf16"], default="infer")
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
        if args.mode.startswith("infer"):
            bf16 = args.mode == "infer-bf16"
            with torch.no_grad(), torch.autocast(args.device, dtype=torch.bfloat16, enabled=bf16):
                model.eval()(x)
            return
        model.train()
        train_step()

    for _ in range(3):
        step()
    if cuda:
        issue_ms, wall_ms = host_time(step)
        print(f"host: {issue_ms:.1f} ms to issue a step, {wall_ms:.1f} ms a step "
              f"({'bound by the host' if issue_ms > 0.9 * wall_ms else 'bound by the GPU'})")
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
