"""Training engine: one process, one GPU, or many through ``torchrun``.

Library: ``train(Config(...)) -> summary dict``. Command line (same options, dashes for underscores)::

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

Data (``localmamba.data``): CIFAR-10/100 (torchvision folder, image folder, or ``.npz``), ImageNet-style
image folders, ``fake`` generated images. ``--gpu-aug`` keeps a small in-memory dataset on the GPU and
augments there (pad-crop, flip, random erasing; mixup/cutmix as usual): the fast path for 32x32 data.

Multi-process: one process per device (``torchrun``), NCCL on CUDA and gloo on CPU, a
DistributedSampler whose order is a function of (seed, epoch), metrics summed over ranks; only rank 0
writes files. Outputs in ``--output``: ``metrics.jsonl`` (a row per epoch), ``last.pth`` (everything
needed to resume: model, optimizer, scheduler, AMP scaler, EMA, epoch, every rank's RNG states; written
atomically every epoch), ``best.pth`` (weights of the best top-1 epoch), ``summary.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn as nn

import timm
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3

from . import data as D
from . import distributed as dist_utils
from .cuda_graphs import graph_for_training
from .evaluate import evaluate_models
from .models import CheckpointError, compile_model  # one error for any checkpoint that cannot be read, resumed or loaded

CHECKPOINT_FORMAT = "localmamba.train"
CHECKPOINT_VERSION = 1


def _f(default, help: str, **kw):
    """A Config field with its command-line help (``metadata``)."""
    meta = {"help": help, **kw}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Config:
    """Every option of a training run; the command line has one ``--option-name`` per field."""

    # model
    model: str = _f("local_vim_tiny", "timm model name (localmamba models are registered on import)")
    model_kwargs: dict = _f({}, "extra keyword arguments for timm.create_model, as JSON (added to a config file's)", type=json.loads)
    num_classes: Optional[int] = _f(None, "classes of the head (default: the dataset's)", type=int)
    img_size: Optional[int] = _f(None, "image size; passed to the model only when given "
                                       "(default per dataset: 32 CIFAR/fake, 224 ImageNet)", type=int)
    drop_path: Optional[float] = _f(None, "drop-path rate (default: the model's)", type=float)
    # data
    dataset: str = _f("imagenet", "dataset", choices=D.DATASETS)
    data_dir: Optional[str] = _f(None, "data folder or .npz file (see localmamba.data)")
    download: bool = _f(False, "let torchvision download CIFAR into --data-dir")
    val_split: int = _f(0, "hold out N training images (class-stratified, seed --split-seed) as the "
                           "validation set; for data without a val/test split (the .npz)", type=int)
    split_seed: int = _f(0, "seed of the held-out split and of subsets", type=int)
    train_subset: int = _f(0, "train on a stratified subset of N images (0: all)", type=int)
    val_subset: int = _f(0, "validate on a stratified subset of N images (0: all)", type=int)
    fake_train_size: int = _f(1000, "images in the generated training set (--dataset fake)", type=int)
    fake_val_size: int = _f(200, "images in the generated validation set (--dataset fake)", type=int)
    in_memory: Optional[bool] = _f(None, "decode an image folder into memory (default: CIFAR yes, "
                                         "ImageNet no)")
    gpu_aug: bool = _f(False, "keep an in-memory dataset on the device and augment there "
                              "(pad-crop, flip, erasing; no RandAugment): fast for 32x32 data")
    workers: Optional[int] = _f(None, "data-loader processes per rank (default min(8, cores/ranks))",
                                type=int)
    # augmentation
    train_crop: Optional[str] = _f(None, "'pad' (pad and random-crop, CIFAR) or 'rrc' (random resized "
                                         "crop, ImageNet); default by image size", choices=("pad", "rrc"))
    aa: Optional[str] = _f("rand-m9-mstd0.5-inc1", "timm auto-augment policy ('none' to disable)")
    reprob: float = _f(0.25, "random-erasing probability", type=float)
    mixup: float = _f(0.2, "mixup alpha (0 disables)", type=float)
    cutmix: float = _f(1.0, "cutmix alpha (0 disables)", type=float)
    mixup_prob: float = _f(1.0, "probability of applying mixup or cutmix to a batch", type=float)
    mixup_switch_prob: float = _f(0.5, "probability of cutmix instead of mixup when both are on",
                                  type=float)
    smoothing: float = _f(0.1, "label smoothing", type=float)
    interpolation: str = _f("bicubic", "resize interpolation")
    # optimisation
    epochs: int = _f(300, "epochs", type=int)
    batch_size: int = _f(128, "batch size per process", type=int)
    lr: float = _f(1e-3, "learning rate at a global batch of --lr-base-size", type=float)
    lr_base_size: int = _f(1024, "global batch at which --lr applies; the rate scales linearly "
                                 "(0: use --lr as is)", type=int)
    min_lr: float = _f(1e-5, "final learning rate of the cosine schedule", type=float)
    warmup_lr: float = _f(1e-6, "learning rate at the start of warm-up", type=float)
    warmup_epochs: float = _f(20, "warm-up epochs", type=float)
    weight_decay: float = _f(0.04, "weight decay (not on 1-D params or model.no_weight_decay())",
                             type=float)
    opt: str = _f("adamw", "timm optimizer name")
    opt_eps: float = _f(1e-8, "optimizer epsilon", type=float)
    sched: str = _f("cosine", "timm scheduler name")
    sched_on: str = _f("step", "step the schedule every iteration ('step') or epoch ('epoch')",
                       choices=("step", "epoch"))
    clip_grad: Optional[float] = _f(None, "clip the gradient norm to this value", type=float)
    amp: bool = _f(False, "mixed precision (autocast)")
    amp_dtype: str = _f("bfloat16", "autocast dtype; float16 adds a gradient scaler",
                        choices=("bfloat16", "float16"))
    ema: bool = _f(False, "keep an exponential moving average of the weights (timm ModelEmaV3)")
    ema_decay: float = _f(0.9998, "EMA decay", type=float)
    compile: bool = _f(False, "torch.compile the model")
    cuda_graph: bool = _f(False, "capture the training forward and backward as CUDA graphs (one CUDA device, "
                                 "one process, not with --compile): removes the host's op-dispatch cost, which "
                                 "bounds small models on fast GPUs (localmamba.cuda_graphs)")
    ddp_find_unused: bool = _f(False, "DDP find_unused_parameters")
    # run
    output: Optional[str] = _f(None, "output folder (default runs/MODEL_DATASET)")
    resume: Optional[str] = _f(None, "checkpoint to continue from, or 'auto' for OUTPUT/last.pth "
                                     "(a fresh start if absent)")
    seed: int = _f(0, "random seed (data order and augmentation are functions of seed and epoch)",
                   type=int)
    device: str = _f("auto", "auto, cpu, cuda or cuda:N (under torchrun: cuda:LOCAL_RANK)")
    threads: Optional[int] = _f(None, "CPU threads of torch in each process (default: torch's; small models "
                                      "on a CPU often run fastest with 1)", type=int)
    log_interval: int = _f(50, "steps between progress-bar updates (and loss checks on GPU)", type=int)
    max_steps_per_epoch: int = _f(0, "stop each epoch after N steps (0: full epochs; for tests)",
                                  type=int)
    stop_after: int = _f(0, "end this invocation after N epochs (0: run to --epochs), e.g. to fit a job's "
                            "time limit; continue later with --resume auto", type=int)
    progress: bool = _f(True, "show a progress bar")

    def __post_init__(self):
        if self.dataset not in D.DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(D.DATASETS)}")
        if self.aa is not None and str(self.aa).lower() in ("", "none", "null", "false"):
            self.aa = None
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be positive")
        if self.mixup_active and self.batch_size % 2:
            raise ValueError(f"mixup/cutmix need an even --batch-size, got {self.batch_size}")
        if self.cuda_graph and self.compile:
            raise ValueError("--cuda-graph and --compile do not combine; torch.compile has its own CUDA graphs "
                             "(mode='reduce-overhead'); choose one")
        if self.output is None:
            self.output = os.path.join("runs", f"{self.model}_{self.dataset}")

    @property
    def mixup_active(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    @property
    def image_size(self) -> int:
        return self.img_size or D.DEFAULT_IMG_SIZE[self.dataset]


# ----------------------------------------------------------------------------------------------
# Config files and the command line
# ----------------------------------------------------------------------------------------------
def load_config_file(path: str | os.PathLike) -> dict:
    """Options from a YAML or JSON file (keys are Config field names; dashes allowed)."""
    path = Path(path)
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as e:
            raise ImportError("reading YAML configs needs PyYAML: pip install pyyaml "
                              "(or write the config as JSON)") from e
        values = yaml.safe_load(text) or {}
    else:
        values = json.loads(text)
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of option: value")
    values = {k.replace("-", "_"): v for k, v in values.items()}
    names = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{path}: unknown options {unknown}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m localmamba.train", description=__doc__.split("\n\n")[0],
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--config", help="YAML or JSON file of options; command-line options override it")
    for f in dataclasses.fields(Config):
        meta = dict(f.metadata)
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_ = f"{meta.pop('help')} (default: {default})"
        if f.type in ("bool", "Optional[bool]") or isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_)
        else:
            p.add_argument(flag, help=help_, **meta)
    return p


def parse_args(argv=None) -> Config:
    args = vars(build_parser().parse_args(argv))
    values = load_config_file(args.pop("config")) if args.get("config") else {}
    args.pop("config", None)
    for key, value in args.items():  # a dict option (--model-kwargs) adds to the config file's keys
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            args[key] = {**values[key], **value}
    values.update(args)
    return Config(**values)


# ----------------------------------------------------------------------------------------------
# Model, RNG, checkpoints
# ----------------------------------------------------------------------------------------------
def create_model(name: str, num_classes: int, *, drop_path: Optional[float] = None,
                 img_size: Optional[int] = None, **kwargs) -> nn.Module:
    """``timm.create_model`` by name; ``drop_path`` and ``img_size`` are passed only when given.

    The localmamba models are registered already: this module imports ``localmamba.models``."""
    if drop_path is not None:
        kwargs["drop_path_rate"] = drop_path
    if img_size is not None:
        kwargs["img_size"] = img_size
    return timm.create_model(name, num_classes=num_classes, **kwargs)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state() -> dict:
    """Python, numpy, torch and CUDA generator states as lists and tensors (``weights_only``-safe)."""
    version, state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(state), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(s: dict) -> None:
    version, state, gauss = s["python"]
    random.setstate((version, tuple(state), gauss))
    kind, keys, pos, has_gauss, cached = s["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(s["torch"])
    if s.get("cuda") and torch.cuda.is_available() and len(s["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(s["cuda"])




def save_checkpoint(obj: dict, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path.tmp`` then ``os.replace``: a reader never sees a half-written file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> Any:
    """``torch.load(weights_only=True)`` with a clear error for a missing, truncated or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - zip/unpickling errors of every kind
        raise CheckpointError(
            f"cannot read checkpoint {path} ({path.stat().st_size} bytes): {type(e).__name__}: {e}. "
            "The file is truncated or corrupt (or holds objects weights_only loading refuses); "
            "restore it or resume from another checkpoint. Nothing was overwritten.") from e


