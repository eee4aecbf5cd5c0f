"""Training engine: one process, one GPU, or many through ``torchrun``.

Library: ``train(Config(...), model=None, hooks=None) -> summary dict`` (:func:`train`, which says how
search and detection reuse it). Command line (same options, dashes for underscores)::

    # CPU demo on generated images (a minute)
    python -m localmamba.train --model local_vim_tiny_cifar --dataset fake --epochs 2 --warmup-epochs 0

    # one GPU, CIFAR-10 from the JPEG .npz with 5,000 images held out, recipe from a file
    python -m localmamba.train --config configs/cifar10_local_vim_tiny.yaml \\
        --data-dir data/cifar10_train_jpeg.npz --output runs/c10_local_vim_tiny

    # 8 GPUs of one node, ImageNet folder (train/<class>/*, val/<class>/*), the paper's recipe
    torchrun --standalone --nproc_per_node 8 -m localmamba.train --model local_vim_tiny \\
        --dataset imagenet --data-dir /data/imagenet --batch-size 128 --amp --output runs/lvim_t

    # 2 nodes x 8 GPUs: run on every node, NODE_RANK 0 and 1, HOST = node 0's address
    torchrun --nnodes 2 --node_rank $NODE_RANK --nproc_per_node 8 \\
        --rdzv_backend c10d --rdzv_endpoint HOST:29500 --rdzv_id lvim_t \\
        -m localmamba.train --model local_vim_tiny --dataset imagenet --data-dir /data/imagenet ...

    # continue an interrupted run (output/last.pth) exactly where it stopped
    python -m localmamba.train ... --output runs/lvim_t --resume auto

Recipe defaults (the original LocalMamba ImageNet recipe): AdamW, lr 1e-3 for a global batch of 1024
scaled linearly with the global batch (``--lr`` is the rate at ``--lr-base-size``; per-process
``--batch-size`` x processes is the global batch), weight decay 0.04 (none on 1-D parameters and on
``model.no_weight_decay()`` names), cosine schedule stepped every iteration with 20 warm-up epochs
(warm-up lr 1e-6, min lr 1e-5), RandAugment ``rand-m9-mstd0.5-inc1``, random erasing 0.25, mixup 0.2 /
cutmix 1.0 with label smoothing 0.1, and the model's own drop-path rate unless ``--drop-path`` is given.

Data (:mod:`localmamba.engine.data`): CIFAR-10/100 (torchvision folder, image folder, or ``.npz``), ImageNet-style
image folders, ``fake`` generated images. ``--gpu-aug`` keeps a small in-memory dataset on the GPU and
augments there (pad-crop, flip, random erasing; mixup/cutmix as usual): the fast path for 32x32 data.

Multi-process: one process per device (``torchrun``), NCCL on CUDA and gloo on CPU, a
DistributedSampler whose order is a function of (seed, epoch), metrics summed over ranks; only rank 0
writes files. Outputs in ``--output``: ``metrics.jsonl`` (a row per epoch), ``last.pth`` (everything
needed to resume: model, optimizer, scheduler, AMP scaler, EMA, epoch, every rank's RNG states; written
atomically every epoch), ``best.pth`` (weights of the best top-1 epoch), ``summary.json``
(:mod:`localmamba.engine.checkpoint` writes and reads them all).

A run is a sequence of named steps, each a function below: :func:`build_data`, :func:`build_model`,
:func:`build_optimization`, :func:`wrap_for_training`, :func:`build_loss`, :func:`resume_run`, then per
epoch :func:`train_one_epoch`, :func:`validate`, :func:`save_epoch`, and at the end :func:`summarize`.

A mistake the user fixes (unknown model, option or config file, missing data, unreadable checkpoint) stops
the command with one line on stderr and exit status 2 (:mod:`localmamba.engine.cli`); a traceback means a bug.

The file is a little over 500 lines: about 50 of them are this guide and the command's help text, which
belong beside the steps they describe.
"""
from __future__ import annotations

import contextlib
import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn as nn

from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3

