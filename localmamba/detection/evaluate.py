"""COCO box and mask AP of a trained detector: ``python -m localmamba.detection.evaluate``.

    python -m localmamba.detection.evaluate --checkpoint runs/det/last.pth --data-dir /data/coco --split val2017
    torchrun --nproc_per_node 8 -m localmamba.detection.evaluate --checkpoint ... --data-dir ...

The model and its sizes come from the training checkpoint's config; the images it evaluates are
the ``--split`` of ``--data-dir``, or with ``--holdout N`` (as in training) the held-out images of the
training split. Prints the table and writes ``--json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from ..engine import distributed as dist_utils
from ..engine.checkpoint import CheckpointError, load_checkpoint, write_text_atomic
from ..engine.cli import run_command
from .data import CocoInstances, split_ids
from .evaluation import coco_evaluate, format_table, predict_coco
from .train import CHECKPOINT_FORMAT, DetConfig, build_model, eval_loader


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m {__name__}", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="last.pth of python -m localmamba.detection.train")
    p.add_argument("--data-dir", help="COCO folder (default: the training run's)")
    p.add_argument("--split", help="split to evaluate (default: the run's val split)")
    p.add_argument("--holdout", type=int, help="evaluate the N images held out of the training split (default: the run's)")
    p.add_argument("--split-seed", type=int, help="seed of that split (default: the run's)")
    p.add_argument("--min-size", type=int, help="shorter side at test time (default: the run's largest)")
    p.add_argument("--max-size", type=int)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--json", help="write the metrics here (default: next to the checkpoint, eval_SPLIT.json)")
    p.add_argument("--score-thresh", type=float, default=0.05, help="keep detections scoring at least this")
    p.add_argument("--results-json", help="also write the detections (boxes, RLE masks) in COCO's result format here")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    info = dist_utils.init_distributed(args.device)
    try:
        ckpt = load_checkpoint(args.checkpoint)
        if not (isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT):
            raise CheckpointError(f"{args.checkpoint} is not a checkpoint of python -m localmamba.detection.train")
        known = {f.name for f in dataclasses.fields(DetConfig)}
        cfg = DetConfig(**{k: v for k, v in ckpt["config"].items() if k in known})
        for name in ("data_dir", "holdout", "split_seed", "max_size"):
            if getattr(args, name) is not None:
                setattr(cfg, name, getattr(args, name))
        cfg.min_size = [args.min_size or max(cfg.min_size)]
        split = args.split or (cfg.train_split if cfg.holdout else cfg.val_split)
        data = CocoInstances(cfg.data_dir, split)
        if cfg.holdout and split == cfg.train_split:
            data = data.subset(split_ids(data.ids, cfg.holdout, cfg.split_seed)[1])
        model = build_model(cfg).to(info.device)
        model.load_state_dict(ckpt["model"])
        model.roi_heads.score_thresh = args.score_thresh
        amp = getattr(torch, cfg.amp_dtype) if args.amp else None
        results = predict_coco(model, eval_loader(data, info, args.batch_size, args.workers), info.device, amp,
                               progress=info.is_main and args.progress)
        metrics = coco_evaluate(data.coco, results, data.ids)
        if info.is_main and args.results_json:  # the detections in COCO's result format (e.g. for test-dev)
            write_text_atomic(args.results_json, json.dumps(results))
        if info.is_main:
            print(f"{cfg.model} on {len(data)} images of {split} ({cfg.data_dir})")
            print(format_table(metrics))
            path = Path(args.json) if args.json else Path(args.checkpoint).with_name(f"eval_{split}.json")
            write_text_atomic(path, json.dumps(dict(model=cfg.model, split=split, images=len(data), metrics=metrics), indent=1))
        return metrics
    finally:
        if info.distributed:
            dist_utils.cleanup()


def main(argv=None) -> dict:
    return run(parse_args(argv))


if __name__ == "__main__":
    run_command(main, "python -m localmamba.detection.evaluate")
