"""Does direction search pay on CIFAR-10? Search, then train four direction sets with one recipe, in one GPU call.

    # one H200, about 8 minutes in all (the epochs are chosen to fit --budget-s); --export copies the
    # results and every run's metrics (no checkpoints) to a folder as they come
    python benchmarks/search_cifar.py --data data/cifar10_train_jpeg.npz --out runs/search_cifar \\
        --backend triton --budget-s 480 --export $OUT/search_cifar
    # more training seeds in a later call, with the directions already searched
    python benchmarks/search_cifar.py --data ... --out runs/search_cifar --skip-search --seeds 1 --epochs E
    # the tables again, from what is in --out (also after a run that was cut off)
    python benchmarks/search_cifar.py --out runs/search_cifar --report
    # a CPU smoke test on generated images (a few minutes on 2 cores)
    python benchmarks/search_cifar.py --fake --out /tmp/search_smoke --device cpu --budget-s 120 \\
        --override '{"batch_size": 16, "max_steps_per_epoch": 2, "fake_train_size": 64, "fake_val_size": 32}' \\
        --model-kwargs '{"depth": 2, "embed_dim": 32}'

1. Search: the LocalVim-T CIFAR supernet (12 layers, all 8 candidates h, h_flip, v, v_flip, w2, w2_flip, w4,
   w4_flip per layer) trains on 45,000 CIFAR-10 images with ``configs/search_cifar10_local_vim.yaml``
   (``python -m localmamba.search``'s workflow); each layer keeps its 4 most probable directions.
2. Train, with that same recipe and one number of epochs: (a) ``searched``: local_vim_tiny_cifar with the
   searched directions; (b) ``paper``: local_vim_tiny_cifar as registered (the paper's LocalVim-T search, w7
   made w4); (c) ``random``: 4 of the 8 candidates per layer drawn with ``--random-seed``; (d) ``vim``:
   vim_tiny_cifar (h, h_flip in every layer). Searched and random go first: they are the question.
3. Report: the final-epoch top-1 on the 5,000 held-out images (class-stratified, split seed 0, the split of
   benchmarks/cifar_compare.py; never used for training or for the search) of each, as
   ``--out/results.json`` and ``--out/RESULTS.md``, rewritten after every epoch of every run.

Time: a short probe times a training step of the supernet, a 4-direction and a 2-direction model with the
run's settings (batch, bf16 autocast, backend, CUDA graphs: a model whose capture fails runs eagerly, and
the JSON says so); the epochs are then the most that fit ``--budget-s`` (re-planned after the search from its
measured speed). A run that cannot finish in the time left is skipped and marked so, rather than overrunning.
Figures: benchmarks/RESULTS.md, section "Direction search".
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import random
import shutil
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from localmamba.engine import train as engine  # noqa: E402
from localmamba.engine.config import Config, load_config_file  # noqa: E402
from localmamba.engine.cuda_graphs import graph_for_training  # noqa: E402
from localmamba.engine.distributed import read_metrics, resolve_device  # noqa: E402
from localmamba.engine.model import create_model  # noqa: E402
from localmamba.models.directions import CIFAR_CANDIDATES as CANDIDATES  # noqa: E402
from localmamba.models.directions import LOCAL_VIM_CIFAR_DIRECTIONS  # noqa: E402
from localmamba.search import run as search_run  # noqa: E402

SUPERNET = "local_vim_tiny_cifar_search"
#: the four trained variants, in the order they run: (model, how its directions are chosen)
VARIANTS = {"searched": "local_vim_tiny_cifar", "random": "local_vim_tiny_cifar",
            "paper": "local_vim_tiny_cifar", "vim": "vim_tiny_cifar"}
SPEED_CLASS = {"searched": "k4", "random": "k4", "paper": "k4", "vim": "k2"}


def random_directions(depth: int, k: int, seed: int) -> list[list[str]]:
    """k of the 8 candidates per layer, drawn uniformly without replacement, listed in candidate order."""
    rng = random.Random(seed)
    return [sorted(rng.sample(CANDIDATES, k), key=CANDIDATES.index) for _ in range(depth)]


def paper_directions() -> list[list[str]]:
    return [list(d) for d in LOCAL_VIM_CIFAR_DIRECTIONS]


# ------------------------------------------------------------------------------------------------------
# results, written as they come
# ------------------------------------------------------------------------------------------------------
class Results:
    """results.json and RESULTS.md in ``out``, rewritten on every save; with ``export``, a copy of them and of
    the small files worth keeping (directions, figure, every run's metrics.jsonl) there too, not checkpoints."""

    SMALL = ("results.json", "RESULTS.md", "search/directions.json", "search/search.png", "search/search_summary.json")

    def __init__(self, out: Path, export: Path | None = None):
        self.out, self.export = out, export
        self.path = out / "results.json"
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {"runs": {}}
        self.data.setdefault("runs", {})

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name("results.json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2))
        os.replace(tmp, self.path)
        (self.out / "RESULTS.md").write_text(markdown(self.data, self.out))
        if self.export is not None:
            runs = ["search/supernet", *self.data["runs"]]
            for rel in [*self.SMALL, *(f"{r}/metrics.jsonl" for r in runs), *(f"{r}/summary.json" for r in runs)]:
                if (self.out / rel).is_file():
                    (self.export / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(self.out / rel, self.export / rel)


def _run_row(out: Path, name: str) -> dict:
    """What a run's folder says now: epochs done, final and best held-out top-1, speed."""
    rows = read_metrics(out / name / "metrics.jsonl") if (out / name / "metrics.jsonl").is_file() else []
    if not rows:
        return {}
    top1 = [r["top1"] for r in rows if r.get("top1") is not None]
    return {"epochs_done": len(rows), "top1": rows[-1].get("top1"), "best_top1": max(top1) if top1 else None,
            "images_per_sec": sum(r.get("images_per_sec") or 0 for r in rows) / len(rows),
            "train_s": sum(r.get("epoch_time") or 0 for r in rows)}


def _fmt(v, spec=".2f") -> str:
    return "-" if v is None else format(v, spec)


def _local(directions) -> str:
    if not directions:
        return "-"
    n = sum(d.startswith("w") for ds in directions for d in ds)
    return f"{n}/{sum(len(ds) for ds in directions)}"


def markdown(data: dict, out: Path) -> str:
    lines = ["# Direction search on CIFAR-10: searched vs paper vs random vs Vim-style", ""]
    if data.get("command"):
        lines += ["Command: `" + data["command"] + "`", ""]
    if data.get("device"):
        lines += [f"Device: {data['device']}; plan: {json.dumps(data.get('plan', {}))}", ""]
    s = data.get("search") or {}
    if s.get("status") == "failed":
        lines += [f"Search: FAILED ({s.get('error')}); the variants below ran without it.", ""]
    elif s:
        now = _run_row(out / "search", "supernet")
        lines += [f"Search: {s.get('supernet', SUPERNET)}, {'CUDA graphs' if s.get('cuda_graph') else 'eager'}, {_fmt(now.get('epochs_done'), 'd') if now else '-'}/{s.get('epochs')} epochs, "
                  f"supernet held-out top-1 {_fmt(now.get('top1'))}, {_fmt(now.get('images_per_sec'), '.0f')} img/s, "
                  f"{_fmt(now.get('train_s'), '.0f')} s of training.", ""]
    lines += ["| variant | model | local scans | seed | epochs | held-out top-1 (final) | best | img/s | train s | note |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in data["runs"].items():
        now = _run_row(out, key)
        lines.append(f"| {r['variant']} | {r['model']} | {_local(r.get('directions'))} | {r['seed']} | "
                     f"{now.get('epochs_done', 0)}/{r['epochs']} | {_fmt(now.get('top1'))} | {_fmt(now.get('best_top1'))} | "
                     f"{_fmt(now.get('images_per_sec'), '.0f')} | {_fmt(now.get('train_s'), '.0f')} | "
                     f"{'; '.join(x for x in (r.get('mode', ''), r.get('note', '')) if x)} |")
    diffs = []
    for key, r in data["runs"].items():
        if r["variant"] == "searched":
            other = f"random_seed{r['seed']}"
            a, b = _run_row(out, key), _run_row(out, other)
            if a.get("top1") is not None and b.get("top1") is not None and other in data["runs"] \
                    and a["epochs_done"] == r["epochs"] and b["epochs_done"] == data["runs"][other]["epochs"]:
                diffs.append(a["top1"] - b["top1"])
    if diffs:
        lines += ["", f"searched - random, final top-1: {', '.join(f'{d:+.2f}' for d in diffs)} points "
                      f"(mean {sum(diffs) / len(diffs):+.2f} over {len(diffs)} seed(s))"]
    lines += ["", "Local scans: windowed directions (w2, w4 and their flips) among all directions of the layers.", ""]
    shown = set()
    for r in data["runs"].values():
        if r["variant"] in ("searched", "random") and r["variant"] not in shown and r.get("directions"):
            shown.add(r["variant"])
            lines.append(f"- {r['variant']}: " + " | ".join(",".join(d) for d in r["directions"]))
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------
# timing probe and plan
# ------------------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def probe(name: str, kwargs: dict, cfg, device: torch.device, steps: int) -> dict:
    """Images/s of training steps (forward, backward, AdamW) of ``name`` with the run's batch, autocast and
    CUDA-graph setting; a failing graph capture is reported and the model timed eagerly."""
    result = {"cuda_graph": bool(cfg.cuda_graph)}
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = create_model(name, 10, drop_path=cfg.drop_path, **kwargs).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, **({"fused": True} if device.type == "cuda" else {}))
    x = torch.randn(cfg.batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (cfg.batch_size,), device=device)
    amp = getattr(torch, cfg.amp_dtype) if cfg.amp else None
    fwd = model
    if cfg.cuda_graph:
        try:
            fwd = graph_for_training(model, x, autocast_dtype=amp)
        except Exception as e:  # noqa: BLE001 - any capture failure: time it eagerly and say so
            result.update(cuda_graph=False, cuda_graph_error=f"{type(e).__name__}: {e}"[:400])
            del model, opt
            gc.collect()
            torch.cuda.empty_cache()
            torch.manual_seed(0)
            model = fwd = create_model(name, 10, drop_path=cfg.drop_path, **kwargs).to(device).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-5, **({"fused": True} if device.type == "cuda" else {}))

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = F.cross_entropy(fwd(x), y)
        loss.backward()
        opt.step()

    step()
    step()
    _sync(device)
    result["setup_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    result["images_per_sec"] = cfg.batch_size * steps / (time.perf_counter() - t1)
    del model, opt, fwd
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def epoch_seconds(ips: float, n_train: int, n_val: int) -> float:
    """Predicted seconds of one engine epoch: training, evaluation (forward only, ~3x as fast), checkpoint."""
    return n_train / ips + n_val / (3 * ips) + 1.5


def fit_epochs(seconds: float, per_epoch: float, overhead: float, cap: int = 1000) -> int:
    return max(1, min(cap, math.floor((seconds - overhead) / per_epoch))) if per_epoch > 0 else 1


# ------------------------------------------------------------------------------------------------------
# the experiment
# ------------------------------------------------------------------------------------------------------
def base_config(args) -> Config:
    values = load_config_file(args.config)
    values.update(model_kwargs={**values.get("model_kwargs", {}), **args.model_kwargs, "backend": args.backend},
                  device=args.device, progress=False, resume=None)
    if args.fake:
        values.update(dataset="fake", data_dir=None, val_split=0, gpu_aug=values.get("gpu_aug", False))
    else:
        values.update(data_dir=args.data)
    values.update(args.override)
    cfg = Config(**values)
    device = resolve_device(cfg.device)
    cuda_graph = device.type == "cuda" if args.cuda_graph is None else args.cuda_graph
    return dataclasses.replace(cfg, cuda_graph=cuda_graph, device=str(device))


def _sizes(cfg) -> tuple[int, int, int]:
    """(train images, held-out images, steps per epoch) of the configured data, without loading it."""
    if cfg.dataset == "fake":
        n_train, n_val = cfg.fake_train_size, cfg.fake_val_size
    else:
        n_train, n_val = 50000 - cfg.val_split, cfg.val_split
    steps = n_train // cfg.batch_size
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)
    return steps * cfg.batch_size, n_val, steps


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def train_run(cfg, res: Results, key: str, device: torch.device) -> None:
    """One engine run into --out/KEY, the results rewritten after every epoch."""
    def on_epoch_end(epoch: int, row: dict) -> None:
        res.save()

    try:
        summary = engine.train(cfg, on_epoch_end=on_epoch_end)
        res.data["runs"][key].update(status="done", summary={k: summary.get(k) for k in (
            "last_top1", "best_top1", "epochs", "images_per_sec", "total_time", "params")})
    except Exception as e:  # noqa: BLE001 - one failed variant must not lose the others
        traceback.print_exc()
        res.data["runs"][key].update(status="failed", note=f"failed: {type(e).__name__}: {e}"[:300])
    res.save()
    _free(device)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="the CIFAR-10 .npz (50,000 training images) or torchvision folder")
    ap.add_argument("--fake", action="store_true", help="generated images instead (smoke test)")
    ap.add_argument("--out", default="runs/search_cifar")
    ap.add_argument("--config", default=str(REPO / "configs" / "search_cifar10_local_vim.yaml"),
                    help="the recipe of the search and of every trained variant")
    ap.add_argument("--budget-s", type=float, default=480.0, help="wall seconds for the whole call (default 480)")
    ap.add_argument("--backend", default="auto", help="selective-scan backend of every model (triton on GPUs)")
    ap.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=None,
                    help="CUDA graphs for training (default: on with CUDA; a model whose capture fails runs eagerly)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=None, help="epochs of every trained variant (default: fit the budget)")
    ap.add_argument("--search-epochs", type=int, default=None, help="epochs of the search (default: fit the budget)")
    ap.add_argument("--search-share", type=float, default=1.0,
                    help="search epochs per training epoch when both are fitted to the budget (default 1)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds of the four variants")
    ap.add_argument("--random-seed", type=int, default=0, help="seed of the random direction set")
    ap.add_argument("--k", type=int, default=4, help="directions per layer (searched and random)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--skip-search", action="store_true", help="use --out/search/directions.json")
    ap.add_argument("--supernet", default=SUPERNET, help=argparse.SUPPRESS)  # another supernet, for smoke tests
    ap.add_argument("--probe-steps", type=int, default=15, help="timed steps per model in the probe")
    ap.add_argument("--model-kwargs", type=json.loads, default={}, help="JSON, for every model (e.g. a tiny smoke size)")
    ap.add_argument("--override", type=json.loads, default={}, help="JSON of engine Config fields for every run")
    ap.add_argument("--export", help="also copy the results and the small files of every run (no checkpoints) here, "
                                     "after every epoch (e.g. a folder that is fetched back from a GPU machine)")
    ap.add_argument("--report", action="store_true", help="only rewrite RESULTS.md from --out and print it")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    out = Path(args.out)
    res = Results(out, Path(args.export) if args.export else None)
    if args.report:
        res.save()
        print((out / "RESULTS.md").read_text())
        return
    if not args.fake and not args.data:
        ap.error("--data is required (or --fake for a smoke test)")
    res.data["command"] = "python " + " ".join([os.path.relpath(__file__, REPO), *(argv or sys.argv[1:])])
    cfg = base_config(args)
    device = torch.device(cfg.device)
    res.data["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    res.data["torch"] = torch.__version__
    left = lambda: args.budget_s - (time.perf_counter() - start)  # noqa: E731
    n_train, n_val, steps = _sizes(cfg)
    tiny = args.model_kwargs  # the same size overrides for every model (smoke tests)

    # --- probe
    probe_steps = args.probe_steps if device.type == "cuda" else 1
    models = {"k4": ("local_vim_tiny_cifar", {}), "k2": ("vim_tiny_cifar", {})}
    if "depth" in tiny:  # resized smoke models need direction sets of their depth
        models = {"k4": ("local_vim_tiny_cifar", {"directions": paper_directions()[:tiny["depth"]]}),
                  "k2": ("vim_tiny_cifar", {"directions": [["h", "h_flip"]] * tiny["depth"]})}
    if not args.skip_search:
        models = {"super": (args.supernet, {}), **models}
    speeds, failed = {}, {}
    for key, (name, extra) in models.items():
        try:
            speeds[key] = probe(name, {**cfg.model_kwargs, **extra}, cfg, device, probe_steps)
        except Exception as e:  # noqa: BLE001 - a model that cannot train here: say so, run the others
            traceback.print_exc()
            failed[key] = f"{name} failed in the probe: {type(e).__name__}: {e}"[:400]
            _free(device)
            continue
        print(f"probe {name}: {speeds[key]['images_per_sec']:.0f} img/s, cuda graph {speeds[key]['cuda_graph']}, "
              f"setup {speeds[key]['setup_s']:.1f} s", flush=True)
    res.data["probe"] = {**speeds, **{k: {"error": v} for k, v in failed.items()}}
    if "super" in failed:
        args.skip_search = True
        res.data["search"] = {"supernet": args.supernet, "status": "failed", "error": failed["super"]}
    variants = [v for v in args.variants if SPEED_CLASS[v] in speeds and not (v == "searched" and "super" in failed)]
    if not speeds or not variants:
        res.save()
        sys.exit("every model failed in the probe: see results.json")
    graph = {k: v["cuda_graph"] for k, v in speeds.items()}
    # per run: data decode, model, capture (the first probe's setup also holds one-time kernel compiles)
    overhead = 6.0 + min(v["setup_s"] for v in speeds.values())
    per_epoch = {k: epoch_seconds(v["images_per_sec"], n_train, n_val) for k, v in speeds.items()}
    train_epoch = len(args.seeds) * sum(per_epoch[SPEED_CLASS[v]] for v in variants)
    n_runs = len(args.seeds) * len(variants) + (0 if args.skip_search else 1)
    budget = left() - n_runs * overhead
    if args.epochs is None and not args.skip_search and args.search_epochs is None:
        e = fit_epochs(budget, args.search_share * per_epoch["super"] + train_epoch, 0)
        search_epochs = max(1, round(args.search_share * e))
    else:
        search_epochs = args.search_epochs or args.epochs or fit_epochs(
            budget - (args.epochs or 0) * train_epoch, per_epoch.get("super", 1), 0)
    res.data["plan"] = {"search_epochs": None if args.skip_search else search_epochs, "budget_s": args.budget_s,
                        "steps_per_epoch": steps, "train_images": n_train, "held_out": n_val,
                        "predicted_epoch_s": {k: round(v, 1) for k, v in per_epoch.items()}}
    res.save()

    # --- search
    spec_path = out / "search" / "directions.json"
    if not args.skip_search:
        s_cfg = dataclasses.replace(cfg, model=args.supernet, epochs=search_epochs, output=str(out / "search"),
                                    cuda_graph=graph["super"], warmup_epochs=min(cfg.warmup_epochs, search_epochs / 5))
        res.data["search"] = {"supernet": args.supernet, "epochs": search_epochs, "cuda_graph": graph["super"],
                              "status": "running"}
        res.save()
        t0 = time.perf_counter()
        try:
            summary = search_run.search(s_cfg, k=args.k)
        except Exception as e:  # noqa: BLE001 - the other variants still answer part of the question
            traceback.print_exc()
            res.data["search"].update(status="failed", error=f"{type(e).__name__}: {e}"[:400])
            variants = [v for v in variants if v != "searched"]
            summary = None
        took = time.perf_counter() - t0
        if summary is not None:
            res.data["search"].update(status="done", seconds=round(took, 1), directions=summary["directions"],
                                      supernet_top1=summary["supernet_summary"]["last_top1"])
        # re-plan the training epochs with the speed the search actually had
        predicted = overhead + search_epochs * per_epoch["super"]
        factor = min(2.0, max(0.8, took / predicted)) if summary is not None else 1.0
        res.data["plan"]["search_seconds_vs_predicted"] = [round(took, 1), round(predicted, 1)]
        _free(device)
    else:
        factor = 1.0
        if "searched" in variants and not spec_path.is_file():
            sys.exit(f"--skip-search: no {spec_path}; run the search first")
    train_epoch = len(args.seeds) * sum(per_epoch[SPEED_CLASS[v]] for v in variants)
    searched = json.loads(spec_path.read_text())["directions"] if "searched" in variants else None
    depth = len(searched) if searched else tiny.get("depth", len(LOCAL_VIM_CIFAR_DIRECTIONS))
    epochs = args.epochs or fit_epochs(left() - len(args.seeds) * len(variants) * overhead * factor,
                                       train_epoch * factor, 0)
    res.data["plan"]["train_epochs"] = epochs
    sets = {"searched": searched, "random": random_directions(depth, args.k, args.random_seed),
            "paper": paper_directions()[:depth], "vim": [["h", "h_flip"]] * depth}
    print(f"training {len(variants)} variants x {len(args.seeds)} seed(s), {epochs} epochs each; "
          f"{left():.0f} s left", flush=True)

    # --- the trained variants
    for seed in args.seeds:
        for variant in variants:
            key = f"{variant}_seed{seed}"
            model = VARIANTS[variant]
            kwargs = dict(cfg.model_kwargs)
            if variant in ("searched", "random") or tiny:  # tiny: resized smoke models take sets of their depth
                kwargs["directions"] = sets[variant]
            cls = SPEED_CLASS[variant]
            need = (overhead + epochs * per_epoch[cls]) * factor
            res.data["runs"][key] = {"variant": variant, "model": model, "seed": seed, "epochs": epochs,
                                     "directions": sets[variant],
                                     "cuda_graph": graph[cls],
                                     "mode": "" if device.type != "cuda" or graph[cls] else "eager (no CUDA graph)"}
            if args.epochs is None and need > left():
                res.data["runs"][key].update(status="skipped", note=f"skipped: needs ~{need:.0f} s, {left():.0f} s left")
                res.save()
                continue
            run_cfg = dataclasses.replace(cfg, model=model, model_kwargs=kwargs, epochs=epochs, seed=seed,
                                          output=str(out / key), cuda_graph=graph[cls],
                                          warmup_epochs=min(cfg.warmup_epochs, epochs / 5))
            print(f"== {key}: {model}, {epochs} epochs ({left():.0f} s left)", flush=True)
            train_run(run_cfg, res, key, device)
    res.data["wall_s"] = round(time.perf_counter() - start, 1)
    res.save()
    print((out / "RESULTS.md").read_text(), flush=True)


if __name__ == "__main__":
    main()
