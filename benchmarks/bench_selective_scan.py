"""Time the selective-scan backends on one LocalVim-T layer's scan, and check they agree with the oracle.

Default problem: b=8, d=1536 (4 directions x 384 channels), l=196 (14x14 tokens), n=16, B and C in 4
groups (one per direction), with z, D, delta_bias and softplus, fp32.

    python benchmarks/bench_selective_scan.py                      # CPU: ref, torch and the C kernel "cpu"
    python benchmarks/bench_selective_scan.py --device cuda        # GPU: ref, torch, and the GPU kernels
    python benchmarks/bench_selective_scan.py --json build/bench_selective_scan.json

Forward is timed under torch.no_grad() (inference); forward+backward with every input requiring grad.
Each figure is the median of --repeats runs (the oracle's fwd+bwd: --ref-repeats) after one warm-up.
Memory: on CPU, the peak resident memory that one fwd+bwd adds above the inputs, in a fresh subprocess
per backend (Linux: VmHWM after resetting it through /proc/self/clear_refs, minus VmRSS before); on CUDA, torch.cuda.max_memory_allocated above the inputs. "saved" is what
autograd keeps between forward and backward (bytes of saved tensors, from saved_tensors_hooks).
Figures: benchmarks/RESULTS.md, section "Selective scan, the op alone" (``bash benchmarks/gpu_suite.sh`` runs
the GPU one).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

from localmamba.ops import available_backends, selective_scan, selective_scan_ref

from localmamba.ops import scan_cuda, scan_torch
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(args, device, requires_grad=True):
    """A LocalVim-T-like layer's scan inputs (softplus(delta) ~ 0.001..0.1 as dt_proj's init gives)."""
    g = torch.Generator().manual_seed(0)
    b, d, l, n, k = args.batch, args.dim, args.seqlen, args.dstate, args.groups

    def rnd(*shape):
        return torch.randn(*shape, generator=g)

    x = dict(
        u=rnd(b, d, l), delta=rnd(b, d, l) * 0.5 - 4.0,
        A=-torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1) * torch.exp(0.1 * rnd(d, n)),
        B=rnd(b, k, n, l), C=rnd(b, k, n, l), D=torch.ones(d) + 0.1 * rnd(d), z=rnd(b, d, l),
        delta_bias=0.5 * rnd(d),
    )
    return {k_: v.to(device).requires_grad_(requires_grad) for k_, v in x.items()}


def call(backend, x, chunk_size):
    if backend == "ref":
        return selective_scan_ref(**x, delta_softplus=True)
    if backend == "torch":
        return scan_torch.selective_scan_torch(**x, delta_softplus=True, chunk_size=chunk_size)
    return selective_scan(**x, delta_softplus=True, backend=backend)


class Timer:
    """Wall clock on CPU; CUDA events (synchronised) on GPU. Returns seconds."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1e3
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t


def fwd_bwd(backend, x, chunk_size, grad_out):
    """One forward+backward; returns (out, grads) with grads in NAMES order."""
    for v in x.values():
        v.grad = None
    out = call(backend, x, chunk_size)
    out.backward(grad_out)
    return out.detach(), [x[k].grad for k in NAMES]


def saved_bytes(backend, x, chunk_size):
    """Bytes of the tensors autograd saves for backward (each storage counted once)."""
    seen = {}

    def pack(t):
        seen[(t.untyped_storage().data_ptr(), t.dtype)] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        call(backend, x, chunk_size)
    return sum(seen.values())


