"""Model throughput: our stacked-direction formulation against the original's per-direction loop.

    python benchmarks/bench_models.py --device cpu                        # LocalVim-T forward, batch 2
    python benchmarks/bench_models.py --device cuda --batch-size 128      # GPU table (TF32 on)
    python benchmarks/bench_models.py --device cpu --models local_vim_tiny_cifar --img-size 32 \
        --batch-size 32 --cpu-train --backend cpu                        # + a CPU training step (fp32)

GPU rows: inference fp32 and bf16 (autocast), and a training step (forward, loss, backward, AdamW)
under bf16 autocast, in images/s, with peak memory; for each model both formulations run in the same
process: ``stacked`` (ours: one gather and one selective-scan call for all directions of a layer) and
``loop`` (the original's: a Python loop of scan, conv, projections and kernel call per direction;
:func:`~localmamba.layers.reference.mamba_loop`, :func:`~localmamba.layers.reference.ss2d_loop`). Both use the same
selective-scan backend (``--backend``, default auto: the Triton kernels on CUDA when triton imports, then
mamba-ssm's; ``--backend cuda`` against ``--backend triton`` re-checks that rule). ``--formulations compiled``
adds ``stacked`` under ``torch.compile`` (:func:`localmamba.models.compile_model`; compiling is not timed);
``graph`` is ``stacked`` replayed from CUDA graphs (:mod:`localmamba.engine.cuda_graphs`: the inference forward, and
the training forward and backward, with loss and AdamW eager; capture is not timed), which takes the host's
op dispatch out of the step time; ``checkpointed`` is ``stacked`` with
``model.set_grad_checkpointing()`` (each block recomputed in the backward: training memory for compute).
``stacked`` remakes each mixer's scanned sequences and delta in the backward (the default on CUDA,
:mod:`localmamba.layers.recompute`); ``kept`` is ``stacked`` with ``model.set_activation_recompute(False)``.

Run from the project's root (the package installed, or ``PYTHONPATH=.``); on a GPU machine
``bash benchmarks/gpu_suite.sh`` runs it with the rest. Figures: benchmarks/RESULTS.md, sections "Model
throughput on the GPU" and "CPU speed".
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import time

import timm
import torch
import torch.nn.functional as F

import localmamba  # noqa: F401
from localmamba.engine.cuda_graphs import InferenceGraph, graph_for_training
from localmamba.layers import SS2D, MultiDirectionMamba
from localmamba.models import compile_model
from localmamba.layers.reference import loop_forward
from localmamba.ops import available_backends, selective_scan


def set_formulation(model: torch.nn.Module, formulation: str) -> torch.nn.Module:
    """The model to run: its mixers switched to ``formulation``, compiled for 'compiled' ('graph' runs the
    stacked mixers; :func:`bench_cuda` captures them)."""
    for m in model.modules():
        if isinstance(m, (MultiDirectionMamba, SS2D)):
            if formulation == "loop":
                loop_forward(m)
            elif "forward" in m.__dict__:
                del m.forward
    model.set_grad_checkpointing(formulation == "checkpointed")
    model.set_activation_recompute(False if formulation == "kept" else None)
    return compile_model(model) if formulation == "compiled" else model


def make_train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, autocast: bool = True):
    """A training step (forward, cross-entropy, backward, AdamW) under bf16 autocast, and its optimizer."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step, opt


