"""COCO-format instance data through torchvision: ``CocoDetection`` + the transforms-v2 wrapper.

The wrapper turns polygons and RLE into masks and COCO's xywh boxes into xyxy. Crowd regions are
handled as COCO does: kept out of training targets (torchvision's and mmdetection's detectors ignore
them) and left to ``COCOeval``, which treats them as regions where detections count neither way.
Images without annotations give empty targets (negatives for the RPN and box heads).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Sequence

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2
from torchvision.transforms import v2

from ..engine.data import DataError

__all__ = ["CocoDataError", "find_coco", "CocoInstances", "train_transforms", "collate", "split_ids"]


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
