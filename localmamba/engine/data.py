"""Datasets for the training engine (:mod:`localmamba.engine.train`); :mod:`localmamba.engine.loaders` makes
batches of them.

Where images come from (``--dataset`` and ``--data-dir``):

- ``cifar10`` / ``cifar100``: ``--data-dir`` is one of
  * torchvision's folder (``cifar-10-batches-py/`` or ``cifar-100-python/`` inside it; fetched only
    with ``--download``),
  * an image folder ``train/<class>/*`` plus ``test/<class>/*`` or ``val/<class>/*``,
  * an ``.npz`` file of JPEG bytes (below).
- ``imagenet``: an image folder ``train/<class>/*`` plus ``val/<class>/*`` (or ``test/``), or an ``.npz``.
- ``fake``: class-conditional images generated in memory (each class a colour and a stripe pattern,
  plus noise): learnable in a few hundred steps, for tests and CPU demos. ``--data-dir`` is ignored.

The ``.npz`` format: ``d = dict(np.load(path))`` has ``jpeg`` (uint8, every JPEG file concatenated),
``offsets`` (int64, N+1), ``labels`` (int64, N) and ``classes`` (str, C); image i is the JPEG
``d['jpeg'][d['offsets'][i]:d['offsets'][i+1]]``. It is decoded once into a uint8 tensor.

Small datasets (CIFAR, npz, fake) live in memory as ``r(N H W 3) uint8`` (:class:`InMemoryImages`).
They feed either the usual ``DataLoader`` with PIL transforms (RandAugment, random erasing, ...) or,
with ``--gpu-aug``, :class:`localmamba.engine.loaders.DeviceLoader`: the whole uint8 tensor sits on the GPU
and each batch is gathered, pad-cropped, flipped and normalised there (no workers, no host-device copies),
which is what feeds tens of thousands of 32x32 images a second.

Validation: a dataset's own ``val/`` or ``test/`` split, or, with ``val_split=N``, N training images
held out class-stratified (:func:`stratified_split`, seed ``split_seed``, 0 by default, independent of
the training seed), so the same images are held out on every run and by ``localmamba.evaluate``.
"""
from __future__ import annotations

import copy
import io
import math
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

DATASETS = ("cifar10", "cifar100", "imagenet", "fake")
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DEFAULT_IMG_SIZE = {"cifar10": 32, "cifar100": 32, "fake": 32, "imagenet": 224}
_TORCHVISION = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py"),
    "cifar100": ("CIFAR100", "cifar-100-python"),
}


class DataError(RuntimeError):
    """A data folder or file is missing or not in the expected layout."""


