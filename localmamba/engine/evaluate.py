"""Evaluate a checkpoint, and look at the results of a training run (the engine's evaluation).

Command line::

    # a checkpoint of the engine: model, image size and data options come from the checkpoint
    python -m localmamba.evaluate --checkpoint runs/c10/best.pth
    # a plain state dict, or an original LocalMamba checkpoint ({'model': state_dict})
    python -m localmamba.evaluate --model local_vim_tiny --checkpoint local_vim_tiny.pth \\
        --dataset imagenet --data-dir /data/imagenet

It prints (and ``evaluate(...)`` returns) top-1 / top-5 accuracy in percent and the cross-entropy loss.
Checkpoint kinds: the engine's own (``last.pth`` / ``best.pth``; ``--ema`` picks the EMA weights), a
plain ``state_dict``, and original LocalMamba checkpoints, which go through
``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH))`` so the model's
own checkpoint filter maps their names.

Also here for notebooks: :func:`predict`, :func:`confusion_matrix`, :func:`plot_curves`,
:func:`plot_confusion_matrix`, :func:`plot_predictions`.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import data, distributed, loaders
from .checkpoint import CheckpointError, is_engine_checkpoint, load_checkpoint
from .config import ConfigError
from .model import check_model_name, create_model


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------
def evaluate_model(model: nn.Module, loader, device, amp: bool = False, amp_dtype: str = "bfloat16") -> dict:
    """Cross-entropy loss and top-1 / top-5 accuracy (percent) of ``model`` over ``loader``, summed over
    ranks when a process group exists (each rank sees its own shard)."""
    return evaluate_models([model], loader, device, amp=amp, amp_dtype=amp_dtype)[0]


@torch.no_grad()
def evaluate_models(models: Sequence[nn.Module], loader, device, amp: bool = False,
                    amp_dtype: str = "bfloat16") -> list[dict]:
    """:func:`evaluate_model` of each of ``models`` in one pass over ``loader``: every batch goes to
    every model, so a model and its EMA read the validation set once, not twice."""
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    device = torch.device(device)
    sums = torch.zeros(len(models), 4, device=device, dtype=torch.float64)  # per model: loss_sum, top1, top5, n
    n = 0  # counted on the host: a device scalar per batch would make every batch wait for the GPU
    ctx = torch.autocast(device.type, dtype=getattr(torch, amp_dtype)) if amp else contextlib.nullcontext()
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        for i, model in enumerate(models):
            with ctx:
                logits = model(x)
            logits = logits.float()  # r(B C)
            k = min(5, logits.shape[-1])
            top = logits.topk(k, dim=-1).indices  # r(B k)
            hit = top == y[:, None]  # r(B k)
            sums[i, :3] += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(),
                                        hit[:, 0].sum().double(), hit.any(-1).sum().double()])
        n += len(y)
    sums[:, 3] = n
    distributed.all_reduce(sums)
    for m, mode in zip(models, was_training):
        m.train(mode)
    results = []
    for loss, c1, c5, count in sums.tolist():
        count = max(count, 1.0)
        results.append({"loss": loss / count, "top1": 100 * c1 / count, "top5": 100 * c5 / count, "n": int(count)})
    return results


@torch.no_grad()
def predict(model: nn.Module, loader, device, amp: bool = False, amp_dtype: str = "bfloat16"):
    """All logits and labels of ``loader`` (one process): ``(r(N C) float, r(N) int64)`` on the CPU."""
    from tqdm.auto import tqdm

    model.eval()
    ctx = torch.autocast(torch.device(device).type, dtype=getattr(torch, amp_dtype)) if amp \
        else contextlib.nullcontext()
    logits, labels = [], []
    for x, y in tqdm(loader, desc="predict", leave=False):
        with ctx:
            logits.append(model(x.to(device)).float().cpu())
        labels.append(y.cpu())
    return torch.cat(logits), torch.cat(labels)


def confusion_matrix(preds, labels, num_classes: int) -> np.ndarray:
    """Counts ``cm[true, predicted]``: r(C C) int64."""
    preds, labels = np.asarray(preds).ravel(), np.asarray(labels).ravel()
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


# ----------------------------------------------------------------------------------------------
# Loading models from checkpoints
# ----------------------------------------------------------------------------------------------
def _strip_prefix(sd: dict, prefix: str) -> dict:
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _head_classes(sd: dict) -> Optional[int]:
    """Rows of the classifier weight in a state dict (timm names: head, head.fc, fc, classifier)."""
    head = [v for k, v in sd.items() if isinstance(v, torch.Tensor) and v.ndim == 2
            and k.endswith(("head.weight", "fc.weight", "classifier.weight"))]
    return int(head[-1].shape[0]) if head else None


def load_model(checkpoint: str | os.PathLike, model: Optional[str] = None, *, num_classes: Optional[int] = None,
               img_size: Optional[int] = None, use_ema: bool = False, model_kwargs: Optional[dict] = None,
               device="cpu", trust_pickle: bool = False):
    """A model in eval mode with the checkpoint's weights, and what the checkpoint says of itself.

    Returns ``(model, info)``; ``info`` has ``kind`` ('engine', 'state_dict' or 'original') and, for
    the engine's checkpoints, ``config`` and ``classes``. ``trust_pickle`` lets the localmamba models
    read an original checkpoint that holds pickled Python objects (only for files you trust).
    """
    if model is not None:
        check_model_name(model)
    path = Path(checkpoint)
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as e:
        if not isinstance(e.__cause__, pickle.UnpicklingError):
            raise
        ckpt = None  # objects weights_only refuses: a foreign training checkpoint; timm reads it
    info: dict = {"checkpoint": str(path)}
    kwargs = dict(model_kwargs or {})
    if is_engine_checkpoint(ckpt):
        cfg = ckpt["config"]
        model = model or cfg["model"]
        if model != cfg["model"]:
            raise CheckpointError(f"{path} holds a {cfg['model']!r} model, not {model!r}")
        kwargs = {**cfg.get("model_kwargs", {}), **kwargs}
        img_size = img_size or cfg.get("img_size")
        num_classes = num_classes or ckpt["num_classes"]
        sd = ckpt["ema"] if use_ema else ckpt["model"]
        if sd is None:
            raise CheckpointError(f"{path} has no EMA weights (trained without --ema)")
        sd = _strip_prefix(sd, "module.")  # ModelEmaV3 state dicts in last.pth
        net = create_model(model, num_classes, img_size=img_size, **kwargs)
        net.load_state_dict(sd)
        info.update(kind="engine", config=cfg, classes=ckpt.get("classes"), epoch=ckpt.get("epoch"))
    else:
        if model is None:
            raise ConfigError(f"{path} is not a checkpoint of the training engine: give the model name")
        is_plain = isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values())
        if is_plain or (isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict)):
            sd = ckpt if is_plain else ckpt["state_dict"]
            sd = _strip_prefix(_strip_prefix(sd, "module."), "_orig_mod.")
            num_classes = num_classes or _head_classes(sd) or 1000
            net = create_model(model, num_classes, img_size=img_size, **kwargs)
            net.load_state_dict(sd)
            info.update(kind="state_dict")
        else:  # {'model': state_dict} of the original code, or anything else timm can read
            import timm

            if img_size is not None:
                kwargs["img_size"] = img_size
            if num_classes is None and isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict):
                num_classes = _head_classes(ckpt["model"])
            if trust_pickle:
                kwargs["trust_pickle"] = True  # localmamba models: allow pickled objects in a trusted file
            overlay = dict(file=str(path))
            if num_classes is not None:
                kwargs["num_classes"] = overlay["num_classes"] = num_classes  # keep the checkpoint's head
            net = timm.create_model(model, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
            info.update(kind="original")
    info["model"] = model
    return net.to(device).eval(), info


# ----------------------------------------------------------------------------------------------
# Evaluation entry point
# ----------------------------------------------------------------------------------------------
def evaluate(checkpoint: str | os.PathLike, model: Optional[str] = None, *, dataset: Optional[str] = None,
             data_dir: Optional[str] = None, split: str = "val", val_split: Optional[int] = None,
             split_seed: Optional[int] = None, img_size: Optional[int] = None,
             interpolation: Optional[str] = None, batch_size: int = 256,
             workers: Optional[int] = None, device: str = "auto", use_ema: bool = False, amp: bool = False,
             max_images: int = 0, return_predictions: bool = False, model_kwargs: Optional[dict] = None,
             trust_pickle: bool = False) -> dict:
    """Top-1 / top-5 (percent) and loss of a checkpoint on a dataset split (one process).

    Options left ``None`` come from an engine checkpoint's config (dataset, data folder, held-out split,
    image size, interpolation), so the validation images are the ones training measured, resized alike.
    ``split='train'`` measures the training images (without augmentation). Training images are read only
    when scored or when the validation images are held out from them (``val_split``), so a folder of
    ``val/`` or ``test/`` alone will do. ``return_predictions`` adds ``logits`` and ``labels``.
    """
    dev = distributed.resolve_device(device)
    net, info = load_model(checkpoint, model, img_size=img_size, use_ema=use_ema, model_kwargs=model_kwargs,
                           device=dev, trust_pickle=trust_pickle)
    cfg = info.get("config", {})
    dataset = dataset or cfg.get("dataset")
    if dataset is None:
        raise ConfigError("give --dataset (the checkpoint does not say which dataset it was trained on)")
    data_dir = data_dir or (cfg.get("data_dir") if cfg.get("dataset") == dataset else None)
    same_data = cfg.get("dataset") == dataset
    if val_split is None:
        val_split = cfg.get("val_split", 0) if same_data else 0
    if split_seed is None:
        split_seed = cfg.get("split_seed", 0) if same_data else 0
    img_size = img_size or cfg.get("img_size") or data.DEFAULT_IMG_SIZE[dataset]
    interpolation = interpolation or cfg.get("interpolation", "bicubic")
    kw = {}
    if dataset == "fake" and same_data:
        kw = dict(fake_train_size=cfg.get("fake_train_size", 1000), fake_val_size=cfg.get("fake_val_size", 200),
                  num_classes=cfg.get("num_classes") or 10)
    train_set, val_set, classes = data.build_datasets(dataset, data_dir, img_size=img_size, val_split=val_split,
                                                   split_seed=split_seed, load_train=split == "train", **kw)
    ds = train_set if split == "train" else val_set
    if ds is None:
        raise ConfigError(f"{dataset} in {data_dir} has no validation split: pass --val-split N (the images "
                         "held out in training) or --split train")
    if max_images and max_images < len(ds):
        _, keep = data.stratified_split(ds.targets, max_images, 0)
        ds = data._subset(ds, keep)
    ds.transform = loaders.eval_transform(img_size, interpolation=interpolation)
    workers = loaders.default_workers(cap=4) if workers is None else workers
    loader = loaders.build_loader(ds, batch_size, train=False, workers=workers, pin_memory=dev.type == "cuda")
    logits, labels = predict(net, loader, dev, amp=amp)
    k = min(5, logits.shape[-1])
    res = {
        "top1": 100 * (logits.argmax(-1) == labels).double().mean().item(),
        "top5": 100 * (logits.topk(k, -1).indices == labels[:, None]).any(-1).double().mean().item(),
        "loss": F.cross_entropy(logits, labels).item(),
        "n": len(labels), "model": info["model"], "checkpoint": str(checkpoint), "kind": info["kind"],
        "dataset": dataset, "split": split, "classes": classes,
    }
    if return_predictions:
        res.update(logits=logits, labels=labels, dataset_obj=ds)
    return res


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m localmamba.evaluate",
                                     description="Evaluate a checkpoint: top-1 / top-5 accuracy and loss on a "
                                                 "dataset split.")
    parser.add_argument("--checkpoint", required=True, help="engine checkpoint, state dict or original checkpoint")
    parser.add_argument("--model", help="timm model name (default: from an engine checkpoint)")
    parser.add_argument("--model-kwargs", type=json.loads, default=None, help="extra create_model kwargs (JSON)")
    parser.add_argument("--dataset", choices=data.DATASETS, help="default: the checkpoint's")
    parser.add_argument("--data-dir", help="default: the checkpoint's, for the same dataset")
    parser.add_argument("--split", choices=("val", "train"), default="val",
                        help="score the validation images or the training images (default: val)")
    parser.add_argument("--val-split", type=int, help="held-out images, as in training (default: the checkpoint's)")
    parser.add_argument("--split-seed", type=int, help="seed of the held-out split (default: the checkpoint's)")
    parser.add_argument("--img-size", type=int, help="image size (default: the checkpoint's, else the dataset's)")
    parser.add_argument("--interpolation", help="resize interpolation (default: the checkpoint's, else bicubic)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per batch (default: 256)")
    parser.add_argument("--workers", type=int,
                        help="data-loader processes (default: min(4, the CPU cores this process may use))")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto, a GPU if any)")
    parser.add_argument("--ema", action="store_true", help="evaluate the EMA weights of an engine checkpoint")
    parser.add_argument("--amp", action="store_true", help="mixed precision (bfloat16 autocast)")
    parser.add_argument("--max-images", type=int, default=0, help="a stratified subset of N images (0: all)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="let an original checkpoint hold pickled Python objects (files you trust only)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    res = evaluate(args.checkpoint, args.model, dataset=args.dataset, data_dir=args.data_dir, split=args.split,
                   val_split=args.val_split, split_seed=args.split_seed, img_size=args.img_size,
                   interpolation=args.interpolation, batch_size=args.batch_size,
                   workers=args.workers, device=args.device, use_ema=args.ema, amp=args.amp,
                   max_images=args.max_images, model_kwargs=args.model_kwargs, trust_pickle=args.trust_pickle)
    res.pop("classes")
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{res['model']} ({res['kind']} checkpoint {res['checkpoint']}) on {res['dataset']} {res['split']}, "
              f"{res['n']} images: top-1 {res['top1']:.2f}%  top-5 {res['top5']:.2f}%  loss {res['loss']:.4f}")
    return res


# ----------------------------------------------------------------------------------------------
# Results of a run, for notebooks (the plots are in localmamba.notebook.training)
# ----------------------------------------------------------------------------------------------
def load_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """Rows of ``run_dir/metrics.jsonl``."""
    return distributed.read_metrics(Path(run_dir) / "metrics.jsonl")


if __name__ == "__main__":
    main()
