"""Mask R-CNN detectors by name, in the spirit of the original's mmdetection configs.

``mask_rcnn_{local_vssm,vmamba}_{tiny,small}_fpn``: LocalVMamba (or its global-scan twin) + FPN, the
original's Mask R-CNN 1x/3x models. ``mask_rcnn_{local_vim,vim}_{tiny,small}_sfp``: LocalVim (or Vim)
+ ViTDet's simple feature pyramid. ``mask_rcnn_test_*``: tiny variants for tests and CPU demos.
Labels are COCO category ids as they are (91 classes with background 0), as torchvision's detectors.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import timm
import torch.nn as nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from .. import models as _models  # registers the classifiers in timm
from ..engine.config import ConfigError
from ..models import CheckpointError, describe_state_dict, read_state_dict
from .backbones import SimpleFeaturePyramid, VMambaFPN

__all__ = ["DETECTORS", "list_detectors", "build_detector", "build_backbone", "load_backbone_checkpoint"]


@dataclass(frozen=True)
class DetectorSpec:
    classifier: str  # the timm name of the backbone's classifier
    neck: str  # "fpn" (LocalVMamba) or "sfp" (LocalVim)
    body_kwargs: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)  # build_detector defaults of this variant


#: the small heads and image sizes that keep a CPU step well under a second
_TINY = dict(neck_channels=32, mask_head_channels=16, box_head_size=64, min_size=128, max_size=192,
             detections_per_img=10, rpn_post_nms_top_n_train=200, rpn_post_nms_top_n_test=100,
             box_batch_size_per_image=64)

DETECTORS: dict[str, DetectorSpec] = {
    **{f"mask_rcnn_{c}_{s}_fpn": DetectorSpec(f"{c}_{s}", "fpn")
       for c in ("local_vssm", "vmamba") for s in ("tiny", "small")},
    **{f"mask_rcnn_{c}_{s}_sfp": DetectorSpec(f"{c}_{s}", "sfp")
       for c in ("local_vim", "vim") for s in ("tiny", "small")},
    # test_local_vssm with a 4-pixel stem (strides 4..32), test_local_vim with 16-pixel patches
    "mask_rcnn_test_local_vssm_fpn": DetectorSpec("test_local_vssm", "fpn", dict(patch_size=4), _TINY),
    "mask_rcnn_test_local_vim_sfp": DetectorSpec("test_local_vim", "sfp", dict(patch_size=16, img_size=64), _TINY),
}


def list_detectors() -> list[str]:
    return sorted(DETECTORS)


def _spec(name: str) -> DetectorSpec:
    if name not in DETECTORS:
        raise ConfigError(f"unknown detector {name!r}; choose one of: {', '.join(list_detectors())}")
    return DETECTORS[name]


def build_backbone(name: str, neck_channels: int = 256, checkpoint: str | os.PathLike | None = None,
                   drop_path_rate: float | None = None, backend: str = "auto") -> nn.Module:
    """The backbone + neck of detector ``name`` (a module returning five maps, with ``out_channels``).

    ``checkpoint``: a classification checkpoint (this library's or an original release file) for the body.
    """
    spec = _spec(name)
    kw = dict(spec.body_kwargs, num_classes=0, backend=backend)
    if drop_path_rate is not None:
        kw["drop_path_rate"] = drop_path_rate
    body = timm.create_model(spec.classifier, **kw)
    neck = (VMambaFPN if spec.neck == "fpn" else SimpleFeaturePyramid)(body, out_channels=neck_channels)
    if checkpoint is not None:
        load_backbone_checkpoint(neck, checkpoint, spec.classifier)
    return neck


def load_backbone_checkpoint(backbone: nn.Module, path: str | os.PathLike, name: str = "the backbone") -> None:
    """Load a classification checkpoint into ``backbone.body``; its head and final norm are dropped.

    Raises :class:`~localmamba.models.CheckpointError` naming what the file holds when it does not fit
    (another family, another size).
    """
    body = backbone.body
    sd = read_state_dict(path)
    family = "local_vim" if hasattr(body, "embed_dim") else "local_vmamba"
    module = getattr(_models, family)
    try:
        mapped = module.checkpoint_filter_fn(sd, body)
    except (KeyError, ValueError, IndexError, RuntimeError) as e:
        mapped = None
        detail = f"{type(e).__name__}: {e}"
    if mapped is not None:
        dropped = ("head.", "norm.", "norm_f.")  # classifier parts the detector does not use
        mapped = {k: v for k, v in mapped.items() if not k.startswith(dropped)}
        try:
            body.load_state_dict(mapped, strict=True)
            return
        except RuntimeError as e:
            detail = str(e)
    raise CheckpointError(
        f"{os.fspath(path)} does not fit {name}: the backbone is {describe_state_dict(body.state_dict())}, "
        f"the checkpoint holds {describe_state_dict(sd)}. Pass a checkpoint of the same family and size."
        f"\nDetail: {detail[:600]}")


def build_detector(name: str, num_classes: int = 91, *, backbone_checkpoint: str | os.PathLike | None = None,
                   neck_channels: int | None = None, mask_head_channels: int | None = None,
                   box_head_size: int | None = None, min_size: int | tuple[int, ...] | None = None,
                   max_size: int | None = None, detections_per_img: int | None = None,
                   drop_path_rate: float | None = None, backend: str = "auto", **mask_rcnn_kwargs) -> MaskRCNN:
    """A torchvision :class:`MaskRCNN` on the named LocalMamba backbone.

    ``min_size`` as a tuple picks a random shorter side per training batch (the 3x multi-scale recipe).
    Other keyword arguments go to :class:`MaskRCNN` (e.g. ``box_score_thresh``).
    """
    spec = _spec(name)
    d = dict(neck_channels=256, mask_head_channels=256, box_head_size=1024, min_size=800, max_size=1333,
             detections_per_img=100)
    d.update(spec.defaults)
    given = dict(neck_channels=neck_channels, mask_head_channels=mask_head_channels, box_head_size=box_head_size,
                 min_size=min_size, max_size=max_size, detections_per_img=detections_per_img)
    d.update({k: v for k, v in given.items() if v is not None})
    extra = {k: v for k, v in d.items() if k not in given}  # the variant's MaskRCNN defaults
    extra.update(mask_rcnn_kwargs)
    backbone = build_backbone(name, d["neck_channels"], backbone_checkpoint, drop_path_rate, backend)
    C, M = backbone.out_channels, d["mask_head_channels"]
    model = MaskRCNN(
        backbone, num_classes=None, min_size=d["min_size"], max_size=d["max_size"],
        box_head=TwoMLPHead(C * 7 * 7, d["box_head_size"]),
        box_predictor=FastRCNNPredictor(d["box_head_size"], num_classes),
        mask_head=MaskRCNNHeads(C, [M] * 4, 1), mask_predictor=MaskRCNNPredictor(M, M, num_classes),
        box_detections_per_img=d["detections_per_img"], **extra)
    model.name = name
    model.num_classes = num_classes
    return model
