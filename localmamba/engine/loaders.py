"""Transforms, samplers and loaders of the engine: what turns a dataset of :mod:`localmamba.engine.data`
into batches.

- :func:`train_transform` / :func:`eval_transform`: timm's transforms (``crop='pad'`` for CIFAR-size images);
- :func:`build_loader`: a ``DataLoader`` whose order and augmentation are functions of (seed, epoch, rank)
  alone (:func:`set_loader_epoch` before each epoch), so a resumed run sees the batches an uninterrupted
  one would; :class:`ShardSampler` evaluates each image once over ranks;
- :class:`DeviceLoader` (``--gpu-aug``): an in-memory set kept on the GPU and augmented there;
- :func:`default_workers`: loader processes from the cores this process may use;
- :func:`build_loaders`: a run's training and validation loaders as its :class:`Config` says.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch.utils.data import DistributedSampler, Sampler

from timm.data import create_transform
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.data.random_erasing import RandomErasing
from timm.data.transforms_factory import transforms_imagenet_train

from .config import Config, ConfigError
from .data import InMemoryImages

if TYPE_CHECKING:
    from .distributed import DistInfo


# ----------------------------------------------------------------------------------------------
# Transforms
# ----------------------------------------------------------------------------------------------
def default_train_crop(img_size: int) -> str:
    """'pad' (CIFAR-style pad-4 random crop) for small images, 'rrc' (RandomResizedCrop) otherwise."""
    return "pad" if img_size <= 64 else "rrc"


def _posterize(img, bits_to_keep, **_):
    """timm's posterize, keeping 0 bits legal: Pillow >= 12 rejects ``ImageOps.posterize(img, 0)``,
    which timm's increasing RandAugment ('inc1', magnitude near 10) asks for; older Pillow returned
    a black image, and so does this."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def _patch_posterize(transform) -> None:
    """Route the Posterize ops of timm's RandAugment in ``transform`` through :func:`_posterize`."""
    from timm.data.auto_augment import AugmentOp

    for t in getattr(transform, "transforms", []):
        for op in getattr(t, "ops", []):
            if isinstance(op, AugmentOp) and op.name.startswith("Posterize"):
                op.aug_fn = _posterize


