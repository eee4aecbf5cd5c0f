"""Detection on one GPU in one time-budgeted call: Mask R-CNN capacity on coco128, a held-out split,
and training speed against torchvision's ResNet-50 Mask R-CNN.

    PYTHONPATH=$PWD python benchmarks/detection_coco128.py --data data/coco128 --out runs/det --budget-s 480

Parts, each written to ``--out`` (results.json, results.md, train_metrics.jsonl) as soon as it ends:
  speed     training images/s and peak memory at 1333x800, batch 2, bf16 autocast, AdamW, for ``--model``
            and torchvision's ``maskrcnn_resnet50_fpn_v2`` (random init both: nothing can be downloaded),
            the same real images for both, in this process;
  capacity  ``--model`` trained from scratch on coco128 minus ``--holdout`` images for what the budget
            leaves, then COCO box/mask AP on those same training images (memorisation: target box AP >= 0.5)
  held-out  the same model on the ``--holdout`` images it never saw (a handful of images from a model
            trained from scratch on ~100: expect a number near zero, stated as it is).
The learning rate follows the 1x shape in time rather than epochs: linear warm-up, then x0.1 at 8/12
and 11/12 of the training budget.

CPU smoke test (tiny model, small images, a minute):
    PYTHONPATH=$PWD python benchmarks/detection_coco128.py --data ../shared/data/coco128 --out /tmp/det \\
        --device cpu --model mask_rcnn_test_local_vssm_fpn --budget-s 60 --train-size 128 192 \\
        --speed-size 128 192 --speed-steps 2 --speed-warmup 1 --batch-size 2 --eval-reserve-s 15 --holdout 8 \\
        --max-train-images 8 --workers 0

Data: any COCO-format folder (images and instances json); coco128 is in ../shared/data/coco128 beside the
checkout (copy it to data/coco128 for a GPU machine). Figures: benchmarks/RESULTS.md, section "Detection".
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

T_START = time.time()

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

try:
    import pycocotools  # noqa: F401
except ImportError:
    sys.exit("pycocotools is missing: pip install pycocotools (offline: pip install --no-index --find-links .whl pycocotools)")

from localmamba.detection import build_detector  # noqa: E402
from localmamba.detection.data import CocoInstances, collate, split_ids, train_transforms  # noqa: E402
from localmamba.detection.evaluation import evaluate, format_table  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="coco128 folder (train2017/, annotations/instances_train2017.json)")
    p.add_argument("--out", required=True, help="folder for results.json, results.md and train_metrics.jsonl")
    p.add_argument("--budget-s", type=float, default=480, help="wall-clock budget of the whole script, from its start")
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default="mask_rcnn_local_vssm_tiny_fpn")
    p.add_argument("--parts", nargs="+", default=["speed", "train"], choices=["speed", "train"])
    # speed
    p.add_argument("--speed-size", type=int, nargs=2, default=[800, 1333], metavar=("MIN", "MAX"),
                   help="the detectors' min_size / max_size (shorter side, longer-side cap)")
    p.add_argument("--speed-batch", type=int, default=2)
    p.add_argument("--speed-steps", type=int, default=15)
    p.add_argument("--speed-warmup", type=int, default=5)
    p.add_argument("--speed-max-s", type=float, default=60, help="stop timing a model after this many seconds")
    # training
    p.add_argument("--train-size", type=int, nargs=2, default=[512, 853], metavar=("MIN", "MAX"),
                   help="training and evaluation resize (coco128's images are 640x480: 512 is about native)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--drop-path", type=float, default=0.0, help="backbone drop-path rate (0: memorise freely)")
    p.add_argument("--clip-grad", type=float, default=10.0)
    p.add_argument("--flip", type=float, default=0.0, help="flip probability (0: pure memorisation)")
    p.add_argument("--holdout", type=int, default=16, help="images kept out of training for the held-out figure")
    p.add_argument("--max-train-images", type=int, default=0, help="use only this many training images (0: all)")
    p.add_argument("--eval-reserve-s", type=float, default=75, help="seconds kept for the two evaluations")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--amp", default="bf16", choices=["bf16", "none"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=sys.stderr.isatty(),
                   help="progress bars (default: on a terminal only, so a captured log stays short)")
    return p.parse_args(argv)


def left(args) -> float:
    return args.budget_s - (time.time() - T_START)


class Results:
    """results.json and results.md under ``out``, rewritten after every part."""

    def __init__(self, out: Path, args):
        self.out, self.data = out, dict(command=" ".join([Path(sys.executable).name] + sys.argv), args=vars(args),
                                        device=_device_name(args.device), torch=torch.__version__,
                                        host=platform.node())
        self.md: list[str] = []

    def add(self, key: str, value, md: str) -> None:
        self.data[key] = value
        self.md.append(md)
        (self.out / "results.json").write_text(json.dumps(self.data, indent=1))
        (self.out / "results.md").write_text(f"`{self.data['command']}` on {self.data['device']}, torch "
                                             f"{self.data['torch']}\n\n" + "\n\n".join(self.md) + "\n")
        print(md, flush=True)


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _amp(args, device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16")


def train_step(model, optimizer, images, targets, args, device) -> dict:
    with _amp(args, device):
        losses = model(images, targets)
    loss = sum(losses.values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if args.clip_grad:
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
    optimizer.step()
    return {k: v.detach() for k, v in losses.items()} | {"loss": loss.detach()}


def to_device(images, targets, device):
    return ([im.to(device, non_blocking=True) for im in images],
            [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets])


def speed(args, device, data: CocoInstances, results: Results) -> None:
    """Training images/s and peak memory of both detectors on the same fixed batches."""
    import torchvision

    n = args.speed_batch
    batches = [to_device(*collate([data[i * n + j] for j in range(n)]), device) for i in range(4)]
    lo, hi = args.speed_size
    rows = {}
    builders = {
        args.model: lambda: build_detector(args.model, min_size=lo, max_size=hi),
        "maskrcnn_resnet50_fpn_v2": lambda: torchvision.models.detection.maskrcnn_resnet50_fpn_v2(
            weights=None, weights_backbone=None, num_classes=91, min_size=lo, max_size=hi),
    }
    for name, build in builders.items():
        torch.manual_seed(args.seed)
        model = build().to(device).train()
        params = sum(p.numel() for p in model.parameters()) / 1e6
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
        for i in tqdm(range(args.speed_warmup), desc=f"warm-up {name}", leave=False, disable=not args.progress):
            train_step(model, opt, *batches[i % len(batches)], args, device)
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        done = 0
        for i in tqdm(range(args.speed_steps), desc=f"timing {name}", leave=False, disable=not args.progress):
            train_step(model, opt, *batches[i % len(batches)], args, device)
            done += 1
            if time.perf_counter() - t0 > args.speed_max_s:  # a slow device: fewer steps, not the whole budget
                break
        _sync(device)
        dt = time.perf_counter() - t0
        mem = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else float("nan")
        rows[name] = dict(images_per_s=n * done / dt, step_s=dt / done, steps=done, peak_mem_gib=mem, params_m=params)
        del model, opt
        if device.type == "cuda":
            torch.cuda.empty_cache()
    md = (f"### Training speed: Mask R-CNN, min_size {lo} / max_size {hi}, batch {n}, {args.amp} autocast, AdamW, "
          f"up to {args.speed_steps} timed steps after {args.speed_warmup} warm-up\n\n"
          "| model | params (M) | images/s | s/step | timed steps | peak memory (GiB) |\n|---|---:|---:|---:|---:|---:|\n" +
          "\n".join(f"| {k} | {r['params_m']:.1f} | {r['images_per_s']:.2f} | {r['step_s']:.3f} | {r['steps']} | "
                    f"{r['peak_mem_gib']:.2f} |" for k, r in rows.items()))
    results.add("speed", rows, md)


def lr_factor(step: int, frac: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then the 1x steps placed in time: x0.1 at 8/12, x0.01 at 11/12."""
    w = min(1.0, (step + 1) / warmup) if warmup else 1.0
    return w * (0.01 if frac >= 11 / 12 else 0.1 if frac >= 8 / 12 else 1.0)