def is_engine_checkpoint(ckpt) -> bool:
    return isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # torch.compile


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def _write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)


def _autocast(cfg: Config, device: torch.device):
    if not cfg.amp:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, cfg.amp_dtype))


def build_loaders(cfg: Config, train_set, val_set, info: dist_utils.DistInfo, workers: int):
    """Train and validation loaders (transforms set on the datasets here)."""
    size = cfg.image_size
    if cfg.gpu_aug:
        if not isinstance(train_set, D.InMemoryImages):
            raise ValueError("--gpu-aug needs an in-memory dataset (CIFAR, .npz, fake, or --in-memory)")
        if cfg.aa:
            warnings.warn(f"--gpu-aug does pad-crop, flip and random erasing only; --aa {cfg.aa} is ignored")
        common = dict(img_size=size, seed=cfg.seed, rank=info.rank, world_size=info.world_size)
        train_loader = D.DeviceLoader(train_set, cfg.batch_size, info.device, train=True,
                                      reprob=cfg.reprob, **common)
        val_loader = (D.DeviceLoader(val_set, cfg.batch_size, info.device, train=False, **common)
                      if val_set is not None else None)
        return train_loader, val_loader
    crop = cfg.train_crop or D.default_train_crop(size)
    train_set.transform = D.train_transform(size, crop, cfg.aa, cfg.reprob, interpolation=cfg.interpolation)
    pin = info.device.type == "cuda"
    common = dict(seed=cfg.seed, rank=info.rank, world_size=info.world_size, workers=workers, pin_memory=pin)
    train_loader = D.build_loader(train_set, cfg.batch_size, train=True, **common)
    val_loader = None
    if val_set is not None:
        val_set.transform = D.eval_transform(size, interpolation=cfg.interpolation)
        val_loader = D.build_loader(val_set, cfg.batch_size, train=False, **common)
    return train_loader, val_loader


