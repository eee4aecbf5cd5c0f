"""The detection CLIs end to end on a tiny COCO folder: training, exact resume, evaluation, clear errors."""
import json

import pytest
import torch

from localmamba.detection import evaluate as det_evaluate
from localmamba.engine.cli import run_command
from localmamba.detection import train as det_train


def _args(root, out, *extra):
    return ["--data-dir", str(root), "--output", str(out), "--model", "mask_rcnn_test_local_vssm_fpn",
            "--min-size", "96", "--max-size", "128", "--holdout", "1", "--batch-size", "2", "--warmup-iters", "2",
            "--workers", "0", "--no-progress", "--epochs", "2", *extra]


def test_train_resume_is_exact_and_evaluate_reads_the_run(tiny_coco, tmp_path, capsys):
    det_train.main(_args(tiny_coco, tmp_path / "straight"))
    det_train.main(_args(tiny_coco, tmp_path / "resumed", "--stop-after", "1"))
    assert json.loads((tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 1
    det_train.main(_args(tiny_coco, tmp_path / "resumed", "--resume", "auto"))
    a = torch.load(tmp_path / "straight" / "last.pth", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "last.pth", weights_only=True)
    assert a["step"] == b["step"] == 2
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items()), "resume continues exactly"
    rows = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and "AP" in rows[-1]["eval"]["bbox"]

    run = ["--checkpoint", str(tmp_path / "resumed" / "last.pth"), "--workers", "0", "--no-progress"]
    metrics = det_evaluate.main(run)
    assert metrics == json.loads((tmp_path / "resumed" / "eval.json").read_text())  # the same held-out image
    det_evaluate.main(run + ["--results-json", str(tmp_path / "dets.json"), "--score-thresh", "0"])
    dets = json.loads((tmp_path / "dets.json").read_text())
    assert dets and all({"image_id", "category_id", "bbox", "score", "segmentation"} <= set(d) for d in dets)
    assert "| bbox |" in capsys.readouterr().out


def test_config_file_and_overrides(tiny_coco, tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("model: mask_rcnn_test_local_vim_sfp\nlr: 0.5\nlr_steps: [1]\n")
    cfg = det_train.parse_args(["--config", str(cfg_file), "--data-dir", str(tiny_coco), "--lr", "0.25"])
    assert (cfg.model, cfg.lr, cfg.lr_steps) == ("mask_rcnn_test_local_vim_sfp", 0.25, [1])
    assert det_train.lr_at(cfg, step=10_000, epoch=1) == pytest.approx(0.025)


@pytest.mark.parametrize("extra,message", [
    (["--model", "mask_rcnn_nope"], "unknown detector"),
    (["--train-split", "val2017"], "no annotations for split 'val2017'"),
    (["--backbone-checkpoint", "missing.pth"], "checkpoint file not found"),
    (["--config", "missing.yaml"], "config file not found"),
])
def test_expected_errors_are_one_line(tiny_coco, tmp_path, capsys, extra, message):
    prog = "python -m localmamba.detection.train"
    with pytest.raises(SystemExit) as e:
        run_command(det_train.main, prog, _args(tiny_coco, tmp_path / "x", *extra))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{prog}: error: ") and message in err and "\n" not in err