from ..models import compile_model
from . import data, distributed, loaders
from .checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, check_resumable, get_rng_state, load_checkpoint,
                         save_checkpoint, set_rng_state, write_jsonl, write_text_atomic)
from .config import Config, ConfigError, parse_args
from .cuda_graphs import graph_for_training
from .evaluate import evaluate_models
from .model import create_model


@dataclass
class Hooks:
    """Where code built on the engine (search, detection) joins a run; every hook runs on every rank.

    ``epoch_metrics(epoch, model) -> dict``: after validation, before ``metrics.jsonl`` and the checkpoint
    are written; its fields are added to the epoch's row (search logs its direction probabilities so).
    ``on_epoch_end(epoch, row)``: after the epoch's files are written (``epoch`` counts from 1).
    """

    epoch_metrics: Optional[Callable[[int, nn.Module], dict]] = None
    on_epoch_end: Optional[Callable[[int, dict], None]] = None


@dataclass
class Run:
    """What the steps of :func:`train` build and share: the data, the model and its optimisation."""

    cfg: Config
    info: distributed.DistInfo
    out: Path
    train_set: object = None
    val_set: object = None
    classes: list = field(default_factory=list)
    num_classes: int = 0
    train_loader: object = None
    val_loader: object = None
    steps: int = 0
    model: nn.Module = None  # the plain model: its state dict is what checkpoints hold
    train_model: nn.Module = None  # what the training step calls: compiled, DDP or CUDA-graphed ``model``
    optimizer: object = None
    scheduler: object = None
    scaler: object = None
    ema: Optional[ModelEmaV3] = None
    mixup: Optional[Mixup] = None
    loss_fn: nn.Module = None
    lr: float = 0.0
    global_batch: int = 0
    # progress, restored by resume_run
    start_epoch: int = 0
    best_top1: Optional[float] = None
    best_epoch: Optional[int] = None
    total_time: float = 0.0
    rows: list = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        return self.info.device

    @property
    def is_main(self) -> bool:
        return self.info.is_main


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # torch.compile


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _autocast(cfg: Config, device: torch.device):
    if not cfg.amp:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, cfg.amp_dtype))


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------
def train(config: Config, model: Optional[nn.Module] = None, hooks: Optional[Hooks] = None, *,
          on_epoch_end: Optional[Callable[[int, dict], None]] = None) -> dict:
    """Train (or continue training) as ``config`` says; returns the summary (also ``summary.json``).

    ``model``: a module built by the caller (a search supernet, a detector's classifier) instead of
    ``timm.create_model(config.model)``; ``config.model`` still names it in checkpoints, and resuming
    checks that name. ``hooks`` (:class:`Hooks`) add fields to each epoch's row and observe the run;
    ``on_epoch_end`` is short for ``Hooks(on_epoch_end=...)``. The summary has the run's figures
    (``best_top1``, ``images_per_sec``, ...), ``output`` and ``config``.

    Under ``torchrun`` the process group is created here and destroyed on return. An output folder that
    this call created is removed again when the run fails before writing anything into it.
    """
    hooks = hooks or Hooks()
    if on_epoch_end is not None:
        hooks = Hooks(epoch_metrics=hooks.epoch_metrics, on_epoch_end=on_epoch_end)
    info = distributed.init_distributed(config.device)
    owns_group = info.distributed
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.output)
    created = info.is_main and not out.exists()
    try:
        return _train(config, info, out, model, hooks)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # no empty folder left behind by a run that failed to start
        raise
    finally:
        torch.set_num_threads(threads)
        if owns_group:
            distributed.cleanup()


