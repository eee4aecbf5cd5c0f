"""COCO folders through torchvision's CocoDetection wrapper: masks from polygons, crowds, empty images, errors."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from localmamba.detection.data import CocoDataError, CocoInstances, collate, split_ids, train_transforms

import os

COCO128 = Path(os.environ.get("LOCALMAMBA_COCO128", Path(__file__).resolve().parents[2].parent / "shared/data/coco128"))


def test_masks_boxes_and_labels_from_polygons(tiny_coco):
    ds = CocoInstances(tiny_coco)
    image, t = ds[1]
    assert image.dtype == torch.float32 and image.shape == (3, 96, 128) and 0 <= image.min() and image.max() <= 1
    anns = ds.coco.loadAnns(ds.coco.getAnnIds(imgIds=ds.ids[1]))
    assert t["labels"].tolist() == [a["category_id"] for a in anns]
    for a, box, mask in zip(anns, t["boxes"], t["masks"]):
        x, y, w, h = a["bbox"]
        assert box.tolist() == [x, y, x + w, y + h]  # xywh -> xyxy
        assert torch.equal(mask, torch.from_numpy(ds.coco.annToMask(a)))  # the polygon, filled
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert (xs.min(), ys.min()) == (x, y)


def test_crowd_regions_kept_for_eval_dropped_for_training(tiny_coco):
    ev, tr = CocoInstances(tiny_coco), CocoInstances(tiny_coco, drop_crowd=True)
    _, t = ev[0]
    assert t["iscrowd"].tolist() == [0, 1]
    assert t["masks"][1].sum() == 600  # the crowd's RLE decoded
    _, t2 = tr[0]
    assert len(t2["boxes"]) == len(t2["labels"]) == len(t2["masks"]) == 1
    assert torch.equal(t2["masks"][0], t["masks"][0])


def test_image_without_annotations_gives_empty_targets(tiny_coco):
    ds = CocoInstances(tiny_coco, drop_crowd=True, transforms=train_transforms(flip=1.0))
    image, t = ds[len(ds) - 1]
    assert t["boxes"].shape == (0, 4) and t["labels"].shape == (0,) and t["masks"].shape == (0, 96, 128)
    images, targets = collate([ds[0], ds[len(ds) - 1]])
    assert len(images) == len(targets) == 2


def test_flip_moves_boxes_and_masks_together(tiny_coco):
    plain = CocoInstances(tiny_coco, drop_crowd=True)
    flipped = CocoInstances(tiny_coco, drop_crowd=True, transforms=train_transforms(flip=1.0))
    (im, t), (imf, tf) = plain[2], flipped[2]
    assert torch.equal(imf, im.flip(-1)) and torch.equal(tf["masks"], t["masks"].flip(-1))
    W = im.shape[-1]
    assert torch.equal(tf["boxes"][:, [0, 2]], W - t["boxes"][:, [2, 0]])


def test_large_scale_jitter_gives_the_square_crop(tiny_coco):
    ds = CocoInstances(tiny_coco, drop_crowd=True, transforms=train_transforms(lsj_size=64))
    torch.manual_seed(0)
    image, t = ds[1]
    assert image.shape == (3, 64, 64) and t["masks"].shape[1:] == (64, 64)
    assert len(t["boxes"]) == len(t["masks"]) == len(t["labels"])


def test_folder_without_annotations(tmp_path, tiny_coco):
    shutil.rmtree(tiny_coco / "annotations")
    with pytest.raises(CocoDataError, match="no annotations for split 'train2017'"):
        CocoInstances(tiny_coco)
    with pytest.raises(CocoDataError, match="instances_val2017.json"):
        CocoInstances(tmp_path, "val2017")


def test_json_whose_images_are_missing(tiny_coco):
    ann = tiny_coco / "annotations" / "instances_train2017.json"
    data = json.loads(ann.read_text())
    data["images"].append(dict(id=999, file_name="000000000999.jpg", height=10, width=10))
    ann.write_text(json.dumps(data))
    with pytest.raises(CocoDataError, match="1 of 5 images .* missing .*000000000999.jpg"):
        CocoInstances(tiny_coco)


def test_split_is_fixed_and_disjoint():
    ids = list(range(100, 140))
    a, b = split_ids(ids, 8, seed=3)
    assert (a, b) == split_ids(list(reversed(ids)), 8, seed=3)
    assert len(b) == 8 and not set(a) & set(b) and sorted(a + b) == ids


@pytest.mark.skipif(not COCO128.is_dir(), reason="shared/data/coco128 is not beside the clone")
def test_coco128_loads_with_its_crowds_and_empty_images():
    ds = CocoInstances(COCO128)
    assert len(ds) == 128
    crowd = next(i for i, img in enumerate(ds.ids) if any(a["iscrowd"] for a in ds.coco.imgToAnns[img]))
    _, t = ds[crowd]
    assert t["iscrowd"].sum() >= 1 and t["masks"].shape[0] == len(ds.coco.imgToAnns[ds.ids[crowd]])
    empty = [i for i, img in enumerate(ds.ids) if not ds.coco.imgToAnns[img]]
    assert empty and ds[empty[0]][1]["boxes"].shape == (0, 4)
