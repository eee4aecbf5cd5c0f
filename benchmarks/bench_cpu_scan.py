"""The selective scan of one real layer on CPU: "torch" against the C kernel "cpu", calls interleaved.

The inputs are captured from a model's first mixer (shapes, dtypes and the very layouts the layer passes:
u and delta as views of time-major storage, B and C as views of the x projection), so the figures are
those a forward pays. Forward under no_grad; forward+backward with every input requiring grad, the
gradient of the output in its layout. Backends alternate call by call (the machine's noise hits both).

    python benchmarks/bench_cpu_scan.py                              # LocalVim-T, batch 2, 224
    python benchmarks/bench_cpu_scan.py --model local_vssm_tiny --repeats 9

Figures: benchmarks/RESULTS.md, section "Selective scan, the op alone".
"""
from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch

import localmamba.layers.ssm as ssm_layer
from localmamba.ops import available_backends, selective_scan


def capture(model: str, batch: int, img: int) -> tuple[tuple, dict]:
    """(args, kwargs) of the first selective_scan call in a forward of ``model``."""
    calls = []
    inner = ssm_layer.selective_scan

    def grab(*args, **kwargs):
        calls.append((args, kwargs))
        return inner(*args, **kwargs)

    ssm_layer.selective_scan = grab
    try:
        with torch.no_grad():
            timm.create_model(model).eval()(torch.randn(batch, 3, img, img))
    finally:
        ssm_layer.selective_scan = inner
    args, kwargs = calls[0]
    return args, {k: v for k, v in kwargs.items() if k != "backend"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="local_vim_tiny")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=15, help="timed calls per backend and mode (median)")
    args = ap.parse_args()
    backends = [b for b in ("torch", "cpu") if b in available_backends()]
    pos, kw = capture(args.model, args.batch_size, args.img_size)
    names = ("u", "delta", "A", "B", "C")
    print(f"{args.model}, batch {args.batch_size}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for name, t in [*zip(names, pos), *((k, v) for k, v in kw.items() if isinstance(v, torch.Tensor))]:
        print(f"  {name:10s} {str(tuple(t.shape)):22s} strides {t.stride()} {t.dtype}")
    leaves = [t.detach().clone().requires_grad_() for t in pos]  # clone keeps dense layouts (u, delta)
    leaves[3:5] = [t.detach().requires_grad_() for t in pos[3:5]]  # B, C: views of x_dbl, kept as views
    kw_grad = {k: (v.detach().clone().requires_grad_() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    out = selective_scan(*pos, **kw, backend="torch")
    grad = torch.randn_like(out)  # (B, K*D, L) in the output's layout

    def forward(backend):
        with torch.no_grad():
            selective_scan(*pos, **kw, backend=backend)

    def forward_backward(backend):
        selective_scan(*leaves, **kw_grad, backend=backend).backward(grad)

    for label, fn in (("forward", forward), ("forward+backward", forward_backward)):
        for b in backends:
            fn(b)  # warm-up (and the kernel's build)
        times = {b: [] for b in backends}
        for _ in range(args.repeats):
            for b in backends:
                t = time.perf_counter()
                fn(b)
                times[b].append(time.perf_counter() - t)
        for b in backends:
            print(f"{label:17s} {b:6s} median {1e3 * statistics.median(times[b]):7.2f} ms  "
                  f"(min {1e3 * min(times[b]):.2f}, max {1e3 * max(times[b]):.2f}, {args.repeats} calls)")


if __name__ == "__main__":
    main()