def _train(cfg: Config, info: distributed.DistInfo, out: Path, model: Optional[nn.Module], hooks: Hooks) -> dict:
    if cfg.cuda_graph and (info.device.type != "cuda" or info.distributed):
        raise ConfigError(f"--cuda-graph needs one process on a CUDA device, got {info.device}"
                          f"{f' in {info.world_size} processes' if info.distributed else ''}")
    run = Run(cfg=cfg, info=info, out=out)
    if run.is_main:
        out.mkdir(parents=True, exist_ok=True)
    build_data(run)
    build_model(run, model)
    build_optimization(run)
    wrap_for_training(run)
    build_loss(run)
    resume_run(run)
    log = print if run.is_main else (lambda *a, **k: None)
    n_params = sum(p.numel() for p in run.model.parameters())
    log(f"{cfg.model}: {n_params / 1e6:.2f}M params | {cfg.dataset}: {len(run.train_set)} train / "
        f"{len(run.val_set) if run.val_set is not None else 0} val images, {len(run.classes)} classes, "
        f"{cfg.image_size}px | {info.world_size} x {run.device} | global batch {run.global_batch}, "
        f"lr {run.lr:.3g}, {run.steps} steps/epoch")

    run_ips: list[float] = []
    end_epoch = min(cfg.epochs, run.start_epoch + cfg.stop_after) if cfg.stop_after else cfg.epochs
    for epoch in range(run.start_epoch, end_epoch):
        t0 = time.perf_counter()
        loaders.set_loader_epoch(run.train_loader, epoch)
        train_loss, n_images, train_s = train_one_epoch(
            cfg, run.train_model, run.train_loader, run.optimizer, run.scheduler, run.scaler, run.loss_fn,
            run.mixup, run.ema, epoch, run.steps, run.device, show=run.is_main and cfg.progress)
        row = {"epoch": epoch + 1, "train_loss": train_loss, **validate(run)}
        if hooks.epoch_metrics is not None:
            row.update(hooks.epoch_metrics(epoch + 1, run.model))
        if cfg.sched_on == "epoch":
            run.scheduler.step(epoch + 1)
        epoch_time = time.perf_counter() - t0
        run.total_time += epoch_time
        ips = n_images / train_s
        run_ips.append(ips)
        row.update(lr=run.optimizer.param_groups[0]["lr"], images_per_sec=ips, epoch_time=epoch_time,
                   time=run.total_time)
        save_epoch(run, row)
        distributed.barrier()
        if hooks.on_epoch_end is not None:
            hooks.on_epoch_end(epoch + 1, row)
    summary = summarize(run, n_params, run_ips)
    if run.is_main:
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    return summary


# ----------------------------------------------------------------------------------------------
# Steps
# ----------------------------------------------------------------------------------------------
def build_data(run: Run) -> None:
    """Datasets, loaders and steps per epoch (with ``--download``, rank 0 fetches while the others wait)."""
    cfg, info = run.cfg, run.info
    workers = cfg.workers if cfg.workers is not None else loaders.default_workers(info.world_size)
    first = cfg.download and info.distributed
    if first and not info.is_main:
        distributed.barrier()
    train_set, val_set, classes = data.build_datasets(
        cfg.dataset, cfg.data_dir, img_size=cfg.img_size, val_split=cfg.val_split, split_seed=cfg.split_seed,
        train_subset=cfg.train_subset, val_subset=cfg.val_subset, download=cfg.download and info.is_main,
        in_memory=cfg.in_memory, num_classes=cfg.num_classes or 10, fake_train_size=cfg.fake_train_size,
        fake_val_size=cfg.fake_val_size, workers=max(workers, 4))
    if first and info.is_main:
        distributed.barrier()
    num_classes = cfg.num_classes or len(classes)
    if num_classes < len(classes):
        raise ConfigError(f"--num-classes {num_classes} is less than the dataset's {len(classes)} classes")
    if val_set is None:
        warnings.warn("no validation set (no val/test split and --val-split 0): top-1 is not measured")
    run.train_loader, run.val_loader = loaders.build_loaders(cfg, train_set, val_set, info, workers)
    steps = len(run.train_loader)
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)
    if steps == 0:
        raise ConfigError(f"{len(train_set)} training images give no full batch of {cfg.batch_size} "
                          f"x {info.world_size} processes; lower --batch-size")
    run.train_set, run.val_set, run.classes, run.num_classes, run.steps = \
        train_set, val_set, classes, num_classes, steps