# ----------------------------------------------------------------------------------------------
# In-memory images
# ----------------------------------------------------------------------------------------------
class InMemoryImages(Dataset):
    """Decoded images kept in memory. images: r(N H W 3) uint8, labels: r(N) int64.

    ``transform`` (a PIL transform, set by the engine) is applied per item; without one an item is
    the uint8 HWC tensor itself.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], transform=None):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (N, H, W, 3), got {tuple(images.shape)} {images.dtype}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images  # r(N H W 3) uint8
        self.labels = labels.long()  # r(N)
        self.classes = list(classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = self.images[i]
        if self.transform is not None:
            img = self.transform(Image.fromarray(img.numpy()))
        return img, int(self.labels[i])

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()

    def subset(self, indices) -> "InMemoryImages":
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return InMemoryImages(self.images[idx], self.labels[idx], self.classes, self.transform)


def _decode_rgb(buf: bytes, size: Optional[int] = None) -> np.ndarray:
    img = Image.open(io.BytesIO(buf)).convert("RGB")
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    return np.asarray(img)


def load_npz(path: str | os.PathLike, workers: int = 8) -> InMemoryImages:
    """Decode an ``.npz`` of concatenated JPEG files (format in the module docstring) into memory."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"npz file not found: {path}")
    try:
        d = dict(np.load(path))  # load once: indexing the lazy NpzFile re-reads the file
    except Exception as e:  # noqa: BLE001 - any reader failure means the file is not a usable npz
        raise DataError(f"could not read {path} as .npz ({type(e).__name__}: {e})") from e
    missing = {"jpeg", "offsets", "labels", "classes"} - set(d)
    if missing:
        raise DataError(f"{path}: missing arrays {sorted(missing)}; expected 'jpeg' (uint8, JPEG files "
                        "concatenated), 'offsets' (int64, N+1), 'labels' (int64, N), 'classes' (str, C)")
    jpeg, offsets, labels = d["jpeg"], d["offsets"].astype(np.int64), d["labels"].astype(np.int64)
    n = len(labels)
    if len(offsets) != n + 1 or offsets[0] != 0 or offsets[-1] != len(jpeg) or np.any(np.diff(offsets) <= 0):
        raise DataError(f"{path}: 'offsets' must be increasing, N+1={n + 1} long, from 0 to len(jpeg)="
                        f"{len(jpeg)}; got {len(offsets)} values from {offsets[:1]} to {offsets[-1:]}")
    classes = [str(c) for c in d["classes"]]
    if n and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DataError(f"{path}: labels must lie in [0, {len(classes)})")
    # decoding is mostly Python overhead for small images: processes, in chunks, beat threads
    bounds = np.linspace(0, n, max(1, min(workers, n // 2000)) * 4 + 1).astype(int)
    jobs = [(jpeg[offsets[a]:offsets[b]], offsets[a:b + 1] - offsets[a]) for a, b in zip(bounds[:-1], bounds[1:])]
    if len(jobs) > 4:
        import multiprocessing as mp

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            parts = list(pool.map(_decode_chunk, jobs))
    else:
        parts = [_decode_chunk(j) for j in jobs]
    if any(isinstance(p, str) for p in parts):
        raise DataError(f"{path}: {next(p for p in parts if isinstance(p, str))}")
    parts = [p for p in parts if len(p)]
    if len({p.shape[1:] for p in parts}) > 1:
        raise DataError(f"{path}: images differ in size; all must be equal")
    images = torch.from_numpy(np.concatenate(parts)) if parts else torch.zeros(0, 1, 1, 3, dtype=torch.uint8)
    return InMemoryImages(images, torch.from_numpy(labels), classes)


def _decode_chunk(job):
    """Decode the JPEGs of one chunk: (bytes, local offsets) -> r(n H W 3) uint8, or an error string."""
    buf, offs = job
    arrays = [_decode_rgb(buf[offs[i]:offs[i + 1]].tobytes()) for i in range(len(offs) - 1)]
    if len({a.shape for a in arrays}) > 1:
        return f"images differ in size ({sorted({a.shape for a in arrays})[:3]} ...); all must be equal"
    return np.stack(arrays) if arrays else np.zeros((0, 1, 1, 3), np.uint8)


def save_npz(path: str | os.PathLike, images: np.ndarray, labels, classes, quality: int = 95) -> None:
    """Write images r(N H W 3) uint8 in the ``.npz`` JPEG format (the inverse of :func:`load_npz`)."""
    bufs = []
    for img in images:
        b = io.BytesIO()
        Image.fromarray(np.asarray(img, dtype=np.uint8)).save(b, format="JPEG", quality=quality)
        bufs.append(np.frombuffer(b.getvalue(), dtype=np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in bufs])]).astype(np.int64)
    np.savez(path, jpeg=np.concatenate(bufs) if bufs else np.zeros(0, np.uint8), offsets=offsets,
             labels=np.asarray(labels, dtype=np.int64), classes=np.asarray(list(classes)))


# ----------------------------------------------------------------------------------------------
# Generated data
# ----------------------------------------------------------------------------------------------
def make_fake_images(num_classes: int = 10, num_images: int = 1000, size: int = 32, seed: int = 0,
                     noise: float = 32.0) -> InMemoryImages:
    """Class-conditional images for tests and demos. Classes pair a colour with a stripe frequency
    (about sqrt(C) colours, each shared by several classes, so colour alone does not tell them apart);
    each image has its own stripe orientation and phase, brightness and Gaussian noise, so flips and
    rotations keep the class. Balanced: image i has label i % num_classes. Learnable by a small model
    in a few hundred steps, not in a few."""
    g = np.random.default_rng(seed)
    c = np.arange(num_classes)
    n_col = max(1, math.ceil(math.sqrt(num_classes)))
    col, pat = c % n_col, c // n_col  # colour index, pattern index
    n_pat = int(pat.max()) + 1
    hue = col / n_col
    colour = 255 * np.stack([0.5 + 0.35 * np.cos(2 * np.pi * (hue + k / 3)) for k in range(3)], -1)  # (C, 3)
    periods = np.linspace(1.5, max(1.5, min(1.5 * n_pat, size / 4)), n_pat)  # stripes across the image
    freq = 2 * np.pi * periods[pat] / size  # (C,)
    labels = np.arange(num_images) % num_classes
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = g.uniform(0, np.pi, size=(num_images, 1, 1))
    proj = np.cos(angle) * xx + np.sin(angle) * yy  # (N, H, W)
    phase = g.uniform(0, 2 * np.pi, size=(num_images, 1, 1))
    stripes = np.sin(freq[labels, None, None] * proj + phase)  # (N, H, W) in [-1, 1]
    bright = g.uniform(0.75, 1.25, size=(num_images, 1, 1, 1))
    img = bright * colour[labels, None, None, :] * (0.55 + 0.45 * stripes[..., None])  # (N, H, W, 3)
    img = img + g.normal(0, noise, size=img.shape)
    images = torch.from_numpy(np.clip(img, 0, 255).astype(np.uint8))
    classes = [f"class_{i}" for i in range(num_classes)]
    return InMemoryImages(images, torch.from_numpy(labels.astype(np.int64)), classes)


def make_fake_image_folder(root: str | os.PathLike, num_classes: int = 4, train_per_class: int = 32,
                           val_per_class: int = 8, size: int = 64, seed: int = 0) -> Path:
    """Write generated images (:func:`make_fake_images`) as ``root/{train,val}/<class>/*.png``: an
    ImageNet-style folder in miniature. Returns ``root``."""
    root = Path(root)
    for split, per_class, s in (("train", train_per_class, seed), ("val", val_per_class, seed + 1)):
        ds = make_fake_images(num_classes, num_classes * per_class, size, seed=s)
        for i, (img, label) in enumerate(zip(ds.images, ds.labels)):
            d = root / split / ds.classes[int(label)]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.numpy()).save(d / f"{i:06d}.png")
    return root


