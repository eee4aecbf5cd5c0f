"""Every detector builds, trains (losses) and predicts (boxes, labels, scores, masks); backbones give the
strides a detector expects and load classification checkpoints, refusing those of another family."""
import json
import os
from pathlib import Path

import pytest
import timm
import torch

from localmamba.detection import VMambaFPN, build_backbone, build_detector, list_detectors, load_backbone_checkpoint
from localmamba.models import CheckpointError, model_from_arch

# small heads and images keep the full-size backbones at about a second each on a CPU
SMALL = dict(neck_channels=16, mask_head_channels=8, box_head_size=16, min_size=64, max_size=96, detections_per_img=5,
             rpn_post_nms_top_n_train=50, rpn_post_nms_top_n_test=20, box_batch_size_per_image=16)


def _targets(sizes):
    out = []
    for i, (h, w) in enumerate(sizes):
        masks = torch.zeros(1, h, w, dtype=torch.uint8)
        masks[0, 10:40, 8:30] = 1
        out.append(dict(boxes=torch.tensor([[8.0, 10.0, 30.0, 40.0]]), labels=torch.tensor([3 + i]), masks=masks))
    return out


@pytest.mark.parametrize("name", list_detectors())
def test_detector_train_and_eval(name):
    torch.manual_seed(0)
    model = build_detector(name, **SMALL)
    sizes = [(64, 90), (70, 52)]  # non-square, different sizes in one batch
    images = [torch.rand(3, *s) for s in sizes]
    losses = model.train()(images, _targets(sizes))
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    body = model.backbone.body
    assert all(p.grad is not None for p in body.parameters() if p.requires_grad), "every backbone weight trains"
    model.eval()
    model.roi_heads.score_thresh = 0.0  # an untrained model: keep every detection
    with torch.no_grad():
        outs = model(images)
    for out, (h, w) in zip(outs, sizes):
        n = len(out["boxes"])
        assert 0 < n <= SMALL["detections_per_img"]
        assert out["boxes"].shape == (n, 4) and out["labels"].shape == (n,) and out["scores"].shape == (n,)
        assert out["masks"].shape == (n, 1, h, w)  # pasted back at the input size
        assert (out["boxes"][:, 2] <= w).all() and (out["boxes"][:, 3] <= h).all()


@pytest.mark.parametrize("name", ["mask_rcnn_test_local_vssm_fpn", "mask_rcnn_test_local_vim_sfp"])
def test_pyramid_strides_on_a_non_square_input(name):
    bb = build_backbone(name, neck_channels=8)
    x = torch.rand(1, 3, 128, 192)  # padded sizes are multiples of 32
    feats = bb(x)
    assert list(feats) == ["0", "1", "2", "3", "pool"]
    for (k, f), stride in zip(feats.items(), (4, 8, 16, 32, 64)):
        assert f.shape == (1, bb.out_channels, 128 // stride, 192 // stride), k


def test_unknown_detector_name():
    with pytest.raises(ValueError, match="unknown detector 'mask_rcnn_nope'.*mask_rcnn_local_vssm_tiny_fpn"):
        build_detector("mask_rcnn_nope")


@pytest.mark.parametrize("name,classifier,kw", [
    ("mask_rcnn_test_local_vssm_fpn", "test_local_vssm", dict(patch_size=4)),
    ("mask_rcnn_test_local_vim_sfp", "test_local_vim", dict(patch_size=16, img_size=64)),
])
def test_backbone_loads_a_classification_checkpoint(tmp_path, name, classifier, kw):
    torch.manual_seed(1)
    clf = timm.create_model(classifier, **kw)
    path = tmp_path / "clf.pth"
    torch.save({"model": clf.state_dict()}, path)  # the training engine's layout: weights under "model"
    bb = build_backbone(name, neck_channels=8, checkpoint=path)
    ref = clf.state_dict()
    loaded = bb.body.state_dict()
    assert loaded and all(torch.equal(v, ref[k]) for k, v in loaded.items())


def test_checkpoint_of_the_wrong_family_is_refused(tmp_path):
    path = tmp_path / "vim.pth"
    torch.save(timm.create_model("test_local_vim").state_dict(), path)
    with pytest.raises(CheckpointError, match="LocalVim"):
        build_backbone("mask_rcnn_test_local_vssm_fpn", neck_channels=8, checkpoint=path)


FIXTURES = Path(os.environ.get("LOCALMAMBA_FIXTURES",
                               Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "original"))


@pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"original-code fixtures not found at {FIXTURES}")
def test_backbone_loads_an_original_release_file():
    """An original-format LocalVMamba checkpoint (``patch_embed.0``, ``classifier.head``...) fills the FPN body
    as the classifier loader maps it."""
    arch = json.loads((FIXTURES / "local_vssm_small_arch.json").read_text())
    ckpt = FIXTURES / "local_vssm_small_arch.ckpt"
    reference = model_from_arch(arch, checkpoint=ckpt).state_dict()
    backbone = VMambaFPN(model_from_arch(arch), out_channels=8)
    load_backbone_checkpoint(backbone, ckpt)
    loaded = backbone.body.state_dict()
    assert loaded and all(torch.equal(v, reference[k]) for k, v in loaded.items())
