"""Train a Mask R-CNN on a COCO-format folder: ``python -m localmamba.detection.train``.

    python -m localmamba.detection.train --config configs/detection/mask_rcnn_local_vssm_tiny_fpn_1x.yaml \\
        --data-dir /data/coco --backbone-checkpoint local_vssm_tiny.pth --amp
    torchrun --nproc_per_node 8 -m localmamba.detection.train --config ... --batch-size 2   # 16 images a batch

The same conventions as ``python -m localmamba.train``: a config file plus command-line overrides,
autocast, ``torchrun``, an atomic ``last.pth`` after every epoch and exact resume (``--resume auto``),
``metrics.jsonl`` (one row per epoch), a progress bar, a stop on a non-finite loss. The schedule is
mmdetection's: linear warm-up over ``warmup_iters`` steps, then the rate x ``lr_gamma`` at each epoch
of ``lr_steps``. After each ``eval_interval`` epochs (and the last) COCO box and mask AP are measured on
the validation split and written to ``metrics.jsonl`` and ``eval.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from ..engine import distributed as dist_utils
from ..engine.checkpoint import (CheckpointError, get_rng_state, load_checkpoint, save_checkpoint, set_rng_state,
                                 write_jsonl, write_text_atomic)
from ..engine.cli import run_command
from ..engine.config import ConfigError
from .builders import build_detector
from .data import CocoInstances, collate, split_ids, train_transforms
from .evaluation import evaluate, format_table

CHECKPOINT_FORMAT = "localmamba.detection.train"


@dataclass
class DetConfig:
    """Every option of a detection run; the command line has one ``--option-name`` per field."""

    model: str = "mask_rcnn_local_vssm_tiny_fpn"
    num_classes: int = 91  # COCO category ids as labels (1..90) plus background
    backbone_checkpoint: Optional[str] = None
    drop_path: Optional[float] = None
    neck_channels: Optional[int] = None
    mask_head_channels: Optional[int] = None
    box_head_size: Optional[int] = None
    detections_per_img: Optional[int] = None
    # data
    data_dir: Optional[str] = None
    train_split: str = "train2017"
    val_split: str = "val2017"
    holdout: int = 0  # > 0: validate on N images held out of the training split (coco128 has one split)
    split_seed: int = 0
    train_subset: int = 0  # train on the first N training images (0: all)
    val_subset: int = 0
    # augmentation; the detector resizes to a shorter side of min_size (random per batch if several)
    min_size: list = field(default_factory=lambda: [800])
    max_size: int = 1333
    flip: float = 0.5
    lsj_size: Optional[int] = None  # large-scale jitter to this square (ViTDet), before the detector's resize
    # optimisation (the Swin/LocalVMamba 1x recipe at 16 images a batch)
    epochs: int = 12
    batch_size: int = 2  # per process
    lr: float = 1e-4
    weight_decay: float = 0.05
    lr_steps: list = field(default_factory=lambda: [8, 11])
    lr_gamma: float = 0.1
    warmup_iters: int = 1000
    warmup_ratio: float = 0.001
    clip_grad: Optional[float] = None
    amp: bool = False
    amp_dtype: str = "bfloat16"
    # run
    output: Optional[str] = None
    resume: Optional[str] = None  # a checkpoint, or 'auto' for OUTPUT/last.pth (fresh start if absent)
    seed: int = 0
    device: str = "auto"
    workers: Optional[int] = None
    eval_interval: int = 1
    max_steps_per_epoch: int = 0  # for tests
    stop_after: int = 0  # end this invocation after N epochs (continue with --resume auto)
    progress: bool = True

    def __post_init__(self):
        if not self.data_dir:
            raise ConfigError("--data-dir is required: a COCO folder (train2017/, val2017/, annotations/)")
        if isinstance(self.min_size, int):
            self.min_size = [self.min_size]
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be positive")
        if self.output is None:
            self.output = os.path.join("runs", f"{self.model}_{Path(self.data_dir).name}")


def parse_args(argv=None, config_cls=DetConfig):
    """A config file (``--config``, YAML or JSON, keys = field names) overridden by command-line options."""
    import yaml

    p = argparse.ArgumentParser(prog=f"python -m {__name__}", argument_default=argparse.SUPPRESS,
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="YAML or JSON file of options; command-line options override it")
    for f in dataclasses.fields(config_cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, help=f"(default: {default})")
        elif isinstance(default, list):
            p.add_argument(flag, nargs="+", type=type(default[0]), help=f"(default: {default})")
        else:
            typ = {"Optional[int]": int, "Optional[float]": float, "int": int, "float": float}.get(str(f.type), str)
            p.add_argument(flag, type=typ, help=f"(default: {default})")
    args = vars(p.parse_args(argv))
    values = {}
    if args.get("config"):
        path = Path(args.pop("config"))
        if not path.is_file():
            raise ConfigError(f"config file not found: {path} (examples in configs/detection/)")
        values = yaml.safe_load(path.read_text()) or {}
        values = {k.replace("-", "_"): v for k, v in values.items()}
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(config_cls)})
        if unknown:
            raise ConfigError(f"{path}: unknown options {unknown}; the options are the fields of DetConfig "
                              f"(python -m localmamba.detection.train --help)")
    args.pop("config", None)
    values.update(args)
    try:
        return config_cls(**values)
    except TypeError as e:
        raise ConfigError(f"bad option value: {e}") from e


def build_datasets(cfg: DetConfig) -> tuple[CocoInstances, CocoInstances]:
    """(train, validation) sets: the val split, or ``holdout`` images of the train split."""
    train = CocoInstances(cfg.data_dir, cfg.train_split, drop_crowd=True,
                          transforms=train_transforms(flip=cfg.flip, lsj_size=cfg.lsj_size))
    if cfg.holdout:
        train_ids, val_ids = split_ids(train.ids, cfg.holdout, cfg.split_seed)
        val = CocoInstances(images=train.images, ann_file=train.ann_file, ids=val_ids)
        train = train.subset(train_ids)
    else:
        val = CocoInstances(cfg.data_dir, cfg.val_split)
    if cfg.train_subset:
        train = train.subset(train.ids[: cfg.train_subset])
    if cfg.val_subset:
        val = val.subset(val.ids[: cfg.val_subset])
    return train, val


def build_model(cfg: DetConfig, backbone_checkpoint: Optional[str] = None) -> torch.nn.Module:
    return build_detector(cfg.model, cfg.num_classes, backbone_checkpoint=backbone_checkpoint,
                          neck_channels=cfg.neck_channels, mask_head_channels=cfg.mask_head_channels,
                          box_head_size=cfg.box_head_size, min_size=tuple(cfg.min_size), max_size=cfg.max_size,
                          detections_per_img=cfg.detections_per_img, drop_path_rate=cfg.drop_path)


def lr_at(cfg: DetConfig, step: int, epoch: int) -> float:
    """mmdetection's schedule: linear warm-up from ``warmup_ratio`` over ``warmup_iters`` steps, steps at epochs."""
    lr = cfg.lr * cfg.lr_gamma ** sum(epoch >= s for s in cfg.lr_steps)
    if step < cfg.warmup_iters:
        lr *= cfg.warmup_ratio + (1 - cfg.warmup_ratio) * step / cfg.warmup_iters
    return lr