def build_model(run: Run, model: Optional[nn.Module] = None) -> None:
    """The model on its device: the same initial weights on every rank (the seed), or the caller's."""
    cfg = run.cfg
    if model is None:
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.model, run.num_classes, drop_path=cfg.drop_path, img_size=cfg.img_size,
                             **cfg.model_kwargs)
    if cfg.grad_checkpointing:
        if not hasattr(model, "set_grad_checkpointing"):
            raise ConfigError(f"--grad-checkpointing: {type(model).__name__} has no set_grad_checkpointing()")
        model.set_grad_checkpointing(True)
    run.model = model.to(run.device)


def build_optimization(run: Run) -> None:
    """Optimizer (lr scaled with the global batch), per-step schedule and AMP gradient scaler."""
    cfg, device = run.cfg, run.device
    run.global_batch = cfg.batch_size * run.info.world_size
    run.lr = cfg.lr * run.global_batch / cfg.lr_base_size if cfg.lr_base_size else cfg.lr
    # torch's fused Adam(W) kernel on GPUs: one launch for all parameters instead of a few per tensor group
    fused = dict(fused=True) if device.type == "cuda" and cfg.opt.lower() in ("adam", "adamw") else {}
    run.optimizer = create_optimizer_v2(run.model, opt=cfg.opt, lr=run.lr, weight_decay=cfg.weight_decay,
                                        eps=cfg.opt_eps, **fused)
    run.scheduler, _ = create_scheduler_v2(
        run.optimizer, sched=cfg.sched, num_epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
        warmup_lr=cfg.warmup_lr, min_lr=cfg.min_lr, step_on_epochs=cfg.sched_on == "epoch",
        updates_per_epoch=run.steps)
    if cfg.warmup_epochs >= cfg.epochs:
        warnings.warn(f"warm-up ({cfg.warmup_epochs} epochs) is not shorter than the run ({cfg.epochs})")
    run.scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp and cfg.amp_dtype == "float16")


def wrap_for_training(run: Run) -> None:
    """``train_model``: the model compiled, in DDP or CUDA-graphed as asked, and the EMA copy."""
    cfg, device = run.cfg, run.device
    train_model = run.model
    if cfg.compile:
        train_model = compile_model(train_model, input_size=(3, cfg.image_size, cfg.image_size))
    if run.info.distributed:
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=cfg.ddp_find_unused)
    run.ema = ModelEmaV3(run.model, decay=cfg.ema_decay) if cfg.ema else None  # after DDP's broadcast of rank 0
    if cfg.cuda_graph:  # after the EMA's deep copy, which must not share the graphed forward
        sample = torch.zeros(cfg.batch_size, 3, cfg.image_size, cfg.image_size, device=device)
        run.model.train()
        amp_dtype = getattr(torch, cfg.amp_dtype) if cfg.amp else None
        train_model = graph_for_training(run.model, sample, autocast_dtype=amp_dtype)
    run.train_model = train_model


def build_loss(run: Run) -> None:
    """Mixup / cutmix with soft targets, else label smoothing, else cross-entropy."""
    cfg = run.cfg
    run.mixup = None
    if cfg.mixup_active:
        run.mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                          switch_prob=cfg.mixup_switch_prob, label_smoothing=cfg.smoothing,
                          num_classes=run.num_classes)
        run.loss_fn = SoftTargetCrossEntropy()
    elif cfg.smoothing > 0:
        run.loss_fn = LabelSmoothingCrossEntropy(cfg.smoothing)
    else:
        run.loss_fn = nn.CrossEntropyLoss()


