"""A training run's options: :class:`Config`, config files (YAML / JSON) and the command line.

Every ``Config`` field is one ``--option-name`` of ``python -m localmamba.train``; its help text is the
field's ``metadata``. A config file holds the same names (dashes or underscores); options given on the
command line override the file's. Wrong options, values or files raise :class:`ConfigError` with one line
that says what to fix (the command line prints it without a traceback).
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from . import data


class ConfigError(ValueError):
    """An option, option value or config file that cannot be used as given."""


def _option(default, help: str, **kw):
    """A Config field with its command-line help (``metadata``)."""
    meta = {"help": help, **kw}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Config:
    """Every option of a training run; the command line has one ``--option-name`` per field."""

    # model
    model: str = _option("local_vim_tiny", "timm model name (localmamba models are registered on import)")
    model_kwargs: dict = _option({}, "extra keyword arguments for timm.create_model, as JSON (added to a config "
                                     "file's)", type=json.loads)
    num_classes: Optional[int] = _option(None, "classes of the head (default: the dataset's)", type=int)
    img_size: Optional[int] = _option(None, "image size; passed to the model only when given "
                                       "(default per dataset: 32 CIFAR/fake, 224 ImageNet)", type=int)
    drop_path: Optional[float] = _option(None, "drop-path rate (default: the model's)", type=float)
    # data
    dataset: str = _option("imagenet", "dataset", choices=data.DATASETS)
    data_dir: Optional[str] = _option(None, "data folder or .npz file (see localmamba.engine.data); "
                                               "required except for --dataset fake")
    download: bool = _option(False, "let torchvision download CIFAR into --data-dir")
    val_split: int = _option(0, "hold out N training images (class-stratified, seed --split-seed) as the "
                           "validation set; for data without a val/test split (the .npz)", type=int)
    split_seed: int = _option(0, "seed of the held-out split and of subsets", type=int)
    train_subset: int = _option(0, "train on a stratified subset of N images (0: all)", type=int)
    val_subset: int = _option(0, "validate on a stratified subset of N images (0: all)", type=int)
    fake_train_size: int = _option(1000, "images in the generated training set (--dataset fake)", type=int)
    fake_val_size: int = _option(200, "images in the generated validation set (--dataset fake)", type=int)
    in_memory: Optional[bool] = _option(None, "decode an image folder into memory (default: CIFAR yes, "
                                         "ImageNet no)")
    gpu_aug: bool = _option(False, "keep an in-memory dataset on the device and augment there "
                              "(pad-crop, flip, erasing; no RandAugment): fast for 32x32 data")
    workers: Optional[int] = _option(None, "data-loader processes per rank (default min(8, cores/ranks))",
                                type=int)
    # augmentation
    train_crop: Optional[str] = _option(None, "'pad' (pad and random-crop, CIFAR) or 'rrc' (random resized "
                                         "crop, ImageNet); default by image size", choices=("pad", "rrc"))
    aa: Optional[str] = _option("rand-m9-mstd0.5-inc1", "timm auto-augment policy ('none' to disable)")
    reprob: float = _option(0.25, "random-erasing probability", type=float)
    mixup: float = _option(0.2, "mixup alpha (0 disables)", type=float)
    cutmix: float = _option(1.0, "cutmix alpha (0 disables)", type=float)
    mixup_prob: float = _option(1.0, "probability of applying mixup or cutmix to a batch", type=float)
    mixup_switch_prob: float = _option(0.5, "probability of cutmix instead of mixup when both are on",
                                  type=float)
    smoothing: float = _option(0.1, "label smoothing", type=float)
    interpolation: str = _option("bicubic", "resize interpolation")
    # optimisation
    epochs: int = _option(300, "epochs", type=int)
    batch_size: int = _option(128, "batch size per process", type=int)
    lr: float = _option(1e-3, "learning rate at a global batch of --lr-base-size", type=float)
    lr_base_size: int = _option(1024, "global batch at which --lr applies; the rate scales linearly "
                                 "(0: use --lr as is)", type=int)
    min_lr: float = _option(1e-5, "final learning rate of the cosine schedule", type=float)
    warmup_lr: float = _option(1e-6, "learning rate at the start of warm-up", type=float)
    warmup_epochs: float = _option(20, "warm-up epochs", type=float)
    weight_decay: float = _option(0.04, "weight decay (not on 1-D params or model.no_weight_decay())",
                             type=float)
    opt: str = _option("adamw", "timm optimizer name")
    opt_eps: float = _option(1e-8, "optimizer epsilon", type=float)
    sched: str = _option("cosine", "timm scheduler name")
    sched_on: str = _option("step", "step the schedule every iteration ('step') or epoch ('epoch')",
                       choices=("step", "epoch"))
    clip_grad: Optional[float] = _option(None, "clip the gradient norm to this value (default: no clipping)",
                                         type=float)
    amp: bool = _option(False, "mixed precision (autocast)")
    amp_dtype: str = _option("bfloat16", "autocast dtype; float16 adds a gradient scaler",
                        choices=("bfloat16", "float16"))
    ema: bool = _option(False, "keep an exponential moving average of the weights (timm ModelEmaV3)")
    ema_decay: float = _option(0.9998, "EMA decay", type=float)
    compile: bool = _option(False, "torch.compile the model")
    cuda_graph: bool = _option(False, "capture the training forward and backward as CUDA graphs (one CUDA device, "
                                 "one process, not with --compile): removes the host's op-dispatch cost, which "
                                 "bounds small models on fast GPUs (localmamba.engine.cuda_graphs)")
    grad_checkpointing: bool = _option(False, "recompute each block's activations in the backward (timm's "
                                       "set_grad_checkpointing): a fraction of the training memory for about one "
                                       "more forward of compute")
    ddp_find_unused: bool = _option(False, "DDP find_unused_parameters")
    # run
    output: Optional[str] = _option(None, "output folder (default runs/MODEL_DATASET)")
    resume: Optional[str] = _option(None, "checkpoint to continue from, or 'auto' for OUTPUT/last.pth "
                                     "(a fresh start if absent)")
    seed: int = _option(0, "random seed (data order and augmentation are functions of seed and epoch)",
                   type=int)
    device: str = _option("auto", "auto, cpu, cuda or cuda:N (under torchrun: cuda:LOCAL_RANK)")
    threads: Optional[int] = _option(None, "CPU threads of torch in each process (default: torch's; small models "
                                      "on a CPU often run fastest with 1)", type=int)
    log_interval: int = _option(50, "steps between progress-bar updates (and loss checks on GPU)", type=int)
    max_steps_per_epoch: int = _option(0, "stop each epoch after N steps (0: full epochs; for tests)",
                                  type=int)
    stop_after: int = _option(0, "end this invocation after N epochs (0: run to --epochs), e.g. to fit a job's "
                            "time limit; continue later with --resume auto", type=int)
    progress: bool = _option(True, "show a progress bar")

    def __post_init__(self):
        if self.dataset not in data.DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(data.DATASETS)}")
        if self.aa is not None and str(self.aa).lower() in ("", "none", "null", "false"):
            self.aa = None
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be positive")
        if self.mixup_active and self.batch_size % 2:
            raise ConfigError(f"mixup/cutmix need an even --batch-size, got {self.batch_size}")
        if self.cuda_graph and self.compile:
            raise ConfigError("--cuda-graph and --compile do not combine; torch.compile has its own CUDA graphs "
                             "(mode='reduce-overhead'); choose one")
        if self.output is None:
            self.output = os.path.join("runs", f"{self.model}_{self.dataset}")

    @property
    def mixup_active(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    @property
    def image_size(self) -> int:
        return self.img_size or data.DEFAULT_IMG_SIZE[self.dataset]


# ----------------------------------------------------------------------------------------------
# Config files and the command line
# ----------------------------------------------------------------------------------------------
def load_config_file(path: str | os.PathLike) -> dict:
    """Options from a YAML or JSON file (keys are Config field names; dashes allowed)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}; give the path of a .yaml or .json file "
                          "(examples in configs/)")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as e:
            raise ImportError("reading YAML configs needs PyYAML: pip install pyyaml "
                              "(or write the config as JSON)") from e
        try:
            values = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            where = getattr(e, "problem_mark", None)
            at = f" at line {where.line + 1}" if where is not None else ""
            raise ConfigError(f"{path} is not valid YAML{at}: {getattr(e, 'problem', None) or e}; "
                              "fix the file (one `option: value` per line)") from e
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON (line {e.lineno}: {e.msg}); fix the file, or name "
                              "it .yaml to write YAML") from e
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value, got {type(values).__name__}")
    values = {k.replace("-", "_"): v for k, v in values.items()}
    names = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(values) - names)
    if unknown:
        close = {u: difflib.get_close_matches(u, names, n=1) for u in unknown}
        hints = ", ".join(f"{u!r}" + (f" (did you mean {c[0]!r}?)" if c else "") for u, c in close.items())
        raise ConfigError(f"{path}: unknown options {hints}; the options are the fields of "
                          "localmamba.engine.Config (python -m localmamba.train --help)")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m localmamba.train",
                                description="Train a model: one process, one GPU, or many through torchrun.",
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--config", help="YAML or JSON file of options; command-line options override it")
    for f in dataclasses.fields(Config):
        meta = dict(f.metadata)
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_ = meta.pop("help")
        if "default" not in help_ and default is not None:  # a help naming its default says it better
            help_ += f" (default: {default})"
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
    try:
        return Config(**values)
    except TypeError as e:  # a config-file value of the wrong kind, e.g. a list for a number
        raise ConfigError(f"bad option value: {e}") from e