def train_transform(img_size: int, crop: str = "rrc", aa: Optional[str] = None, reprob: float = 0.0,
                    hflip: float = 0.5, interpolation: str = "bicubic", mean=IMAGENET_DEFAULT_MEAN,
                    std=IMAGENET_DEFAULT_STD):
    """timm's training transform; ``crop='pad'`` swaps its RandomResizedCrop for a pad-and-crop
    (``RandomCrop(img_size, padding=img_size // 8)``) + flip, the usual CIFAR recipe."""
    from torchvision import transforms as T

    kw = dict(hflip=hflip, auto_augment=aa or None, interpolation=interpolation, mean=mean, std=std,
              re_prob=reprob, re_mode="pixel", re_count=1)
    if crop == "rrc":
        tf = create_transform(img_size, is_training=True, **kw)
    elif crop == "pad":
        _, secondary, final = transforms_imagenet_train(img_size, separate=True, **kw)
        primary = [T.Resize(img_size, interpolation=T.InterpolationMode.BICUBIC),
                   T.RandomCrop(img_size, padding=max(1, img_size // 8), padding_mode="reflect")]
        if hflip > 0:
            primary.append(T.RandomHorizontalFlip(hflip))
        tf = T.Compose(primary + list(secondary.transforms) + list(final.transforms))
    else:
        raise ValueError(f"unknown train crop {crop!r}; use 'pad' or 'rrc'")
    _patch_posterize(tf)
    return tf


def eval_transform(img_size: int, crop_pct: Optional[float] = None, interpolation: str = "bicubic",
                   mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD):
    """timm's evaluation transform; crop_pct defaults to 1.0 for small images, 0.875 otherwise."""
    if crop_pct is None:
        crop_pct = 1.0 if img_size <= 64 else 0.875
    return create_transform(img_size, is_training=False, crop_pct=crop_pct, interpolation=interpolation,
                            mean=mean, std=std)


# ----------------------------------------------------------------------------------------------
# Samplers and loaders
# ----------------------------------------------------------------------------------------------
def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """One integer from (seed, epoch, rank): augmentation randomness of an epoch depends on nothing else."""
    return (seed * 1_000_003 + epoch * 10_007 + rank * 101 + 12345) % (2**63 - 1)


class ShardSampler(Sampler):
    """Indices ``rank::world_size`` in order: each image evaluated exactly once across ranks (no padding,
    unlike DistributedSampler), so summed metrics are exact."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1):
        self.n, self.rank, self.world_size = n, rank, world_size

    def __iter__(self):
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self):
        return len(range(self.rank, self.n, self.world_size))


def default_workers(world_size: int = 1, cap: int = 8) -> int:
    """Data-loader processes per rank: the CPU cores this process may use (its affinity, not the machine's
    count, which overstates a container's share) split over the ranks, at most ``cap``, at least 1.
    More workers than cores only adds contention (and torch's warning about it)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, min(cap, cores // max(1, world_size)))


def build_loader(ds, batch_size: int, *, train: bool, seed: int = 0, rank: int = 0, world_size: int = 1,
                 workers: int = 4, pin_memory: bool = False):
    """A DataLoader whose order and augmentation are functions of (seed, epoch, rank): call
    ``set_loader_epoch(loader, epoch)`` before each epoch."""
    from torch.utils.data import DataLoader

    if train:
        # DistributedSampler with explicit rank/world also works in a single process: permutation
        # seeded by seed + epoch, then sharded.
        sampler = DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                                     drop_last=True)
    else:
        sampler = ShardSampler(len(ds), rank, world_size)
    g = torch.Generator()
    g.manual_seed(epoch_seed(seed, 0, rank))
    loader = DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        pin_memory=pin_memory, drop_last=train, generator=g,
                        persistent_workers=False)
    loader.seed, loader.rank = seed, rank
    return loader


def set_loader_epoch(loader, epoch: int) -> None:
    """Make the next pass over ``loader`` a function of (seed, epoch, rank) alone."""
    if isinstance(loader, DeviceLoader):
        loader.set_epoch(epoch)
        return
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    if loader.generator is not None:  # worker seeds (and so their augmentations) are drawn from it
        loader.generator.manual_seed(epoch_seed(loader.seed, epoch, loader.rank))


class DeviceLoader:
    """Batches of an :class:`InMemoryImages` set kept on the device, augmented there (``--gpu-aug``).

    Order: DistributedSampler's permutation for (seed, epoch), sharded by rank (validation: in order,
    ``rank::world_size``). Training augmentation, per image: random crop after reflect-padding by
    ``pad`` pixels, horizontal flip with probability ``hflip``, then normalisation, and timm's batched
    ``RandomErasing`` (``reprob``). Crops and flips draw from a device generator seeded by (seed, epoch,
    rank) alone; erasing draws from the process's global Python and torch generators (timm takes no
    generator), which the engine seeds per rank and keeps in its checkpoints, so a resumed run still
    repeats it. Yields ``(x: r(B 3 H W) float, y: r(B) int64)`` on the device.
    """

    def __init__(self, ds: InMemoryImages, batch_size: int, device, *, train: bool, img_size: int,
                 seed: int = 0, rank: int = 0, world_size: int = 1, pad: Optional[int] = None,
                 hflip: float = 0.5, reprob: float = 0.0, mean=IMAGENET_DEFAULT_MEAN,
                 std=IMAGENET_DEFAULT_STD):
        if not isinstance(ds, InMemoryImages):
            raise TypeError("DeviceLoader needs an in-memory dataset (CIFAR, npz, fake or an in-memory folder)")
        self.device = torch.device(device)
        x = ds.images.to(self.device).permute(0, 3, 1, 2).contiguous()  # r(N 3 H W) uint8
        if x.shape[-1] != img_size or x.shape[-2] != img_size:
            x = torch.cat([F.interpolate(c.float(), size=(img_size, img_size), mode="bilinear",
                                         antialias=True).round().clamp(0, 255).to(torch.uint8)
                           for c in x.split(4096)])
        self.images, self.labels = x, ds.labels.to(self.device)
        self.batch_size, self.train, self.img_size = batch_size, train, img_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.pad = img_size // 8 if pad is None else pad
        self.hflip = hflip
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1) * 255
        self.erase = RandomErasing(reprob, mode="pixel", device=self.device) if train and reprob > 0 else None
        if train:
            self.sampler = DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=True,
                                              seed=seed, drop_last=True)
        else:
            self.sampler = ShardSampler(len(ds), rank, world_size)
        self.epoch = 0
        self.dataset = ds

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.train else math.ceil(n / self.batch_size)

    def _augment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        # x: r(B 3 H W) uint8 -> random pad-crop and flip, still uint8
        B, _, H, W = x.shape
        p = self.pad
        if p > 0:
            xp = F.pad(x.float(), (p, p, p, p), mode="reflect")  # r(B 3 H+2p W+2p)
            oy = torch.randint(0, 2 * p + 1, (B, 1), device=x.device, generator=g)
            ox = torch.randint(0, 2 * p + 1, (B, 1), device=x.device, generator=g)
            rows = (oy + torch.arange(H, device=x.device))[:, :, None]  # r(B H 1)
            cols = (ox + torch.arange(W, device=x.device))[:, None, :]  # r(B 1 W)
            b = torch.arange(B, device=x.device)[:, None, None]
            x = xp.permute(0, 2, 3, 1)[b, rows, cols].permute(0, 3, 1, 2)  # r(B 3 H W)
        if self.hflip > 0:
            flip = torch.rand(B, device=x.device, generator=g) < self.hflip
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x

    def __iter__(self):
        idx = torch.tensor(list(iter(self.sampler)), dtype=torch.long, device=self.device)
        g = torch.Generator(device=self.device)
        g.manual_seed(epoch_seed(self.seed, self.epoch, self.rank))
        for s in range(len(self)):
            i = idx[s * self.batch_size:(s + 1) * self.batch_size]
            x = self.images[i]  # r(B 3 H W) uint8
            if self.train:
                x = self._augment(x, g)
            x = (x.float() - self.mean) / self.std  # r(B 3 H W) float
            if self.erase is not None:
                x = self.erase(x)
            yield x, self.labels[i]


def build_loaders(cfg: Config, train_set, val_set, info: "DistInfo", workers: int):
    """Train and validation loaders (transforms set on the datasets here)."""
    size = cfg.image_size
    if cfg.gpu_aug:
        if not isinstance(train_set, InMemoryImages):
            raise ConfigError("--gpu-aug needs an in-memory dataset (CIFAR, .npz, fake, or --in-memory)")
        if cfg.aa:
            warnings.warn(f"--gpu-aug does pad-crop, flip and random erasing only; --aa {cfg.aa} is ignored")
        common = dict(img_size=size, seed=cfg.seed, rank=info.rank, world_size=info.world_size)
        train_loader = DeviceLoader(train_set, cfg.batch_size, info.device, train=True,
                                    reprob=cfg.reprob, **common)
        val_loader = (DeviceLoader(val_set, cfg.batch_size, info.device, train=False, **common)
                      if val_set is not None else None)
        return train_loader, val_loader
    crop = cfg.train_crop or default_train_crop(size)
    train_set.transform = train_transform(size, crop, cfg.aa, cfg.reprob, interpolation=cfg.interpolation)
    pin = info.device.type == "cuda"
    common = dict(seed=cfg.seed, rank=info.rank, world_size=info.world_size, workers=workers, pin_memory=pin)
    train_loader = build_loader(train_set, cfg.batch_size, train=True, **common)
    val_loader = None
    if val_set is not None:
        val_set.transform = eval_transform(size, interpolation=cfg.interpolation)
        val_loader = build_loader(val_set, cfg.batch_size, train=False, **common)
    return train_loader, val_loader