def train_and_eval(args, device, data: CocoInstances, results: Results) -> None:
    train_ids, held_ids = split_ids(data.ids, args.holdout, args.seed)
    if args.max_train_images:
        train_ids = train_ids[: args.max_train_images]
    train_set = CocoInstances(images=data.images, ann_file=data.ann_file, drop_crowd=True,
                              transforms=train_transforms(flip=args.flip), ids=train_ids)
    torch.manual_seed(args.seed)
    lo, hi = args.train_size
    model = build_detector(args.model, min_size=lo, max_size=hi, drop_path_rate=args.drop_path).to(device)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([dict(params=decay), dict(params=no_decay, weight_decay=0.0)], lr=args.lr,
                            weight_decay=args.weight_decay)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=len(train_set) > args.batch_size,
                        collate_fn=collate, num_workers=args.workers, persistent_workers=args.workers > 0,
                        pin_memory=device.type == "cuda")
    t_train = time.time()
    budget = left(args) - args.eval_reserve_s
    if budget <= 0:
        results.add("training", dict(skipped="no time left"), f"### Training skipped: {left(args):.0f} s left, "
                    f"{args.eval_reserve_s:.0f} s kept for evaluation")
        return
    log = open(Path(args.out) / "train_metrics.jsonl", "w")
    step, epoch, stopped = 0, 0, "budget"
    bar = tqdm(desc="train", unit="step", disable=not args.progress)
    model.train()
    while time.time() - t_train < budget and stopped == "budget":
        for images, targets in loader:
            frac = (time.time() - t_train) / budget
            if frac >= 1:
                break
            for g in opt.param_groups:
                g["lr"] = args.lr * lr_factor(step, frac, args.warmup_steps)
            losses = train_step(model, opt, *to_device(images, targets, device), args, device)
            step += 1
            bar.update()
            if step % 20 == 0 or step == 1:
                row = dict(step=step, epoch=epoch, elapsed_s=round(time.time() - t_train, 1),
                           lr=opt.param_groups[0]["lr"], **{k: round(v.item(), 4) for k, v in losses.items()})
                log.write(json.dumps(row) + "\n")
                log.flush()
                bar.set_postfix(loss=row["loss"], epoch=epoch)
                if not args.progress and step % 100 == 0:
                    print(json.dumps(row), flush=True)
                if not math.isfinite(row["loss"]):
                    stopped = f"non-finite loss at step {step}"
                    break
        epoch += 1
    bar.close()
    log.close()
    train_s = time.time() - t_train
    info = dict(steps=step, epochs=epoch, train_s=round(train_s, 1), images=len(train_ids), stopped=stopped,
                images_per_s=step * args.batch_size / train_s)
    results.add("training", info, f"### Training: {args.model} from scratch on {len(train_ids)} coco128 images, "
                f"min_size {lo} / max_size {hi}, batch {args.batch_size}, AdamW lr {args.lr} wd {args.weight_decay}, "
                f"flip {args.flip}, drop-path {args.drop_path}: {step} steps ({epoch} epochs) in {train_s:.0f} s, stop: {stopped}")
    if stopped != "budget":
        return
    for key, ids, what in (("capacity", train_ids, "the training images (memorisation)"),
                           ("held_out", held_ids, f"{len(held_ids)} held-out images never trained on")):
        if not ids:
            continue
        subset = data.subset(ids)
        ev_loader = DataLoader(subset, batch_size=4, collate_fn=collate, num_workers=args.workers)
        t0 = time.time()
        metrics = evaluate(model, ev_loader, subset.coco, device,
                           amp_dtype=torch.bfloat16 if args.amp == "bf16" else None, progress=args.progress)
        results.add(key, dict(metrics=metrics, images=len(ids), eval_s=round(time.time() - t0, 1)),
                    f"### COCO AP on {what} ({len(ids)} images)\n\n{format_table(metrics)}")


def main(argv=None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    results = Results(out, args)
    data = CocoInstances(args.data, drop_crowd=True)  # crowd regions are no training targets; COCOeval reads the json
    if "speed" in args.parts:
        try:
            speed(args, device, data, results)
        except Exception as e:  # noqa: BLE001 - one GPU call: record it and still train
            import traceback

            traceback.print_exc()
            results.add("speed_error", f"{type(e).__name__}: {e}"[:2000], f"### Speed part failed: {type(e).__name__}: "
                        f"{str(e)[:300]}")
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if "train" in args.parts:
        train_and_eval(args, device, data, results)
    results.add("total_s", round(time.time() - T_START, 1), f"Total: {time.time() - T_START:.0f} s "
                f"(budget {args.budget_s:.0f} s)")


if __name__ == "__main__":
    main()