def cuda_time(fn, steps: int, warmup: int) -> float:
    """Median seconds per call, with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def train_img_s(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, seconds: float = 6.0,
                compile: bool = False) -> tuple[float, float]:
    """Images/s of training steps (:func:`make_train_step`) over ``seconds`` after 3 untimed ones, and
    the seconds those 3 took (compiling included)."""
    t0 = time.perf_counter()
    step, _ = make_train_step(compile_model(model) if compile else model, x, y)
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
    return k * x.shape[0] / (time.perf_counter() - t0), first


def scan_ms(b: int, d: int, l: int, n: int, g: int, backend: str, bwd: bool, time_major: bool = False,
            dtype: torch.dtype = torch.float32) -> float:
    """Median ms of the selective scan alone (forward, or forward and backward) on random inputs of one
    layer's shape: batch, channels, length, d_state, groups; z, D, bias and softplus on. ``time_major``:
    u, delta and z as (B, D, L) views of (B, L, D) storage, and B, C as views of a (B, L, G, R + 2N)
    projection: the layouts the GPU mixers pass. ``dtype``: of u, delta, z, B, C (bf16 under autocast)."""
    def rnd(*shape, scale=1.0, dt=dtype):
        return (torch.randn(*shape, device="cuda") * scale).to(dt).requires_grad_(bwd)

    def seq(scale=1.0):
        return rnd(b, l, d, scale=scale).transpose(1, 2) if time_major else rnd(b, d, l, scale=scale)
    u, dl, z = seq(), seq(0.5), seq()  # (B, D, L)
    A = (-torch.rand(d, n, device="cuda") * 2 - 0.1).requires_grad_(bwd)  # (D, N)
    if time_major:
        R = 12  # dt_rank columns before B and C
        proj = rnd(b, l, g, R + 2 * n)  # (B, L, G, R + 2N)
        B, C = proj[..., R:R + n].permute(0, 2, 3, 1), proj[..., R + n:].permute(0, 2, 3, 1)  # (B, G, N, L)
    else:
        B, C = rnd(b, g, n, l), rnd(b, g, n, l)  # (B, G, N, L)
    D, db = rnd(d, dt=torch.float32), rnd(d, scale=0.3, dt=torch.float32)

    def f():
        o = selective_scan(u, dl, A, B, C, D, z=z, delta_bias=db, delta_softplus=True, backend=backend)
        if bwd:
            o.sum().backward()
    return cuda_time(f, 10, warmup=3) * 1e3


def bench_cuda(name: str, formulation: str, batch: int, img: int, steps: int, backend: str) -> list[dict]:
    model = timm.create_model(name, backend=backend).cuda()
    run = set_formulation(model, formulation)
    x = torch.randn(batch, 3, img, img, device="cuda")
    y = torch.randint(0, model.num_classes, (batch,), device="cuda")
    rows = []
    model.eval()
    # checkpointing and the activation recompute change nothing without autograd: training only
    infer = () if formulation in ("checkpointed", "kept") else (("infer fp32", None), ("infer bf16", torch.bfloat16))
    for mode, dtype in infer:
        torch.cuda.reset_peak_memory_stats()
        if formulation == "graph":
            step = functools.partial(InferenceGraph(run, autocast_dtype=dtype), x)
        else:
            def step(dtype=dtype):
                with torch.no_grad(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                    run(x)
        t = cuda_time(step, steps, warmup=3)
        rows.append(dict(model=name, formulation=formulation, mode=mode, img_per_s=batch / t,
                         peak_gib=torch.cuda.max_memory_allocated() / 2 ** 30))
    step = None  # an inference graph's memory pool
    torch.cuda.empty_cache()
    model.train()
    torch.cuda.reset_peak_memory_stats()  # before the capture: a graph's memory pool is allocated there
    if formulation == "graph":
        graph_for_training(run, x, autocast_dtype=torch.bfloat16)  # make_train_step's autocast
    train_step, opt = make_train_step(run, x, y)
    t = cuda_time(train_step, steps, warmup=3)
    rows.append(dict(model=name, formulation=formulation, mode="train bf16", img_per_s=batch / t,
                     peak_gib=torch.cuda.max_memory_allocated() / 2 ** 30))
    del model, run, opt
    torch.cuda.empty_cache()
    return rows


def median_time(fn, device: str, steps: int, warmup: int) -> float:
    """Median seconds per call (CUDA events on the GPU)."""
    if device == "cuda":
        return cuda_time(fn, steps, warmup)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_cpu(name: str, formulation: str, batch: int, img: int, steps: int, backend: str,
              train: bool = False) -> list[dict]:
    """Median seconds of a forward (no_grad); with ``train`` also of an fp32 training step (forward,
    cross-entropy, backward, AdamW), as the notebooks train on CPU."""
    model = timm.create_model(name, backend=backend).eval()
    run = set_formulation(model, formulation)
    x = torch.randn(batch, 3, img, img)

    with torch.no_grad():
        t = median_time(lambda: run(x), "cpu", steps, 1)
    rows = [dict(model=name, formulation=formulation, mode="infer fp32", seconds_per_batch=t, img_per_s=batch / t)]
    if train:
        model.train()
        step, _ = make_train_step(run, x, torch.randint(0, model.num_classes, (batch,)), autocast=False)
        t = median_time(step, "cpu", steps, 1)
        rows.append(dict(model=name, formulation=formulation, mode="train fp32", seconds_per_batch=t,
                         img_per_s=batch / t))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--formulations", nargs="*", default=["stacked", "loop"], choices=["stacked", "kept", "loop", "compiled", "graph", "checkpointed"])
    ap.add_argument("--batch-size", type=int, default=None, help="default: 128 on cuda, 2 on cpu")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=None, help="timed repeats (median); default 20 cuda, 5 cpu")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--cpu-train", action="store_true", help="on CPU, also time an fp32 training step")
    ap.add_argument("--json", help="write the rows here too")
    args = ap.parse_args()
    cuda = args.device == "cuda"
    if not cuda and "graph" in args.formulations:
        ap.error("--formulations graph needs --device cuda (CUDA graphs)")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    models = args.models or (["local_vim_tiny", "local_vssm_tiny"] if cuda else ["local_vim_tiny"])
    batch = args.batch_size or (128 if cuda else 2)
    steps = args.steps or (20 if cuda else 5)
    print(f"device {torch.cuda.get_device_name() if cuda else 'cpu'}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, backends {available_backends()}, batch {batch}, img {args.img_size}")
    rows = []
    for name in models:
        for form in args.formulations:
            new = (bench_cuda(name, form, batch, args.img_size, steps, args.backend) if cuda else
                   bench_cpu(name, form, batch, args.img_size, steps, args.backend, train=args.cpu_train))
            rows += new
            for r in new:
                extra = f"{r['peak_gib']:7.2f} GiB" if cuda else f"{r['seconds_per_batch']:.3f} s/batch"
                print(f"{r['model']:18s} {r['formulation']:8s} {r['mode']:11s} {r['img_per_s']:9.1f} img/s  {extra}",
                      flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