# ----------------------------------------------------------------------------------------------
# Image folders
# ----------------------------------------------------------------------------------------------
_FOLDER_LAYOUT = ("expected an image folder: {root}/train/<class>/*.jpg|png and {root}/val/<class>/* "
                  "(or {root}/test/<class>/*), one sub-folder per class with the same class names in each")


def _class_folders(d: Path) -> Optional[list[str]]:
    """Sorted sub-folder names of ``d`` (ImageFolder's classes, without listing images); None if absent."""
    return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else None


def _check_split_dir(root: Path, split: str) -> Path:
    d = root / split
    if not d.is_dir():
        raise DataError(f"{d} does not exist; " + _FOLDER_LAYOUT.format(root=root))
    classes = _class_folders(d)
    if not classes:
        raise DataError(f"{d} has no class sub-folders; " + _FOLDER_LAYOUT.format(root=root))
    empty = [c for c in classes if not any(f.suffix.lower() in IMG_EXTENSIONS for f in (d / c).iterdir())]
    if empty:
        raise DataError(f"{d}: class folders without images ({', '.join(empty[:5])}); "
                        + _FOLDER_LAYOUT.format(root=root))
    return d


def find_val_dir(root: Path) -> Optional[str]:
    """'val' or 'test' when ``root`` has such a folder, else None."""
    for name in ("val", "test"):
        if (root / name).is_dir():
            return name
    return None


def load_image_folder(root: str | os.PathLike, split: str, in_memory: bool = False,
                      size: Optional[int] = None, workers: int = 8, classes: Optional[list[str]] = None):
    """``root/split/<class>/*`` as a torchvision ``ImageFolder`` (files read per item) or, with
    ``in_memory``, decoded once into :class:`InMemoryImages` (images resized to ``size`` if given and
    different). ``classes`` (from the training split) fixes the label order of a validation split."""
    from torchvision.datasets import ImageFolder

    root = Path(root)
    d = _check_split_dir(root, split)
    ds = ImageFolder(str(d))
    if classes is not None and ds.classes != list(classes):
        raise DataError(f"{d}: class folders {ds.classes[:5]}... differ from the training split's "
                        f"{list(classes)[:5]}...; " + _FOLDER_LAYOUT.format(root=root))
    if not in_memory:
        return ds

    def read(path):
        with open(path, "rb") as f:
            return _decode_rgb(f.read(), size)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        arrays = list(pool.map(read, [p for p, _ in ds.samples], chunksize=64))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(f"{d}: images differ in size ({sorted(shapes)[:3]} ...); pass an image size "
                        "to resize them or use in_memory=False")
    return InMemoryImages(torch.from_numpy(np.stack(arrays)), torch.tensor(ds.targets), ds.classes)


def _subset(ds, indices):
    """A subset that keeps the dataset's type (and so its ``transform`` attribute)."""
    if isinstance(ds, InMemoryImages):
        return ds.subset(indices)
    out = copy.copy(ds)  # an ImageFolder
    out.samples = [ds.samples[i] for i in indices]
    out.imgs = out.samples
    out.targets = [s[1] for s in out.samples]
    return out


