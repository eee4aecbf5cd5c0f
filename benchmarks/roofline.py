"""Roofline of LocalVim-T and LocalVMamba-T: the FLOPs and bytes a step must do and move, against the
step time and the card's ceilings measured in the same run (issue 18).

    python3 benchmarks/roofline.py --device cuda --out roofline.json          # H200: batch 128 at 224
    python3 benchmarks/roofline.py --device cpu --batch-size 2 --img-size 64  # smoke test

Modes: ``infer fp32`` (no_grad, TF32 on), ``infer bf16`` (no_grad, bf16 autocast), ``train bf16`` (forward,
cross-entropy, backward, AdamW under bf16 autocast: ``bench_models.make_train_step``). Backend ``auto``.

How each figure is counted (``GFLOP`` and ``GB`` are of the whole batch):

- FLOPs. Matmuls and convolutions: fvcore's multiply-accumulates (:func:`localmamba.models.flops.paper_flops`
  on the model wrapped so that it takes the fvcore path for both families, the scan's own rule set to 0),
  times 2 (a multiply-accumulate is 2 FLOPs); while fvcore traces, the scan is a cheap stand-in that reads
  all its inputs with ops fvcore does not count (tracing the chunked torch scan is slow). Each
  selective-scan call: 9*B*L*D*N + B*D*L FLOPs (the rule of
  mamba-ssm issue 110), from the shapes of the calls the forward really makes (recorded). Elementwise ops,
  norms and softmaxes are not counted. Training = 3x the forward (backward = 2x forward, a convention).
- Bytes: a floor at layer granularity, each tensor written once and read once, nothing re-read:
  * weights: fp32, read once (inference); training adds a second read (backward), the gradient's write and
    AdamW's reads of p, g, m, v and writes of p, m, v: 10 x 4 bytes per parameter;
  * leaf modules outside the mixers (patch embedding, norms, MLPs, head): the bytes of their tensor inputs
    and outputs as observed (dtype as autocast gives it);
  * each mixer (LocalVim's MultiDirectionMamba, LocalVMamba's SS2D), from its shapes, with activations of
    2 bytes (bf16 modes) or 4 (fp32): its input and output once each, and these intermediates written and
    read once: LocalVim: in_proj's x|z (B,T,2D), the K conv outputs (B,K,D,L), x_proj's (B,K,R+2N,L), delta
    (B,K,D,L), the scan's y (B,K,D,L), the merge's (B,T,D); LocalVMamba: in_proj's (B,HW,2D), the conv's
    (B,HW,D), x_proj's (B,K,R+2N,L), delta and y (B,K,D,L), merge and norm outputs (B,HW,D) each. The K
    direction gathers are taken as fused into their consumers (free);
  * backward (training): per layer, its saved input and the gradient of its output read, the gradient of
    its input written; per mixer intermediate, read once saved, its gradient written and read once.
    So a layer with input ``i``, intermediates ``s``, output ``o`` moves ``i + 2s + o`` forward and
    ``2i + 3s + o`` backward.
- Scan rows: one call of :func:`localmamba.ops.selective_scan` on copies of the arguments that a layer passed
  (same shapes, strides, dtypes, values), one row per distinct call; bytes = the tensor inputs read once
  and the output written once (forward), plus for the backward the inputs read again, the output's gradient
  read and every input's gradient written. FLOPs: the rule above (x3 with the backward). The scan runs on
  the CUDA cores in fp32, so its compute fraction is against an fp32 matmul with TF32 off.
- Ceilings (measured here): bandwidth from a large device-to-device copy (bytes read + written / time);
  compute from large bf16, TF32 and fp32 (TF32 off) matmuls. fp32 inference is compared with TF32, the
  bf16 modes with bf16.
- Times: median of ``--steps`` after ``--warmup`` calls (CUDA events on the GPU); peak memory per mode.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time

import timm
import torch
import torch.nn as nn

import localmamba  # noqa: F401  (registers the models)
from localmamba import ops
from localmamba.layers import SS2D, MultiDirectionMamba
from localmamba.models import flops as lm_flops

from bench_models import cuda_time, make_train_step, median_time

MODELS = {"LocalVim-T": "local_vim_tiny", "LocalVMamba-T": "local_vssm_tiny"}
MODES = ("infer fp32", "infer bf16", "train bf16")
SKIP = ("Identity", "Dropout", "DropPath")  # leaf modules that move nothing of their own




# ------------------------------------------------------------------------------------------- ceilings
def ceilings(device: str, steps: int) -> dict:
    """Bytes/s of a large copy and FLOP/s of large bf16, TF32 and fp32 matmuls, measured now."""
    gpu = device == "cuda"
    n_copy, n_mm = (2 ** 29, 8192) if gpu else (2 ** 23, 512)  # 2 GiB / 32 MiB of fp32
    src = torch.randn(n_copy, device=device)
    dst = torch.empty_like(src)
    t = median_time(lambda: dst.copy_(src), device, steps, 2)
    out = {"copy_bytes_per_s": 2 * src.numel() * 4 / t}
    del src, dst
    tf32 = torch.backends.cuda.matmul.allow_tf32
    for key, dtype, allow in (("bf16", torch.bfloat16, tf32), ("tf32", torch.float32, True),
                              ("fp32", torch.float32, False)):
        a = torch.randn(n_mm, n_mm, device=device, dtype=dtype)
        b = torch.randn(n_mm, n_mm, device=device, dtype=dtype)
        torch.backends.cuda.matmul.allow_tf32 = allow
        try:
            t = median_time(lambda: a @ b, device, steps, 2)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
        out[f"{key}_flop_per_s"] = 2 * n_mm ** 3 / t
    return out


# ------------------------------------------------------------------------------------------- recording
def _clone(t):
    return torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device=t.device).copy_(t.detach()) \
        if isinstance(t, torch.Tensor) else t


def _nbytes(t) -> int:
    if isinstance(t, torch.Tensor):
        return t.numel() * t.element_size()
    if isinstance(t, (tuple, list)):
        return sum(_nbytes(x) for x in t)
    return 0


def scan_flops(u: torch.Tensor, A: torch.Tensor) -> int:
    """9*B*L*D*N + B*D*L for u (B, D, L), A (D, N)."""
    B, D, L = u.shape
    return 9 * B * L * D * A.shape[1] + B * D * L


@contextlib.contextmanager
def record(model: nn.Module, e: int, calls: dict, layers: list):
    """Record, while a forward runs: every distinct selective-scan call (a copy of its arguments, the number
    of calls) into ``calls``, and each layer's (input, intermediate, output) bytes into ``layers``
    (module docstring); ``e``: bytes per mixer activation."""
    real = ops.selective_scan
    last = {}

    def scan(*args, **kwargs):
        key = tuple((k, (tuple(a.shape), a.stride(), a.dtype) if isinstance(a, torch.Tensor) else a)
                    for k, a in list(enumerate(args)) + sorted(kwargs.items()))
        if key not in calls:
            calls[key] = dict(args=[_clone(a) for a in args], kwargs={k: _clone(v) for k, v in kwargs.items()}, n=0)
        calls[key]["n"] += 1
        last["u"] = args[0]
        return real(*args, **kwargs)

    def mixer_hook(m, args, out):
        x = args[0]
        K, D, N, R = len(m.directions), m.d_inner, m.ssm.d_state, m.ssm.dt_rank
        B, T = x.shape[0], x[0].numel() // x.shape[-1]  # tokens (T or H*W)
        L = last.pop("u").shape[-1] if "u" in last else T  # the scanned length (padded windows), else T
        per_dir = B * K * L
        if isinstance(m, SS2D):
            inner = B * T * 2 * D + B * T * D + per_dir * (R + 2 * N) + 2 * per_dir * D + 2 * B * T * D
        else:
            inner = B * T * 2 * D + per_dir * D + per_dir * (R + 2 * N) + 2 * per_dir * D + B * T * D
        layers.append((type(m).__name__, e * x.numel(), e * inner, e * out.numel()))

    def leaf_hook(m, args, out):
        layers.append((type(m).__name__, _nbytes(args), 0, _nbytes(out)))

    mixers = [m for m in model.modules() if isinstance(m, (SS2D, MultiDirectionMamba))]
    inside = {id(x) for m in mixers for x in m.modules()}
    handles = [m.register_forward_hook(mixer_hook) for m in mixers]
    handles += [m.register_forward_hook(leaf_hook) for m in model.modules()
                if not list(m.children()) and id(m) not in inside and type(m).__name__ not in SKIP]
    try:
        with scan_replaced(scan):
            yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def scan_replaced(fn):
    """Every ``selective_scan`` that a localmamba module imported replaced by ``fn``, wherever it lives."""
    real = ops.selective_scan
    patched = [mod for name, mod in list(sys.modules.items())
               if name.startswith("localmamba") and getattr(mod, "selective_scan", None) is real]
    try:
        for mod in patched:
            mod.selective_scan = fn
        yield
    finally:
        for mod in patched:
            mod.selective_scan = real


def forward_macs(model: nn.Module, img: int) -> int:
    """fvcore's multiply-accumulates of one image, the selective scan charged 0 (counted separately)."""
    saved = lm_flops._selective_scan_flop_jit
    lm_flops._selective_scan_flop_jit = lambda inputs, outputs: 0
    # the scan as u plus 0 x the sums of its other inputs (ops fvcore does not count; the sums keep the
    # projections that feed the scan in the traced graph, which drops unused ops): tracing the torch scan's
    # chunk loop took 20 s for LocalVMamba-T at 224, for FLOPs that are counted by formula anyway
    def stand_in(u, *args, **kwargs):
        rest = [t for t in list(args) + list(kwargs.values()) if isinstance(t, torch.Tensor)]
        return u + 0 * sum(t.sum() for t in rest).to(u.dtype)

    try:  # wrapped: LocalVim's own .flops() formula would otherwise be taken
        with scan_replaced(stand_in):
            return lm_flops.paper_flops(nn.Sequential(model), img)
    finally:
        lm_flops._selective_scan_flop_jit = saved


