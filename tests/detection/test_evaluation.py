"""COCOeval through our conversion: the ground truth as predictions scores AP 1.0; drawing marks the image."""
import torch

from localmamba.detection.data import CocoInstances
from localmamba.detection.evaluation import STAT_NAMES, coco_evaluate, draw_predictions, predictions_to_coco


def _gt_as_predictions(ds):
    results = []
    for i in range(len(ds)):
        _, t = ds[i]
        out = dict(boxes=t["boxes"], labels=t["labels"], scores=torch.ones(len(t["labels"])),
                   masks=t["masks"][:, None].float())  # (N, 1, H, W) probabilities
        results += predictions_to_coco(out, t["image_id"])
    return results


def test_ground_truth_as_predictions_scores_one(tiny_coco):
    ds = CocoInstances(tiny_coco, drop_crowd=True)
    m = coco_evaluate(ds.coco, _gt_as_predictions(ds))
    assert set(m) == {"bbox", "segm"} and list(m["bbox"]) == list(STAT_NAMES)
    for iou in ("bbox", "segm"):
        assert m[iou]["AP"] == m[iou]["AP50"] == m[iou]["AP75"] == 1.0
    assert torch.equal(ds[0][1]["masks"], CocoInstances(tiny_coco, drop_crowd=True)[0][1]["masks"]), \
        "evaluating leaves the dataset's annotations readable and unchanged"


def test_a_shifted_box_scores_less(tiny_coco):
    ds = CocoInstances(tiny_coco, drop_crowd=True)
    results = _gt_as_predictions(ds)
    for r in results:
        r["bbox"][0] += r["bbox"][2] / 2  # IoU 1/3 with its object
    m = coco_evaluate(ds.coco, results, iou_types=("bbox",))
    assert m["bbox"]["AP50"] == 0.0


def test_no_detection_scores_zero(tiny_coco):
    ds = CocoInstances(tiny_coco)
    assert coco_evaluate(ds.coco, [])["segm"]["AP"] == 0.0


def test_draw_predictions(tiny_coco):
    ds = CocoInstances(tiny_coco, drop_crowd=True)
    image, t = ds[1]
    out = dict(boxes=t["boxes"], labels=t["labels"], scores=torch.tensor([0.9, 0.2]),
               masks=t["masks"][:, None].float())
    drawn = draw_predictions(image, out, ds.categories, score_thresh=0.5)
    assert drawn.dtype == torch.uint8 and drawn.shape == image.shape
    plain = (image * 255).to(torch.uint8)
    changed = (drawn != plain).any(0)
    assert changed[t["masks"][0].bool()].float().mean() > 0.9  # the kept detection's mask is painted
    x0, y0, x1, y1 = t["boxes"][1].int().tolist()
    assert not changed[y0 + 14:y1 - 3, x0 + 3:x1 - 3].any()  # the one under the threshold is not (below the label)