def rel_err(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def measure(backend, x, args, timer, repeats, grad_out):
    """Median fwd (no_grad) and fwd+bwd times; also the last run's output and gradients."""
    with torch.no_grad():
        timer(lambda: call(backend, x, args.chunk_size))                  # warm-up
        fwd = [timer(lambda: call(backend, x, args.chunk_size)) for _ in range(repeats)]
    if backend != "ref":                                                  # the oracle's is too slow to repeat
        timer(lambda: fwd_bwd(backend, x, args.chunk_size, grad_out))
    last = {}

    def run():
        last["out"], last["grads"] = fwd_bwd(backend, x, args.chunk_size, grad_out)

    fb = [timer(run) for _ in range(max(1, args.ref_repeats) if backend == "ref" else repeats)]
    return dict(fwd_s=statistics.median(fwd), fwd_all_s=fwd, fwdbwd_s=statistics.median(fb), fwdbwd_all_s=fb,
                out=last["out"], grads=[g.clone() for g in last["grads"]])


def _status_kib(field):
    """A memory field of /proc/self/status (VmRSS, VmHWM) in KiB, or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def memory_child(args):
    """Run in a fresh process: peak resident memory that one fwd+bwd adds above the inputs (CPU).

    Linux: reset the high-water mark (echo 5 > /proc/self/clear_refs), run, read VmHWM - VmRSS before.
    Elsewhere: getrusage's ru_maxrss before and after (an underestimate if imports peaked higher).
    """
    torch.set_num_threads(args.threads)
    x = make_inputs(args, torch.device("cpu"))
    grad_out = torch.randn(args.batch, args.dim, args.seqlen, generator=torch.Generator().manual_seed(1))
    base = _status_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        how = "VmHWM after clear_refs"
    except OSError:
        base, how = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"
    fwd_bwd(args.memory_child, x, args.chunk_size, grad_out)
    peak = _status_kib("VmHWM") if how.startswith("VmHWM") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(dict(peak_rss_added_mb=(peak - base) / 1024, peak_rss_mb=peak / 1024, rss_method=how)))


def peak_rss(backend, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", backend, "--threads", str(args.threads),
           "--chunk-size", str(args.chunk_size), "--batch", str(args.batch), "--dim", str(args.dim),
           "--seqlen", str(args.seqlen), "--dstate", str(args.dstate), "--groups", str(args.groups)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dim", type=int, default=1536)
    p.add_argument("--seqlen", type=int, default=196)
    p.add_argument("--dstate", type=int, default=16)
    p.add_argument("--groups", type=int, default=4)
    p.add_argument("--chunk-size", type=int, default=scan_torch.DEFAULT_CHUNK_SIZE)
    p.add_argument("--repeats", type=int, default=7, help="timed runs per figure (median reported)")
    p.add_argument("--ref-repeats", type=int, default=1, help="timed fwd+bwd runs of the slow oracle")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-RSS subprocesses (CPU)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        return memory_child(args)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda needs a CUDA GPU")
    # the fused kernels of the device: the C kernel on CPU; mamba-ssm, Triton on GPU
    kernels = [b for b in available_backends() if b not in ("ref", "torch") and (b == "cpu") == (device.type == "cpu")]
    backends = ["ref", "torch"] + kernels
    x = make_inputs(args, device)
    grad_out = torch.randn(x["u"].shape, generator=torch.Generator().manual_seed(1)).to(device)
    timer = Timer(device)
    where = (f"CPU ({cpu_name()}, {args.threads} threads)" if device.type == "cpu"
             else f"GPU ({torch.cuda.get_device_name(device)})")
    print(f"selective scan on {where}, torch {torch.__version__}")
    print(f"b={args.batch} d={args.dim} l={args.seqlen} n={args.dstate} groups={args.groups}, "
          f"z, D, delta_bias, softplus, fp32; torch chunk size {args.chunk_size}")
    if device.type == "cuda" and "cuda" not in backends:
        print(f"(no 'cuda' backend: mamba-ssm does not import: {scan_cuda._mamba_import_error})")

    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results = {}
    for backend in backends:
        print(f"  timing {backend} ...", file=sys.stderr, flush=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        reps = args.repeats if backend != "ref" else max(3, args.repeats // 2)
        r = measure(backend, x, args, timer, reps, grad_out)
        if device.type == "cuda":
            r["peak_mem_mb"] = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
        r["saved_mb"] = saved_bytes(backend, x, args.chunk_size) / 2 ** 20
        results[backend] = r

    # agreement with the oracle: relative max error of the output and of each input's gradient
    ref = results["ref"]
    for r in results.values():
        r["err_out"] = rel_err(r["out"], ref["out"])
        r["err_grads"] = {k: rel_err(g, gr) for k, g, gr in zip(NAMES, r["grads"], ref["grads"])}

    if device.type == "cpu" and not args.no_memory:
        for backend in backends:
            print(f"  peak RSS of {backend} fwd+bwd (subprocess) ...", file=sys.stderr, flush=True)
            results[backend].update(peak_rss(backend, args))

    mem_col = "peak RSS added (MB)" if device.type == "cpu" else "max allocated (MB)"
    header = f"{'backend':8} {'fwd (ms)':>10} {'fwd+bwd (ms)':>13} {'fwd x':>7} {'fwd+bwd x':>10} " \
             f"{'saved (MB)':>11} {mem_col:>20} {'max rel err (out / grads)':>27}"
    print(header)
    print("-" * len(header))
    for backend, r in results.items():
        mem = r.get("peak_rss_added_mb", r.get("peak_mem_mb"))
        errg = max(r["err_grads"].values())
        print(f"{backend:8} {r['fwd_s'] * 1e3:10.1f} {r['fwdbwd_s'] * 1e3:13.1f} "
              f"{ref['fwd_s'] / r['fwd_s']:7.1f} {ref['fwdbwd_s'] / r['fwdbwd_s']:10.1f} "
              f"{r['saved_mb']:11.1f} {(f'{mem:.0f}' if mem is not None else '-'):>20} "
              f"{r['err_out']:13.1e} / {errg:.1e}")
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"(median of {args.repeats} runs; oracle: {max(3, args.repeats // 2)} fwd, {args.ref_repeats} fwd+bwd; "
          f"speedups are against the oracle 'ref'; 1-min load average {load_start:.2f} at start, "
          f"{load_end:.2f} at end)")

    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        clean = {b: {k: v for k, v in r.items() if k not in ("out", "grads")} for b, r in results.items()}
        meta = dict(device=where, torch=torch.__version__, python=platform.python_version(),
                    loadavg_start=load_start, loadavg_end=load_end,
                    config={k: v for k, v in vars(args).items() if k not in ("json", "memory_child")},
                    command=" ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]))
        with open(args.json, "w") as f:
            json.dump(dict(meta=meta, results=clean), f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