# ------------------------------------------------------------------------------------------- rows
def row(ceil: dict, flops: float, nbytes: float, t: float, compute: str, **kw) -> dict:
    return dict(kw, ms=t * 1e3, gflop=flops / 1e9, gbytes=nbytes / 1e9, tflop_per_s=flops / t / 1e12,
                compute_frac=flops / t / ceil[f"{compute}_flop_per_s"], gbytes_per_s=nbytes / t / 1e9,
                bandwidth_frac=nbytes / t / ceil["copy_bytes_per_s"], ceiling=compute)


def peak_gib(device: str):
    return torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else None


def reset_peak(device: str):
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def scan_rows(label: str, mode: str, calls: dict, ceil: dict, device: str, steps: int, warmup: int) -> list[dict]:
    rows = []
    for i, c in enumerate(calls.values()):
        try:
            rows.append(scan_row(f"scan {i + 1}", label, mode, c, ceil, device, steps, warmup))
        except Exception as e:  # noqa: BLE001  (one failing kernel must not cost the other rows)
            rows.append(dict(model=label, mode=mode, part=f"scan {i + 1}", error=f"{type(e).__name__}: {e}"))
            print(f"!! {label} {mode} scan {i + 1}: {rows[-1]['error']}", flush=True)
    return rows