def train(config: Config, on_epoch_end: Optional[Callable[[int, dict], None]] = None) -> dict:
    """Train (or continue training) as ``config`` says; returns the summary (also ``summary.json``).

    ``on_epoch_end(epoch, row)`` is called on every rank after each epoch's checkpoint is written.
    Under ``torchrun`` the process group is created here and destroyed on return.
    """
    info = dist_utils.init_distributed(config.device)
    owns_group = info.distributed
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train(config, info, on_epoch_end)
    finally:
        torch.set_num_threads(threads)
        if owns_group:
            dist_utils.cleanup()


def _train(cfg: Config, info: dist_utils.DistInfo, on_epoch_end) -> dict:
    device, main = info.device, info.is_main
    if cfg.cuda_graph and (device.type != "cuda" or info.distributed):
        raise ValueError(f"--cuda-graph needs one process on a CUDA device, got {device}"
                         f"{f' in {info.world_size} processes' if info.distributed else ''}")
    out = Path(cfg.output)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    log = print if main else (lambda *a, **k: None)
    workers = cfg.workers if cfg.workers is not None else min(8, max(1, (os.cpu_count() or 1) // info.world_size))

    # --- data (with --download, rank 0 fetches while the others wait)
    first = cfg.download and info.distributed
    if first and not main:
        dist_utils.barrier()
    train_set, val_set, classes = D.build_datasets(
        cfg.dataset, cfg.data_dir, img_size=cfg.img_size, val_split=cfg.val_split, split_seed=cfg.split_seed,
        train_subset=cfg.train_subset, val_subset=cfg.val_subset, download=cfg.download and main,
        in_memory=cfg.in_memory, num_classes=cfg.num_classes or 10, fake_train_size=cfg.fake_train_size,
        fake_val_size=cfg.fake_val_size, workers=max(workers, 4))
    if first and main:
        dist_utils.barrier()
    num_classes = cfg.num_classes or len(classes)
    if num_classes < len(classes):
        raise ValueError(f"--num-classes {num_classes} is less than the dataset's {len(classes)} classes")
    if val_set is None:
        warnings.warn("no validation set (no val/test split and --val-split 0): top-1 is not measured")
    train_loader, val_loader = build_loaders(cfg, train_set, val_set, info, workers)
    steps = len(train_loader)
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)
    if steps == 0:
        raise ValueError(f"{len(train_set)} training images give no full batch of {cfg.batch_size} "
                         f"x {info.world_size} processes; lower --batch-size")

    # --- model: the same initial weights on every rank (seed), then per-rank randomness
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, num_classes, drop_path=cfg.drop_path, img_size=cfg.img_size,
                         **cfg.model_kwargs).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    global_batch = cfg.batch_size * info.world_size
    lr = cfg.lr * global_batch / cfg.lr_base_size if cfg.lr_base_size else cfg.lr
    # torch's fused Adam(W) kernel on GPUs: one launch for all parameters instead of a few per tensor group
    fused = dict(fused=True) if device.type == "cuda" and cfg.opt.lower() in ("adam", "adamw") else {}
    optimizer = create_optimizer_v2(model, opt=cfg.opt, lr=lr, weight_decay=cfg.weight_decay, eps=cfg.opt_eps,
                                    **fused)
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=cfg.sched, num_epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
        warmup_lr=cfg.warmup_lr, min_lr=cfg.min_lr, step_on_epochs=cfg.sched_on == "epoch",
        updates_per_epoch=steps)
    if cfg.warmup_epochs >= cfg.epochs:
        warnings.warn(f"warm-up ({cfg.warmup_epochs} epochs) is not shorter than the run ({cfg.epochs})")
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp and cfg.amp_dtype == "float16")
    train_model = model
    if cfg.compile:
        train_model = compile_model(train_model, input_size=(3, cfg.image_size, cfg.image_size))
    if info.distributed:
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=cfg.ddp_find_unused)
    ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema else None  # after DDP's broadcast of rank 0
    if cfg.cuda_graph:  # after the EMA's deep copy, which must not share the graphed forward
        sample = torch.zeros(cfg.batch_size, 3, cfg.image_size, cfg.image_size, device=device)
        model.train()
        amp_dtype = getattr(torch, cfg.amp_dtype) if cfg.amp else None
        train_model = graph_for_training(model, sample, autocast_dtype=amp_dtype)

    mixup = None
    if cfg.mixup_active:
        mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                      switch_prob=cfg.mixup_switch_prob, label_smoothing=cfg.smoothing, num_classes=num_classes)
        loss_fn = SoftTargetCrossEntropy()
    elif cfg.smoothing > 0:
        loss_fn = LabelSmoothingCrossEntropy(cfg.smoothing)
    else:
        loss_fn = nn.CrossEntropyLoss()

    # --- resume
    seed_everything(cfg.seed + 1000 * info.rank)
    start_epoch, best_top1, best_epoch, prior_time = 0, None, None, 0.0
    rows: list[dict] = []
    resume = cfg.resume
    if resume == "auto":
        resume = str(out / "last.pth") if (out / "last.pth").is_file() else None
        if resume is None:
            log(f"--resume auto: no {out / 'last.pth'}; starting from scratch")
    if resume:
        ckpt = load_checkpoint(resume)
        if not is_engine_checkpoint(ckpt):
            raise CheckpointError(f"{resume} is not a checkpoint of this engine (no format marker); "
                                  "to start from weights only, load them into the model yourself")
        missing = [k for k in ("model", "optimizer", "scheduler", "epoch", "rng") if k not in ckpt]
        if missing:
            raise CheckpointError(f"{resume} lacks {missing}; it cannot be resumed")
        if ckpt["config"].get("model") != cfg.model:
            raise CheckpointError(f"{resume} was trained with model {ckpt['config'].get('model')!r}, "
                                  f"not {cfg.model!r}")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        if ema is not None:
            if ckpt.get("ema") is not None:
                ema.load_state_dict(ckpt["ema"])
            else:
                ema = ModelEmaV3(model, decay=cfg.ema_decay)
        start_epoch = int(ckpt["epoch"])
        best_top1, best_epoch = ckpt.get("best_top1"), ckpt.get("best_epoch")
        prior_time = float(ckpt.get("total_time", 0.0))
        rngs = ckpt["rng"]
        if len(rngs) == info.world_size:
            set_rng_state(rngs[info.rank])
        else:
            warnings.warn(f"checkpoint has RNG states of {len(rngs)} ranks, this run has "
                          f"{info.world_size}: continuing with fresh per-rank seeds")
        rows = [r for r in dist_utils.read_metrics(out / "metrics.jsonl") if r["epoch"] <= start_epoch]
        log(f"resumed from {resume} after epoch {start_epoch}")
        del ckpt
    if main:
        _write_jsonl(out / "metrics.jsonl", rows)

    log(f"{cfg.model}: {n_params / 1e6:.2f}M params | {cfg.dataset}: {len(train_set)} train / "
        f"{len(val_set) if val_set is not None else 0} val images, {len(classes)} classes, "
        f"{cfg.image_size}px | {info.world_size} x {device} | global batch {global_batch}, lr {lr:.3g}, "
        f"{steps} steps/epoch")

    # --- epochs
    run_ips: list[float] = []
    total_time = prior_time
    end_epoch = min(cfg.epochs, start_epoch + cfg.stop_after) if cfg.stop_after else cfg.epochs
    for epoch in range(start_epoch, end_epoch):
        t0 = time.perf_counter()
        D.set_loader_epoch(train_loader, epoch)
        train_loss, n_images, train_s = train_one_epoch(
            cfg, train_model, train_loader, optimizer, scheduler, scaler, loss_fn, mixup, ema, epoch, steps,
            device, show=main and cfg.progress)
        row = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": None, "top1": None, "top5": None}
        if val_loader is not None:
            models = [model] if ema is None else [model, ema.module]
            res = evaluate_models(models, val_loader, device, amp=cfg.amp, amp_dtype=cfg.amp_dtype)
            row.update(val_loss=res[0]["loss"], top1=res[0]["top1"], top5=res[0]["top5"])
            if ema is not None:
                row.update(ema_val_loss=res[1]["loss"], ema_top1=res[1]["top1"], ema_top5=res[1]["top5"])
        if cfg.sched_on == "epoch":
            scheduler.step(epoch + 1)
        epoch_time = time.perf_counter() - t0
        total_time += epoch_time
        ips = n_images / train_s
        run_ips.append(ips)
        row.update(lr=optimizer.param_groups[0]["lr"], images_per_sec=ips, epoch_time=epoch_time,
                   time=total_time)
        improved = row["top1"] is not None and (best_top1 is None or row["top1"] > best_top1)
        if improved:
            best_top1, best_epoch = row["top1"], epoch + 1
        rows.append(row)

        rngs = dist_utils.all_gather_object(get_rng_state())
        if main:
            _write_jsonl(out / "metrics.jsonl", rows)
            state = {
                "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION,
                "model": model.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "epoch": epoch + 1, "rng": rngs,
                "best_top1": best_top1, "best_epoch": best_epoch, "total_time": total_time,
                "config": asdict(cfg), "num_classes": num_classes, "classes": classes,
                "metrics": row,
            }
            save_checkpoint(state, out / "last.pth")
            if improved:
                best = {k: state[k] for k in ("format", "format_version", "model", "epoch", "config",
                                              "num_classes", "classes", "metrics")}
                best["ema"] = ema.module.state_dict() if ema is not None else None
                save_checkpoint(best, out / "best.pth")
            def fmt(v, spec):
                return "-" if v is None else format(v, spec)
            print(f"epoch {epoch + 1}/{cfg.epochs}  train_loss {train_loss:.4f}  "
                  f"val_loss {fmt(row['val_loss'], '.4f')}  top1 {fmt(row['top1'], '.2f')}  "
                  f"top5 {fmt(row['top5'], '.2f')}  lr {row['lr']:.3g}  {ips:.0f} img/s  {epoch_time:.1f} s",
                  flush=True)
        dist_utils.barrier()
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row)

    last = rows[-1] if rows else {}
    summary = {
        "model": cfg.model, "dataset": cfg.dataset, "epochs": len(rows), "finished": len(rows) >= cfg.epochs,
        "params": n_params,
        "best_top1": best_top1, "best_epoch": best_epoch, "last_top1": last.get("top1"),
        "last_top5": last.get("top5"), "last_val_loss": last.get("val_loss"),
        "last_train_loss": last.get("train_loss"),
        "best_ema_top1": max((r["ema_top1"] for r in rows if r.get("ema_top1") is not None), default=None),
        "total_time": total_time, "images_per_sec": float(np.mean(run_ips)) if run_ips else None,
        "world_size": info.world_size, "device": str(device), "global_batch_size": global_batch, "lr": lr,
        "train_images": len(train_set), "val_images": len(val_set) if val_set is not None else 0,
        "num_classes": num_classes, "output": str(out), "config": asdict(cfg),
    }
    if main:
        tmp = out / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, out / "summary.json")
    return summary


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
        l = loss.detach().float()
        bad_step = torch.minimum(bad_step, torch.where(torch.isfinite(l), big, step))
        loss_sum += l.double()
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
            bad = dist_utils.all_reduce(bad_step.clone(), op=torch.distributed.ReduceOp.MIN).item()
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
    stats = dist_utils.all_reduce(torch.stack([loss_sum, torch.tensor(float(n_seen), device=device,
                                                                      dtype=torch.float64)]))
    mean_loss = (stats[0] / stats[1]).item()
    batch = x.shape[0]
    return mean_loss, batch * steps * world, seconds


def main(argv=None) -> dict:
    cfg = parse_args(argv)
    return train(cfg)


if __name__ == "__main__":
    main()
