"""Evaluation entry point on checkpoints of a tiny training run, and the notebook plots."""
import json

import numpy as np
import pytest
import torch

from localmamba.engine import checkpoint, data, loaders
from localmamba.notebook import training
from localmamba.engine import evaluate as E
from localmamba.engine import train as T


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run"
    cfg = T.Config(model="test_vit", img_size=32, dataset="fake", fake_train_size=256, fake_val_size=64,
                   epochs=1, batch_size=16, lr=2e-3, lr_base_size=0, warmup_epochs=0, workers=0,
                   max_steps_per_epoch=6, output=str(out), progress=False, device="cpu", threads=1, ema=True,
                   mixup=0, cutmix=0, aa=None)
    summary = T.train(cfg)
    return out, summary


def test_engine_checkpoint_reproduces_training_metrics(run):
    out, summary = run
    res = E.evaluate(out / "last.pth", device="cpu", workers=0)
    assert res["kind"] == "engine" and res["n"] == 64
    assert res["top1"] == pytest.approx(summary["last_top1"], abs=1e-6)
    assert res["loss"] == pytest.approx(summary["last_val_loss"], rel=1e-4)
    ema = E.evaluate(out / "last.pth", device="cpu", workers=0, use_ema=True)
    rows = E.load_metrics(out)
    assert ema["top1"] == pytest.approx(rows[-1]["ema_top1"], abs=1e-6)
    best = E.evaluate(out / "best.pth", device="cpu", workers=0, use_ema=True)
    assert best["top1"] == pytest.approx(rows[-1]["ema_top1"], abs=1e-6)


def test_evaluate_models_in_one_pass_equals_separate_passes():
    import timm

    ds = data.make_fake_images(10, 40, 32, seed=1)
    ds.transform = loaders.eval_transform(32)
    loader = loaders.build_loader(ds, 16, train=False, workers=0)
    torch.manual_seed(0)
    a = timm.create_model("test_vit", num_classes=10, img_size=32)
    b = timm.create_model("test_vit", num_classes=10, img_size=32).train()
    both = E.evaluate_models([a.eval(), b], loader, "cpu")
    assert both == [E.evaluate_model(a, loader, "cpu"), E.evaluate_model(b, loader, "cpu")]
    assert both[0] != both[1] and not a.training and b.training  # modes restored


def test_plain_state_dict_and_original_format(run, tmp_path):
    out, summary = run
    sd = torch.load(out / "last.pth", weights_only=True)["model"]
    plain, original = tmp_path / "plain.pth", tmp_path / "original.pth"
    torch.save(sd, plain)
    torch.save({"model": sd}, original)  # the original LocalMamba layout, read through timm's pretrained path
    kw = dict(dataset="fake", img_size=32, device="cpu", workers=0)
    with pytest.raises(ValueError, match="give the model name"):
        E.evaluate(plain, **kw)
    results = []
    for path, kind in ((plain, "state_dict"), (original, "original")):
        net, info = E.load_model(path, "test_vit", img_size=32)
        assert info["kind"] == kind
        assert all(torch.equal(v, sd[k]) for k, v in net.state_dict().items())
        results.append(E.evaluate(path, "test_vit", **kw))
    assert results[0]["top1"] == results[1]["top1"] and results[0]["n"] == 200  # fake's default val size


def test_evaluating_a_val_or_test_folder_needs_no_training_images(run, tmp_path):
    out, _ = run
    plain = tmp_path / "plain.pth"
    torch.save(torch.load(out / "last.pth", weights_only=True)["model"], plain)
    root = data.make_fake_image_folder(tmp_path / "f", num_classes=4, train_per_class=4, val_per_class=3, size=32)
    kw = dict(img_size=32, device="cpu", workers=0)
    with_train = E.evaluate(plain, "test_vit", dataset="cifar10", data_dir=str(root), **kw)
    assert E.evaluate(plain, "test_vit", dataset="cifar10", data_dir=str(root), split="train", **kw)["n"] == 16
    (root / "train").rename(tmp_path / "elsewhere")
    res = E.evaluate(plain, "test_vit", dataset="cifar10", data_dir=str(root), **kw)
    assert res["n"] == 12 and res["top1"] == with_train["top1"] and res["loss"] == with_train["loss"]
    (root / "val").rename(root / "test")
    assert E.evaluate(plain, "test_vit", dataset="imagenet", data_dir=str(root), **kw)["n"] == 12


def test_interpolation_comes_from_the_checkpoint_as_in_training(run, tmp_path):
    out, _ = run
    # 48 px images scored at 32 px from a lazily read folder: the resize is the eval transform's
    root = data.make_fake_image_folder(tmp_path / "f", num_classes=4, train_per_class=2, val_per_class=4, size=48)
    ckpt = torch.load(out / "last.pth", weights_only=True)
    ckpt["config"].update(dataset="imagenet", data_dir=str(root), val_split=0, interpolation="nearest")
    path = tmp_path / "nearest.pth"
    torch.save(ckpt, path)
    net, _ = E.load_model(path)
    _, val, _ = data.build_datasets("imagenet", str(root), load_train=False)
    val.transform = loaders.eval_transform(32, interpolation="nearest")  # what training validated with
    ref = E.evaluate_model(net, loaders.build_loader(val, 256, train=False, workers=0), "cpu")
    kw = dict(device="cpu", workers=0)
    res = E.evaluate(path, **kw)
    assert res["loss"] == pytest.approx(ref["loss"], rel=1e-5) and res["top1"] == pytest.approx(ref["top1"])
    bicubic = E.main(["--checkpoint", str(path), "--device", "cpu", "--workers", "0", "--interpolation", "bicubic"])
    assert bicubic["loss"] != pytest.approx(ref["loss"], rel=1e-5)


def test_cli_prints_json(run, capsys):
    out, summary = run
    res = E.main(["--checkpoint", str(out / "best.pth"), "--device", "cpu", "--workers", "0", "--json"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["top1"] == res["top1"] and set(printed) >= {"top1", "top5", "loss", "n"}


def test_checkpoint_errors(run, tmp_path):
    out, _ = run
    with pytest.raises(checkpoint.CheckpointError, match="holds a 'test_vit' model"):
        E.load_model(out / "last.pth", "resnet10t")
    bad = tmp_path / "bad.pth"
    bad.write_bytes((out / "last.pth").read_bytes()[:1000])
    with pytest.raises(checkpoint.CheckpointError, match="truncated or corrupt"):
        E.evaluate(bad, "test_vit", dataset="fake")


def test_confusion_matrix_and_plots(run, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    out, _ = run
    cm = E.confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2], 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    res = E.evaluate(out / "best.pth", device="cpu", workers=0, return_predictions=True)
    assert res["logits"].shape == (64, 10)
    cm = E.confusion_matrix(res["logits"].argmax(1), res["labels"], 10)
    assert cm.sum() == 64 and np.trace(cm) / 64 * 100 == pytest.approx(res["top1"])
    training.plot_curves(E.load_metrics(out), "tiny run", tmp_path / "curves.png")
    training.plot_confusion_matrix(cm, res["classes"], path=tmp_path / "cm.png")
    training.plot_predictions(res["dataset_obj"], res["logits"], res["labels"], res["classes"], n=8,
                              path=tmp_path / "pred.png")
    assert all((tmp_path / f).stat().st_size > 1000 for f in ("curves.png", "cm.png", "pred.png"))
