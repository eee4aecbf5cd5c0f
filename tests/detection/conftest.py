"""A tiny COCO-format folder made on the fly: rectangles drawn on noise, with polygon masks, one crowd
region (uncompressed RLE, as COCO stores crowds) and one image without annotations."""
import json

import numpy as np
import pytest
from PIL import Image

CATEGORIES = [dict(id=1, name="person"), dict(id=3, name="car"), dict(id=18, name="dog")]


def make_coco(root, n_images=4, size=(96, 128), split="train2017", seed=0):
    """Write ``root/{split}/*.jpg`` and ``root/annotations/instances_{split}.json``; returns the json dict."""
    rng = np.random.default_rng(seed)
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    H, W = size
    images, anns = [], []
    for i in range(n_images):
        img = rng.integers(0, 60, (H, W, 3), dtype=np.uint8)
        image_id = 10 + i
        if i < n_images - 1:  # the last image has no annotations
            for j, cat in enumerate(CATEGORIES[: 1 + i % 3]):
                x0, y0 = 8 + 30 * j, 10 + 5 * i
                w, h = 24, 40
                img[y0:y0 + h, x0:x0 + w] = 80 * (j + 1)
                poly = [x0, y0, x0 + w, y0, x0 + w, y0 + h, x0, y0 + h]
                anns.append(dict(id=len(anns) + 1, image_id=image_id, category_id=cat["id"], iscrowd=0,
                                 bbox=[x0, y0, w, h], area=float(w * h), segmentation=[poly]))
        if i == 0:  # a crowd region in the corner: column-major uncompressed RLE
            m = np.zeros((H, W), np.uint8)
            m[H - 20:, W - 30:] = 1
            flat = m.flatten(order="F")
            counts, cur, run = [], 0, 0
            for v in flat:
                if v != cur:
                    counts.append(run)
                    cur, run = v, 0
                run += 1
            counts.append(run)
            anns.append(dict(id=len(anns) + 1, image_id=image_id, category_id=1, iscrowd=1,
                             bbox=[W - 30, H - 20, 30, 20], area=600.0, segmentation=dict(counts=counts, size=[H, W])))
        name = f"{image_id:012d}.jpg"
        Image.fromarray(img).save(root / split / name, quality=95)
        images.append(dict(id=image_id, file_name=name, height=H, width=W))
    data = dict(images=images, annotations=anns, categories=CATEGORIES)
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return data


@pytest.fixture
def tiny_coco(tmp_path):
    root = tmp_path / "coco"
    make_coco(root)
    return root
