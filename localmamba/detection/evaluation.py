"""COCO box and mask AP with pycocotools' ``COCOeval`` (the 12 standard numbers each), gathered over
processes under DDP; and drawing predictions with ``torchvision.utils``."""
from __future__ import annotations

import contextlib
import copy
import io
from typing import Iterable, Sequence

import numpy as np
import torch
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm.auto import tqdm

from ..engine.distributed import all_gather_object

__all__ = ["STAT_NAMES", "predictions_to_coco", "predict_coco", "coco_evaluate", "evaluate", "format_table", "draw_predictions"]

#: COCOeval.stats in order: AP at IoU .50:.95, .50, .75, small/medium/large; AR at 1/10/100 dets, small/medium/large
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def predictions_to_coco(output: dict, image_id: int, mask_threshold: float = 0.5) -> list[dict]:
    """One image's detector output (boxes xyxy, labels, scores, masks (N, 1, H, W) probabilities) as
    COCO result entries: xywh boxes and RLE masks of the thresholded probabilities."""
    boxes = output["boxes"].detach().float().cpu()
    if boxes.numel() == 0:
        return []
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
    scores, labels = output["scores"].tolist(), output["labels"].tolist()
    rles = [None] * len(scores)
    if "masks" in output:
        m = (output["masks"][:, 0] > mask_threshold).cpu().numpy().astype(np.uint8)  # (N, H, W)
        rles = mask_util.encode(np.asfortranarray(m.transpose(1, 2, 0)))  # one RLE per detection
        for r in rles:
            r["counts"] = r["counts"].decode("ascii")  # JSON-friendly
    out = []
    for box, s, c, r in zip(xywh, scores, labels, rles):
        d = dict(image_id=int(image_id), category_id=int(c), bbox=[round(v, 2) for v in box], score=float(s))
        if r is not None:
            d["segmentation"] = r
        out.append(d)
    return out


def coco_evaluate(coco_gt: COCO, results: list[dict], img_ids: Sequence[int] | None = None,
                  iou_types: Sequence[str] = ("bbox", "segm")) -> dict[str, dict[str, float]]:
    """``{iou_type: {AP, AP50, ..., ARl}}`` of COCO result entries against ``coco_gt`` (restricted to
    ``img_ids``). No detection at all scores 0 (COCOeval cannot load an empty result list)."""
    img_ids = sorted(coco_gt.getImgIds() if img_ids is None else img_ids)
    coco_gt = _gt_copy(coco_gt, img_ids)
    metrics = {}
    for iou in iou_types:
        rs = [r for r in results if iou == "bbox" or "segmentation" in r]
        if not rs:
            metrics[iou] = {k: 0.0 for k in STAT_NAMES}
            continue
        with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints as it goes
            dt = coco_gt.loadRes([dict(r) for r in rs])  # loadRes adds fields in place
            ev = COCOeval(coco_gt, dt, iou)
            ev.params.imgIds = img_ids
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        metrics[iou] = {k: float(v) for k, v in zip(STAT_NAMES, ev.stats)}
    return metrics


def _gt_copy(coco_gt: COCO, img_ids: Sequence[int]) -> COCO:
    """The ground truth of ``img_ids`` as a new COCO: COCOeval replaces the segmentations it reads by RLEs
    with bytes counts, which the dataset (torchvision's wrapper) could no longer decode."""
    ids = set(img_ids)
    d = coco_gt.dataset
    gt = COCO()
    gt.dataset = dict(d, images=[im for im in d["images"] if im["id"] in ids],
                      annotations=[copy.deepcopy(a) for a in d["annotations"] if a["image_id"] in ids])
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


@torch.no_grad()
def predict_coco(model: torch.nn.Module, loader: Iterable, device: torch.device | str = "cpu",
                 amp_dtype: torch.dtype | None = None, progress: bool = True) -> list[dict]:
    """COCO result entries of ``model`` over ``loader`` (lists of images and targets with ``image_id``),
    gathered from every process (each process returns all of them)."""
    model.eval()
    device = torch.device(device)
    results = []
    for images, targets in tqdm(loader, desc="eval", disable=not progress, leave=False):
        images = [im.to(device, non_blocking=True) for im in images]
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs = model(images)
        for out, t in zip(outputs, targets):
            results += predictions_to_coco(out, int(t["image_id"]))
    return [r for part in all_gather_object(results) for r in part]


def evaluate(model: torch.nn.Module, loader: Iterable, coco_gt: COCO, device: torch.device | str = "cpu",
             img_ids: Sequence[int] | None = None, amp_dtype: torch.dtype | None = None,
             progress: bool = True) -> dict[str, dict[str, float]]:
    """:func:`predict_coco` scored by :func:`coco_evaluate`; every process returns the same metrics."""
    results = predict_coco(model, loader, device, amp_dtype, progress)
    if img_ids is None:
        img_ids = getattr(getattr(loader, "dataset", None), "ids", None)
    return coco_evaluate(coco_gt, results, img_ids)


def format_table(metrics: dict[str, dict[str, float]]) -> str:
    """A markdown table, one row per IoU type, values in percent ("n/a" where COCOeval has no object)."""
    head = "| | " + " | ".join(STAT_NAMES) + " |\n|---|" + "---:|" * len(STAT_NAMES) + "\n"
    cell = lambda v: f"{100 * v:.1f}" if v >= 0 else "n/a"  # COCOeval's -1: no object of that size  # noqa: E731
    rows = [f"| {iou} | " + " | ".join(cell(v) for v in m.values()) + " |" for iou, m in metrics.items()]
    return head + "\n".join(rows)


def draw_predictions(image: torch.Tensor, output: dict, categories: dict[int, str] | None = None,
                     score_thresh: float = 0.5, mask_threshold: float = 0.5, alpha: float = 0.5) -> torch.Tensor:
    """``image`` (3, H, W), float in [0, 1] or uint8, with the detections above ``score_thresh`` drawn:
    masks, boxes and "name score" labels. Returns a uint8 (3, H, W) image."""
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    img = image.detach().cpu()
    if img.is_floating_point():
        img = (img.clamp(0, 1) * 255).to(torch.uint8)
    keep = output["scores"].detach().cpu() >= score_thresh
    boxes = output["boxes"].detach().float().cpu()[keep]
    labels = output["labels"].cpu()[keep].tolist()
    scores = output["scores"].detach().cpu()[keep].tolist()
    if "masks" in output and keep.any():
        masks = output["masks"].detach().cpu()[keep][:, 0] > mask_threshold  # (N, H, W)
        img = draw_segmentation_masks(img, masks, alpha=alpha)
    names = [f"{(categories or {}).get(c, c)} {s:.2f}" for c, s in zip(labels, scores)]
    if len(boxes):
        img = draw_bounding_boxes(img, boxes, labels=names, width=2)
    return img