def scan_row(part: str, label: str, mode: str, c: dict, ceil: dict, device: str, steps: int, warmup: int) -> dict:
    """One recorded scan call timed alone, forward (inference modes) or forward and backward (training)."""
    train = mode.startswith("train")
    args, kwargs = c["args"], c["kwargs"]
    u, A = args[0], args[2]
    leaves = [a for a in list(args) + list(kwargs.values())
              if isinstance(a, torch.Tensor) and a.is_floating_point()]
    for a in leaves:
        a.requires_grad_(train)
    in_bytes = sum(_nbytes(a) for a in list(args) + list(kwargs.values()))
    reset_peak(device)
    with torch.set_grad_enabled(train):
        out = ops.selective_scan(*args, **kwargs)
    out_bytes, dout = _nbytes(out), torch.randn_like(out) if train else None
    del out  # and its graph
    if train:

        def fn():
            o = ops.selective_scan(*args, **kwargs)
            torch.autograd.grad(o, leaves, dout, allow_unused=True)
        nbytes = 2 * (in_bytes + out_bytes) + in_bytes  # fwd: in + out; bwd: in + dout + d(in)
    else:
        def fn():
            with torch.no_grad():
                ops.selective_scan(*args, **kwargs)
        nbytes = in_bytes + out_bytes
    t = median_time(fn, device, steps, warmup)
    B, D, L = u.shape
    return row(ceil, scan_flops(u, A) * (3 if train else 1), nbytes, t, "fp32", model=label, mode=mode,
               part=f"{part} ({'fwd+bwd' if train else 'fwd'}) B={B} D={D} L={L} N={A.shape[1]} {u.dtype} "
                    f"x{c['n']}/step", peak_gib=peak_gib(device))


