"""COCO-format instance data through torchvision: ``CocoDetection`` + the transforms-v2 wrapper.

The wrapper turns polygons and RLE into masks and COCO's xywh boxes into xyxy. Crowd regions are
handled as COCO does: kept out of training targets (torchvision's and mmdetection's detectors ignore
them) and left to ``COCOeval``, which treats them as regions where detections count neither way.
Images without annotations give empty targets (negatives for the RPN and box heads).
``make_synthetic_coco`` writes a small COCO-format folder (shapes on noise) for tests and for the notebook
on a machine without COCO data.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2
from torchvision.transforms import v2

from ..engine.data import DataError

__all__ = ["CocoDataError", "find_coco", "CocoInstances", "train_transforms", "collate", "split_ids",
           "make_synthetic_coco", "SYNTHETIC_CATEGORIES"]


class CocoDataError(DataError, FileNotFoundError):
    """A COCO folder, image or annotation file that is missing or does not match (the engine's DataError:
    the CLIs print it as one line)."""


def find_coco(root: str | os.PathLike, split: str = "train2017") -> tuple[Path, Path]:
    """(image folder, annotation json) of ``split`` in a COCO-layout folder:
    ``root/{split}/`` and ``root/annotations/instances_{split}.json`` (coco128 has only train2017)."""
    root = Path(root)
    if not root.is_dir():
        raise CocoDataError(f"COCO folder not found: {root}")
    ann = root / "annotations" / f"instances_{split}.json"
    if not ann.is_file():
        found = sorted(p.name for p in (root / "annotations").glob("*.json")) if (root / "annotations").is_dir() else []
        hint = f"found {', '.join(found)}: pick the split by its name" if found else "no annotations/ folder with jsons"
        raise CocoDataError(f"{root} has no annotations for split {split!r}: expected {ann} ({hint}); "
                                f"or pass images= and ann_file= explicitly")
    images = root / split
    if not images.is_dir():
        raise CocoDataError(f"{root} has annotations for {split!r} but no image folder {images}")
    return images, ann


def _check_images(images: Path, ann_file: Path) -> dict:
    """Read the json and fail in one line if any image it lists is missing from ``images``."""
    with open(ann_file) as f:
        data = json.load(f)
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise CocoDataError(f"{ann_file} is not a COCO instances json (needs 'images' and 'annotations')")
    present = set(os.listdir(images))
    missing = [im["file_name"] for im in data["images"] if im["file_name"] not in present]
    if missing:
        raise CocoDataError(f"{len(missing)} of {len(data['images'])} images listed in {ann_file} are missing "
                                f"from {images} (first: {missing[0]}); is this the json of that folder?")
    return data


class CocoInstances(Dataset):
    """(image, target) pairs of a COCO instances json, ready for torchvision's detectors.

    image: float (3, H, W) in [0, 1]; target: ``boxes`` (N, 4) xyxy, ``labels`` (N,) COCO category ids,
    ``masks`` (N, H, W) uint8, ``image_id``, and ``iscrowd`` (N,) unless ``drop_crowd``.
    ``ids`` restricts the dataset to those image ids (a split). Either ``root`` (+ ``split``) or
    ``images`` + ``ann_file``.
    """

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train2017", *,
                 images: str | os.PathLike | None = None, ann_file: str | os.PathLike | None = None,
                 transforms: v2.Transform | None = None, drop_crowd: bool = False, ids: Sequence[int] | None = None):
        if images is None or ann_file is None:
            if root is None:
                raise ValueError("give a COCO folder (root=) or both images= and ann_file=")
            images, ann_file = find_coco(root, split)
        self.images, self.ann_file = Path(images), Path(ann_file)
        if not self.images.is_dir():
            raise CocoDataError(f"image folder not found: {self.images}")
        if not self.ann_file.is_file():
            raise CocoDataError(f"annotation file not found: {self.ann_file}")
        _check_images(self.images, self.ann_file)
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its loading times
            base = CocoDetection(str(self.images), str(self.ann_file))
        self.coco = base.coco
        self._wrapped = wrap_dataset_for_transforms_v2(
            base, target_keys={"image_id", "boxes", "labels", "masks", "iscrowd"})
        index = {img_id: i for i, img_id in enumerate(base.ids)}
        if ids is None:
            ids = base.ids
        unknown = [i for i in ids if i not in index]
        if unknown:
            raise CocoDataError(f"image ids not in {self.ann_file}: {unknown[:5]}")
        self.ids = list(ids)
        self._index = [index[i] for i in self.ids]
        self.transforms = transforms
        self.drop_crowd = drop_crowd
        self.categories = {c["id"]: c["name"] for c in self.coco.loadCats(self.coco.getCatIds())}

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, ids: Sequence[int]) -> "CocoInstances":
        """The same data restricted to ``ids`` (shares the parsed json)."""
        out = object.__new__(CocoInstances)
        out.__dict__.update(self.__dict__)
        index = dict(zip(self.ids, self._index))
        out.ids, out._index = list(ids), [index[i] for i in ids]
        return out

    def __getitem__(self, i: int):
        image, target = self._wrapped[self._index[i]]
        image = v2.functional.to_image(image)  # (3, H, W) uint8
        H, W = image.shape[-2:]
        if "boxes" not in target:  # no annotations: the wrapper returns only the image id
            target = dict(image_id=target["image_id"], iscrowd=[],
                          boxes=tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(H, W)),
                          labels=torch.zeros(0, dtype=torch.int64),
                          masks=tv_tensors.Mask(torch.zeros(0, H, W, dtype=torch.uint8)))
        crowd = torch.as_tensor(target["iscrowd"], dtype=torch.bool).reshape(-1)  # (N,)
        target["iscrowd"] = crowd.long()
        if self.drop_crowd:
            keep = ~crowd
            b, m = target["boxes"], target["masks"]  # indexing returns plain tensors: wrap them again
            target = dict(image_id=target["image_id"], boxes=tv_tensors.wrap(b[keep], like=b),
                          labels=target["labels"][keep], masks=tv_tensors.wrap(m[keep], like=m))
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        image = v2.functional.to_dtype(image, torch.float32, scale=True)
        target["boxes"] = target["boxes"].as_subclass(torch.Tensor)
        target["masks"] = target["masks"].as_subclass(torch.Tensor).to(torch.uint8)
        return image.as_subclass(torch.Tensor), target


def train_transforms(flip: float = 0.5, lsj_size: int | None = None,
                     lsj_scale: tuple[float, float] = (0.1, 2.0)) -> v2.Transform:
    """Training augmentation: horizontal flip, optionally large-scale jitter (resize by a random factor of
    ``lsj_size`` then crop/pad to ``lsj_size`` squared, ViTDet's). Resizing to the detector's
    ``min_size``/``max_size`` (one or several shorter sides) happens inside torchvision's model."""
    ts: list[v2.Transform] = []
    if lsj_size:
        ts += [v2.ScaleJitter((lsj_size, lsj_size), scale_range=lsj_scale, antialias=True),
               v2.RandomCrop(lsj_size, pad_if_needed=True)]
    if flip > 0:
        ts.append(v2.RandomHorizontalFlip(flip))
    ts.append(v2.SanitizeBoundingBoxes(min_size=1.0))  # boxes cropped away or degenerate go, with their masks
    return v2.Compose(ts)


def collate(batch):
    """Lists of images and targets, as torchvision's detectors take them."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def split_ids(ids: Sequence[int], holdout: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """A fixed (train, held-out) split of image ids: ``holdout`` ids drawn with ``seed``."""
    if not 0 <= holdout < len(ids):
        raise ValueError(f"holdout must be in [0, {len(ids)}), got {holdout}")
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed)).tolist()
    ids = sorted(ids)
    held = sorted(ids[i] for i in order[:holdout])
    held_set = set(held)
    return [i for i in ids if i not in held_set], held


# Sparse ids, as COCO's are (1..90 with gaps): each category is one shape, so the class is learnable from the image.
SYNTHETIC_CATEGORIES = [dict(id=1, name="rectangle"), dict(id=3, name="ellipse"), dict(id=18, name="triangle")]


def _shape_polygon(name: str, x0: int, y0: int, w: int, h: int) -> list[float]:
    """The flat [x1, y1, x2, y2, ...] polygon of a shape filling the box (x0, y0, w, h), integer vertices."""
    if name == "rectangle":
        pts = [(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h)]
    elif name == "triangle":
        pts = [(x0 + w // 2, y0), (x0 + w, y0 + h), (x0, y0 + h)]
    else:  # ellipse: 24 vertices
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        pts = zip(np.round(x0 + w / 2 * (1 + np.cos(t))), np.round(y0 + h / 2 * (1 + np.sin(t))))
    return [float(v) for p in pts for v in p]


def _uncompressed_rle(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE counts of a (H, W) 0/1 mask: run lengths in column-major order, zeros first."""
    counts, cur, run = [], 0, 0
    for v in mask.flatten(order="F"):
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    return counts


def make_synthetic_coco(root: str | os.PathLike, n_images: int = 4, size: tuple[int, int] = (96, 128),
                        split: str = "train2017", seed: int = 0) -> dict:
    """Write a small COCO-format folder, ``root/{split}/*.jpg`` and ``root/annotations/instances_{split}.json``;
    returns the json dict. For tests and for trying the detection code without COCO on disk.

    Images are noise (values 0-60) with bright filled shapes, one category per shape
    (``SYNTHETIC_CATEGORIES``: rectangle, ellipse, triangle); every object has a polygon mask and the box and
    area of that polygon as pycocotools rasterises it, so pixels, masks and boxes agree exactly.
    Image ``i`` holds ``1 + i % 3`` objects side by side, except that the first image also holds one crowd
    region (a 30x20 uncompressed RLE in its bottom-right corner, as COCO stores crowds) and the last image
    has no annotations (a negative). Same ``seed``, same folder.
    """
    from pycocotools import mask as mask_utils  # a dependency of torchvision's CocoDetection

    H, W = size
    if n_images < 2 or H < 48 or W < 64:
        raise ValueError(f"make_synthetic_coco needs n_images >= 2 and size >= (48, 64), got {n_images} and {size}")
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    images, anns = [], []
    for i in range(n_images):
        img = rng.integers(0, 60, (H, W, 3), dtype=np.uint8)  # (H, W, 3)
        image_id = 10 + i
        if i < n_images - 1:  # the last image has no annotations
            n = 1 + i % 3
            bottom = H - 22 if i == 0 else H - 2  # image 0 keeps its bottom rows for the crowd
            slot = W // n  # objects side by side in equal slots: no overlaps
            for j in range(n):
                cat = SYNTHETIC_CATEGORIES[(i + j) % len(SYNTHETIC_CATEGORIES)]
                w = int(rng.integers(slot * 2 // 5, slot * 4 // 5))
                h = int(rng.integers(bottom * 2 // 5, bottom * 4 // 5))
                x0 = j * slot + 2 + int(rng.integers(0, slot - w - 3))
                y0 = 2 + int(rng.integers(0, bottom - h - 2))
                poly = _shape_polygon(cat["name"], x0, y0, w, h)
                rle = mask_utils.merge(mask_utils.frPyObjects([poly], H, W))
                img[mask_utils.decode(rle).astype(bool)] = rng.integers(120, 256, 3)
                anns.append(dict(id=len(anns) + 1, image_id=image_id, category_id=cat["id"], iscrowd=0,
                                 bbox=[float(v) for v in mask_utils.toBbox(rle)],
                                 area=float(mask_utils.area(rle)), segmentation=[poly]))
        if i == 0:  # a crowd region in the corner
            m = np.zeros((H, W), np.uint8)
            m[H - 20:, W - 30:] = 1
            anns.append(dict(id=len(anns) + 1, image_id=image_id, category_id=SYNTHETIC_CATEGORIES[0]["id"],
                             iscrowd=1, bbox=[W - 30, H - 20, 30, 20], area=600.0,
                             segmentation=dict(counts=_uncompressed_rle(m), size=[H, W])))
        name = f"{image_id:012d}.jpg"
        Image.fromarray(img).save(root / split / name, quality=95)
        images.append(dict(id=image_id, file_name=name, height=H, width=W))
    data = dict(images=images, annotations=anns, categories=SYNTHETIC_CATEGORIES)
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return data