def resume_run(run: Run) -> None:
    """Per-rank seeds, then the state of ``--resume`` (``auto``: OUTPUT/last.pth when it exists); rank 0
    rewrites ``metrics.jsonl`` with the rows up to the resumed epoch."""
    cfg, info, out = run.cfg, run.info, run.out
    log = print if run.is_main else (lambda *a, **k: None)
    seed_everything(cfg.seed + 1000 * info.rank)
    resume = cfg.resume
    if resume == "auto":
        resume = str(out / "last.pth") if (out / "last.pth").is_file() else None
        if resume is None:
            log(f"--resume auto: no {out / 'last.pth'}; starting from scratch")
    if resume:
        ckpt = load_checkpoint(resume)
        check_resumable(ckpt, resume, cfg.model)
        run.model.load_state_dict(ckpt["model"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
        run.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            run.scaler.load_state_dict(ckpt["scaler"])
        if run.ema is not None:
            if ckpt.get("ema") is not None:
                run.ema.load_state_dict(ckpt["ema"])
            else:
                run.ema = ModelEmaV3(run.model, decay=cfg.ema_decay)
        run.start_epoch = int(ckpt["epoch"])
        run.best_top1, run.best_epoch = ckpt.get("best_top1"), ckpt.get("best_epoch")
        run.total_time = float(ckpt.get("total_time", 0.0))
        rngs = ckpt["rng"]
        if len(rngs) == info.world_size:
            set_rng_state(rngs[info.rank])
        else:
            warnings.warn(f"checkpoint has RNG states of {len(rngs)} ranks, this run has "
                          f"{info.world_size}: continuing with fresh per-rank seeds")
        run.rows = [r for r in distributed.read_metrics(out / "metrics.jsonl") if r["epoch"] <= run.start_epoch]
        log(f"resumed from {resume} after epoch {run.start_epoch}")
        del ckpt
    if run.is_main:
        write_jsonl(out / "metrics.jsonl", run.rows)


def validate(run: Run) -> dict:
    """The epoch row's validation fields (the model's and, with ``--ema``, its EMA's), None without a
    validation set."""
    row = {"val_loss": None, "top1": None, "top5": None}
    if run.val_loader is None:
        return row
    models = [run.model] if run.ema is None else [run.model, run.ema.module]
    res = evaluate_models(models, run.val_loader, run.device, amp=run.cfg.amp, amp_dtype=run.cfg.amp_dtype)
    row.update(val_loss=res[0]["loss"], top1=res[0]["top1"], top5=res[0]["top5"])
    if run.ema is not None:
        row.update(ema_val_loss=res[1]["loss"], ema_top1=res[1]["top1"], ema_top5=res[1]["top5"])
    return row


def save_epoch(run: Run, row: dict) -> None:
    """Record the epoch: best top-1 so far, every rank's RNG state; rank 0 writes ``metrics.jsonl``,
    ``last.pth`` (and ``best.pth`` when top-1 improved) and prints the epoch's line."""
    cfg, epoch = run.cfg, row["epoch"]
    improved = row["top1"] is not None and (run.best_top1 is None or row["top1"] > run.best_top1)
    if improved:
        run.best_top1, run.best_epoch = row["top1"], epoch
    run.rows.append(row)
    rngs = distributed.all_gather_object(get_rng_state())  # a collective: every rank calls it
    if not run.is_main:
        return
    write_jsonl(run.out / "metrics.jsonl", run.rows)
    ema = run.ema
    state = {
        "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION,
        "model": run.model.state_dict(), "ema": ema.state_dict() if ema is not None else None,
        "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(), "epoch": epoch, "rng": rngs,
        "best_top1": run.best_top1, "best_epoch": run.best_epoch, "total_time": run.total_time,
        "config": asdict(cfg), "num_classes": run.num_classes, "classes": run.classes,
        "metrics": row,
    }
    save_checkpoint(state, run.out / "last.pth")
    if improved:
        best = {k: state[k] for k in ("format", "format_version", "model", "epoch", "config",
                                      "num_classes", "classes", "metrics")}
        best["ema"] = ema.module.state_dict() if ema is not None else None
        save_checkpoint(best, run.out / "best.pth")

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    print(f"epoch {epoch}/{cfg.epochs}  train_loss {row['train_loss']:.4f}  "
          f"val_loss {fmt(row['val_loss'], '.4f')}  top1 {fmt(row['top1'], '.2f')}  "
          f"top5 {fmt(row['top5'], '.2f')}  lr {row['lr']:.3g}  {row['images_per_sec']:.0f} img/s  "
          f"{row['epoch_time']:.1f} s", flush=True)


def summarize(run: Run, n_params: int, run_ips: list[float]) -> dict:
    """The run's figures and settings (``summary.json``)."""
    cfg, rows = run.cfg, run.rows
    last = rows[-1] if rows else {}
    return {
        "model": cfg.model, "dataset": cfg.dataset, "epochs": len(rows), "finished": len(rows) >= cfg.epochs,
        "params": n_params,
        "best_top1": run.best_top1, "best_epoch": run.best_epoch, "last_top1": last.get("top1"),
        "last_top5": last.get("top5"), "last_val_loss": last.get("val_loss"),
        "last_train_loss": last.get("train_loss"),
        "best_ema_top1": max((r["ema_top1"] for r in rows if r.get("ema_top1") is not None), default=None),
        "total_time": run.total_time, "images_per_sec": float(np.mean(run_ips)) if run_ips else None,
        "world_size": run.info.world_size, "device": str(run.device), "global_batch_size": run.global_batch,
        "lr": run.lr, "train_images": len(run.train_set),
        "val_images": len(run.val_set) if run.val_set is not None else 0,
        "num_classes": run.num_classes, "output": str(run.out), "config": asdict(cfg),
    }


def train_one_epoch(cfg: Config, model, loader, optimizer, scheduler, scaler, loss_fn, mixup, ema,
                    epoch: int, steps: int, device: torch.device, show: bool = True):
    """One pass over ``steps`` batches. Returns (mean loss over ranks, images over ranks, seconds).

    Non-finite losses are tracked on the device (no per-step sync on GPU) and checked every
    ``log_interval`` steps (every step on CPU); the first one stops the run with FloatingPointError.
    """
    from tqdm.auto import tqdm

    model.train()
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    check_every = 1 if device.type == "cpu" else max(1, cfg.log_interval)
    big = torch.tensor(2**62, device=device)
    bad_step = big.clone()  # first step (0-based) with a non-finite loss, over ranks
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    n_seen = 0
    bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not show, leave=False,
               dynamic_ncols=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    it = iter(loader)
    for step in range(steps):
        x, y = next(it)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if mixup is not None:
            x, y = mixup(x, y)  # y: r(B num_classes) soft targets
        optimizer.zero_grad(set_to_none=True)  # before the forward: a training graph copies kept grads
        with _autocast(cfg, device):
            logits = model(x)
            loss = loss_fn(logits, y)
        step_loss = loss.detach().float()
        bad_step = torch.minimum(bad_step, torch.where(torch.isfinite(step_loss), big, step))
        loss_sum += step_loss.double()
        n_seen += 1
        scaler.scale(loss).backward()
        if cfg.clip_grad:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        num_updates = epoch * steps + step + 1
        if ema is not None:
            ema.update(_unwrap(model), step=num_updates)
        if cfg.sched_on == "step":
            scheduler.step_update(num_updates=num_updates)
        last = step == steps - 1
        if (step + 1) % check_every == 0 or last:
            bad = distributed.all_reduce(bad_step.clone(), op=torch.distributed.ReduceOp.MIN).item()
            if bad < 2**62:
                bar.close()
                raise FloatingPointError(
                    f"non-finite loss at epoch {epoch + 1}, step {bad + 1} (of {steps} steps/epoch): stopping. "
                    f"Lower --lr (now {optimizer.param_groups[0]['lr']:.3g} at this step), add --clip-grad, "
                    "or check the data; the last checkpoint is from the previous epoch.")
        if show and ((step + 1) % max(1, cfg.log_interval) == 0 or last or device.type == "cpu"):
            bar.set_postfix(loss=f"{(loss_sum / n_seen).item():.4f}", lr=f"{optimizer.param_groups[0]['lr']:.3g}")
        bar.update(1)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    bar.close()
    stats = distributed.all_reduce(torch.stack([loss_sum, torch.tensor(float(n_seen), device=device,
                                                                      dtype=torch.float64)]))
    mean_loss = (stats[0] / stats[1]).item()
    batch = x.shape[0]
    return mean_loss, batch * steps * world, seconds


def main(argv=None) -> dict:
    """``python -m localmamba.train``: parse the command line (and ``--config``), then :func:`train`."""
    return train(parse_args(argv))