def bench_model(label: str, name: str, args, ceil: dict) -> list[dict]:
    dev, b, img = args.device, args.batch_size, args.img_size
    model = timm.create_model(name)
    n_params = sum(p.numel() for p in model.parameters())
    try:  # on the CPU (before .to(dev)): the paths the counter traces are the CPU ones, and it takes ~1 s
        macs = forward_macs(model, img) * b
    except Exception as e:  # noqa: BLE001  (a broken counter must not cost the timings)
        print(f"!! {label}: fvcore could not count ({type(e).__name__}: {e}); its FLOP columns are nan", flush=True)
        macs = float("nan")
    model = model.to(dev)
    x = torch.randn(b, 3, img, img, device=dev)
    y = torch.randint(0, model.num_classes, (b,), device=dev)
    rows = []
    for mode in MODES:
        train, bf16 = mode.startswith("train"), "bf16" in mode
        model.train(train)
        if train:
            step, opt = make_train_step(model, x, y, autocast=True)
        else:
            def step():
                with torch.no_grad(), torch.autocast(dev, dtype=torch.bfloat16, enabled=bf16):
                    model(x)
        reset_peak(dev)
        t = median_time(step, dev, args.steps, args.warmup)
        peak = peak_gib(dev)
        del step
        if train:
            del opt
            model.zero_grad(set_to_none=True)
        # counted after the timing, so that the copies of the scan arguments are not in the step's peak
        calls, layers = {}, []
        with torch.no_grad(), torch.autocast(dev, dtype=torch.bfloat16, enabled=bf16), \
                record(model, 2 if bf16 else 4, calls, layers):
            model(x)
        scan_f = sum(scan_flops(c["args"][0], c["args"][2]) * c["n"] for c in calls.values())
        fwd_flops = 2 * macs + scan_f
        by_type = {"weights": (40 if train else 4) * n_params}  # the floor's bytes by layer type (JSON)
        for kind, i, s, o in layers:
            by_type[kind] = by_type.get(kind, 0) + i + 2 * s + o + (2 * i + 3 * s + o if train else 0)
        flops, nbytes = (3 if train else 1) * fwd_flops, sum(by_type.values())
        rows.append(row(ceil, flops, nbytes, t, "bf16" if bf16 else "tf32", model=label, mode=mode,
                        part=f"step ({n_params / 1e6:.1f}M params)", img_per_s=b / t, peak_gib=peak,
                        scan_gflop=scan_f / 1e9 * (3 if train else 1), gbytes_by_layer_type={
                            k: v / 1e9 for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])}))
        rows += scan_rows(label, mode, calls, ceil, dev, args.steps, args.warmup)
        del calls
    del model
    return rows


def markdown(rows: list[dict]) -> str:
    head = ("| model | mode | part | ms | img/s | GFLOP | GB moved (floor) | TFLOP/s | % of compute ceiling "
            "| GB/s | % of bandwidth | peak GiB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['mode']} | {r['part']}: {r['error'][:200]} |" + " |" * 9)
            continue
        img_s = f"{r['img_per_s']:.0f}" if "img_per_s" in r else ""
        peak = f"{r['peak_gib']:.2f}" if r.get("peak_gib") is not None else ""
        lines.append(f"| {r['model']} | {r['mode']} | {r['part']} | {r['ms']:.2f} | {img_s} | {r['gflop']:.1f} | "
                     f"{r['gbytes']:.2f} | {r['tflop_per_s']:.2f} | {100 * r['compute_frac']:.1f} ({r['ceiling']}) | "
                     f"{r['gbytes_per_s']:.0f} | {100 * r['bandwidth_frac']:.1f} | {peak} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--batch-size", type=int, default=None, help="default: 128 on cuda, 2 on cpu")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=None, help="timed repeats (median); default 10 cuda, 2 cpu")
    ap.add_argument("--warmup", type=int, default=None, help="untimed calls first; default 3 cuda, 1 cpu")
    ap.add_argument("--out", help="write the rows, ceilings and counting method here (JSON)")
    args = ap.parse_args()
    gpu = args.device == "cuda"
    args.batch_size = args.batch_size or (128 if gpu else 2)
    args.steps = args.steps or (10 if gpu else 2)
    args.warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    t0 = time.perf_counter()
    ceil = ceilings(args.device, args.steps)
    print({k: f"{v:.3e}" for k, v in ceil.items()}, flush=True)
    rows = []
    for label in args.models:
        try:
            rows += bench_model(label, MODELS[label], args, ceil)
        except Exception as e:  # noqa: BLE001  (the other model's rows still come)
            rows.append(dict(model=label, mode="", part="model", error=f"{type(e).__name__}: {e}"))
            print(f"!! {label}: {rows[-1]['error']}", flush=True)
            if gpu:
                torch.cuda.empty_cache()
        print(f"{label} done at {time.perf_counter() - t0:.0f} s", flush=True)
    info = dict(device=torch.cuda.get_device_name() if gpu else "cpu", torch=torch.__version__,
                batch_size=args.batch_size, img_size=args.img_size, steps=args.steps, ceilings=ceil, rows=rows,
                method=__doc__, seconds=time.perf_counter() - t0)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(info, f, indent=1)
    print(f"\n{info['device']}, batch {args.batch_size} at {args.img_size} px; ceilings: copy "
          f"{ceil['copy_bytes_per_s'] / 1e9:.0f} GB/s, bf16 {ceil['bf16_flop_per_s'] / 1e12:.0f}, tf32 "
          f"{ceil['tf32_flop_per_s'] / 1e12:.0f}, fp32 {ceil['fp32_flop_per_s'] / 1e12:.1f} TFLOP/s\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