def stratified_split(labels, n_held: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (kept, held_out) with ``n_held`` held out, class-stratified.

    Each class gives its share of ``n_held`` (largest-remainder rounding, so the total is exact),
    chosen by a ``numpy.random.default_rng(seed)`` permutation: a fixed seed holds out the same images
    every time. Both index arrays are sorted.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if not 0 <= n_held < n:
        raise ValueError(f"cannot hold out {n_held} of {n} images")
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n_held / n
    take = np.floor(quota).astype(int)
    rest = n_held - take.sum()
    take[np.argsort(-(quota - take), kind="stable")[:rest]] += 1
    rng = np.random.default_rng(seed)
    held = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    held = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    kept = np.setdiff1d(np.arange(n), held)
    return kept, held


# ----------------------------------------------------------------------------------------------
# Building train / val sets
# ----------------------------------------------------------------------------------------------
def _load_torchvision(name: str, root: Path, train: bool, download: bool) -> InMemoryImages:
    import torchvision

    cls_name, folder = _TORCHVISION[name]
    if not download and not (root / folder).is_dir():
        raise DataError(
            f"{name} not found: looked for {root / folder} (torchvision's layout), {root}/train/<class>/ "
            f"(an image folder) and an .npz file. Get it with `--download` (torchvision fetches it into "
            f"{root}), or point --data-dir at an image folder or .npz file.")
    try:
        ds = getattr(torchvision.datasets, cls_name)(str(root), train=train, download=download)
    except RuntimeError as e:
        raise DataError(f"{name} in {root / folder} is incomplete or corrupt ({e}); delete it and rerun "
                        "with --download") from e
    return InMemoryImages(torch.from_numpy(ds.data), torch.tensor(ds.targets), ds.classes)


def build_datasets(dataset: str, data_dir: Optional[str] = None, *, img_size: Optional[int] = None,
                   val_split: int = 0, split_seed: int = 0, train_subset: int = 0, val_subset: int = 0,
                   download: bool = False, in_memory: Optional[bool] = None, num_classes: int = 10,
                   fake_train_size: int = 1000, fake_val_size: int = 200, workers: int = 8,
                   load_train: bool = True):
    """Training and validation sets (transforms not set) and the class names.

    Returns ``(train_set, val_set_or_None, classes)``. ``val_split=N`` holds N training images out as
    the validation set (stratified, :func:`stratified_split`), in place of any val/test split;
    ``train_subset`` / ``val_subset`` keep a stratified subset (quick runs on real data).
    ``load_train=False`` (evaluation) skips reading the training images when the validation set
    does not come from them (no ``val_split``; an ``.npz`` has nothing else): ``train_set`` is None.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    size = img_size or DEFAULT_IMG_SIZE[dataset]
    need_train = load_train or bool(val_split)
    train = val = None
    if dataset == "fake":
        if need_train:
            train = make_fake_images(num_classes, fake_train_size, size, seed=0)
        if not val_split:
            val = make_fake_images(num_classes, fake_val_size, size, seed=1)
    else:
        if not data_dir:
            raise DataError(f"--data-dir is required for dataset {dataset!r}")
        root = Path(data_dir).expanduser()
        vname = find_val_dir(root)
        if root.suffix == ".npz":
            train = load_npz(root, workers=workers)
        elif dataset == "imagenet" or (root / "train").is_dir() or (not need_train and vname is not None):
            if not root.is_dir():
                raise DataError(f"{root} does not exist; " + _FOLDER_LAYOUT.format(root=root))
            mem = (dataset != "imagenet") if in_memory is None else in_memory
            if need_train:
                train = load_image_folder(root, "train", mem, size if mem else None, workers)
            if vname is None and not val_split and (root / "train").is_dir():
                raise DataError(f"{root} has train/ but no val/ or test/ folder; add one or hold out "
                                "training images with --val-split N. " + _FOLDER_LAYOUT.format(root=root))
            if not val_split:
                # without the training images, their class folders alone fix the label order
                classes = train.classes if train is not None else _class_folders(root / "train")
                val = load_image_folder(root, vname or "val", mem, size if mem else None, workers, classes)
        else:
            if need_train:
                train = _load_torchvision(dataset, root, True, download)
            if not val_split:
                val = _load_torchvision(dataset, root, False, download)
    classes = list((train if train is not None else val).classes)
    if val_split:
        if not 0 < val_split < len(train):
            raise DataError(f"--val-split {val_split} holds out too many images: the training set has "
                            f"{len(train)}; choose fewer")
        kept, held = stratified_split(train.targets, val_split, split_seed)
        train, val = _subset(train, kept), _subset(train, held)
    if train is not None and train_subset and train_subset < len(train):
        _, keep = stratified_split(train.targets, train_subset, split_seed + 1)
        train = _subset(train, keep)
    if val is not None and val_subset and val_subset < len(val):
        _, keep = stratified_split(val.targets, val_subset, split_seed + 2)
        val = _subset(val, keep)
    return train, val, classes
