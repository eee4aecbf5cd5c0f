"""Tests' COCO folder: ``make_synthetic_coco`` (shapes on noise with polygon masks, one crowd region in the
first image, an image without annotations last), made on the fly."""
import pytest

from localmamba.detection.data import make_synthetic_coco


@pytest.fixture
def tiny_coco(tmp_path):
    root = tmp_path / "coco"
    make_synthetic_coco(root)
    return root
