"""make_synthetic_coco: a COCO folder that CocoInstances reads, with masks, boxes and pixels that agree."""
import json

import pytest
import torch

from localmamba.detection.data import SYNTHETIC_CATEGORIES, CocoInstances, make_synthetic_coco


def test_generated_folder_loads_with_masks(tmp_path):
    make_synthetic_coco(tmp_path, n_images=6, size=(120, 160), split="val2017", seed=1)
    ds = CocoInstances(tmp_path, "val2017")
    assert len(ds) == 6 and ds.categories == {c["id"]: c["name"] for c in SYNTHETIC_CATEGORIES}
    for i in range(len(ds)):
        image, t = ds[i]
        assert image.shape == (3, 120, 160)
        objects = ~t["iscrowd"].bool()
        assert int(objects.sum()) == (0 if i == len(ds) - 1 else 1 + i % 3)
        assert int(t["iscrowd"].sum()) == (1 if i == 0 else 0)
        assert t["masks"].shape == (len(t["labels"]), 120, 160)
        for box, mask in zip(t["boxes"][objects], t["masks"][objects]):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert len(xs) > 50
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]  # the box of the mask
        shapes = t["masks"][objects].bool().any(0) if objects.any() else torch.zeros(120, 160, dtype=torch.bool)
        gray = image.mean(0)  # the shapes are bright, the noise dark (JPEG blurs the edges)
        if objects.any():
            assert gray[shapes].mean() > 0.4
        assert gray[~shapes].mean() < 0.2


def test_same_seed_same_folder(tmp_path):
    a = make_synthetic_coco(tmp_path / "a", seed=3)
    assert a == make_synthetic_coco(tmp_path / "b", seed=3)
    assert a != make_synthetic_coco(tmp_path / "c", seed=4)
    assert json.loads((tmp_path / "a" / "annotations" / "instances_train2017.json").read_text()) == a


def test_too_small_is_refused(tmp_path):
    with pytest.raises(ValueError, match="size"):
        make_synthetic_coco(tmp_path, size=(32, 32))