def eval_loader(dataset, info, batch_size: int, workers: int) -> DataLoader:
    """Each process takes every world_size-th image (no padding: no image is scored twice)."""
    part = Subset(dataset, range(info.rank, len(dataset), info.world_size))
    return DataLoader(part, batch_size=batch_size, collate_fn=collate, num_workers=workers)


def train(cfg: DetConfig) -> dict:
    """Train (or continue) as ``cfg`` says; returns the last evaluation's metrics."""
    info = dist_utils.init_distributed(cfg.device)
    try:
        return _train(cfg, info)
    finally:
        if info.distributed:
            dist_utils.cleanup()


def _train(cfg: DetConfig, info) -> dict:
    device, main = info.device, info.is_main
    out = Path(cfg.output)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    workers = cfg.workers if cfg.workers is not None else min(8, max(1, (os.cpu_count() or 1) // info.world_size))
    train_set, val_set = build_datasets(cfg)

    resume_path = out / "last.pth" if cfg.resume == "auto" else (Path(cfg.resume) if cfg.resume else None)
    ckpt = None
    if resume_path is not None and (cfg.resume != "auto" or resume_path.is_file()):
        ckpt = load_checkpoint(resume_path)
        if not (isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT):
            raise CheckpointError(f"{resume_path} is not a detection training checkpoint; pass "
                                  "--backbone-checkpoint for classification weights")
        if ckpt["config"]["model"] != cfg.model:
            raise CheckpointError(f"{resume_path} holds a {ckpt['config']['model']}, not the {cfg.model} asked for")

    torch.manual_seed(cfg.seed)
    model = build_model(cfg, None if ckpt else cfg.backbone_checkpoint).to(device)
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]  # norms, biases, pos_embed
    optimizer = torch.optim.AdamW([dict(params=decay), dict(params=no_decay, weight_decay=0.0)], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    start_epoch, step, history = 0, 0, []
    if ckpt:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, step, history = ckpt["epoch"], ckpt["step"], ckpt["history"]
        set_rng_state(ckpt["rng"])
        if main:
            print(f"resumed from {resume_path} at epoch {start_epoch}")
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if info.distributed else model
    amp_dtype = getattr(torch, cfg.amp_dtype) if cfg.amp else None
    sampler = torch.utils.data.DistributedSampler(train_set, info.world_size, info.rank, shuffle=True,
                                                  seed=cfg.seed, drop_last=True)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, collate_fn=collate,
                        num_workers=workers, drop_last=True, pin_memory=device.type == "cuda")
    steps = min(len(loader), cfg.max_steps_per_epoch or len(loader))
    if steps == 0:
        raise ConfigError(f"{len(train_set)} training images give no full batch of {cfg.batch_size} x "
                         f"{info.world_size} processes; lower --batch-size")
    metrics: dict = history[-1].get("eval", {}) if history else {}
    end = cfg.epochs if not cfg.stop_after else min(cfg.epochs, start_epoch + cfg.stop_after)
    for epoch in range(start_epoch, end):
        sampler.set_epoch(epoch)
        torch.manual_seed(cfg.seed + 1000 * epoch + info.rank)  # augmentation and sampling: a function of epoch
        ddp.train()
        t0, sums, n = time.time(), {}, 0
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not (main and cfg.progress))
        for i, (images, targets) in enumerate(loader):
            if i >= steps:
                break
            for g in optimizer.param_groups:
                g["lr"] = lr_at(cfg, step, epoch)
            images = [im.to(device, non_blocking=True) for im in images]
            targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                losses = ddp(images, targets)
            loss = sum(losses.values())
            if not math.isfinite(loss.item()):
                raise FloatingPointError(
                    f"non-finite loss at epoch {epoch + 1}, step {i + 1} ({ {k: v.item() for k, v in losses.items()} }): "
                    f"stopping. Lower --lr or set --clip-grad; the last checkpoint is from the previous epoch.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            optimizer.step()
            step += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            n += 1
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2g}")
            bar.update()
        bar.close()
        row = dict(epoch=epoch + 1, step=step, lr=optimizer.param_groups[0]["lr"], seconds=round(time.time() - t0, 2),
                   **{k: v / max(n, 1) for k, v in sums.items()})
        if (epoch + 1) % cfg.eval_interval == 0 or epoch + 1 == cfg.epochs:
            metrics = evaluate(model, eval_loader(val_set, info, cfg.batch_size, workers), val_set.coco, device,
                               img_ids=val_set.ids, amp_dtype=amp_dtype, progress=main and cfg.progress)
            row["eval"] = metrics
            if main:
                print(format_table(metrics))
                write_text_atomic(out / "eval.json", json.dumps(metrics, indent=1))
        history.append(row)
        if main:
            save_checkpoint(dict(format=CHECKPOINT_FORMAT, version=1, config=dataclasses.asdict(cfg), epoch=epoch + 1,
                                 step=step, model=model.state_dict(), optimizer=optimizer.state_dict(),
                                 history=history, rng=get_rng_state()), out / "last.pth")
            write_jsonl(out / "metrics.jsonl", history)
        dist_utils.barrier()
    return metrics


def main(argv=None) -> dict:
    return train(parse_args(argv))


if __name__ == "__main__":
    run_command(main, "python -m localmamba.detection.train")
