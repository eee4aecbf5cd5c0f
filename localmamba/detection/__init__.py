"""Detection and instance segmentation: LocalMamba backbones in torchvision's Mask R-CNN, COCO data and metrics."""
from .backbones import SimpleFeaturePyramid, VMambaFPN
from .builders import DETECTORS, build_backbone, build_detector, list_detectors, load_backbone_checkpoint

__all__ = ["SimpleFeaturePyramid", "VMambaFPN", "DETECTORS", "build_backbone", "build_detector", "list_detectors",
           "load_backbone_checkpoint"]
