"""The training engine end to end on generated data with tiny models (CPU, a few seconds each)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from timm.models import register_model

from localmamba.engine import checkpoint, loaders
from localmamba.engine import train as T


def tiny(tmp_path, name="run", **kw) -> T.Config:
    """test_vit at 32x32 on 256 generated images, 4 steps of 16 a epoch."""
    base = dict(model="test_vit", img_size=32, dataset="fake", fake_train_size=256, fake_val_size=64,
                epochs=2, batch_size=16, lr=1e-3, lr_base_size=0, warmup_epochs=0, workers=0,
                max_steps_per_epoch=4, output=str(tmp_path / name), progress=False, device="cpu", threads=1)
    base.update(kw)
    return T.Config(**base)


def state(path):
    return torch.load(path, weights_only=True)


def test_run_writes_metrics_summary_and_checkpoints(tmp_path):
    cfg = tiny(tmp_path, epochs=2, drop_path=0.1, ema=True, ema_decay=0.9)
    summary = T.train(cfg)
    out = Path(cfg.output)
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("train_loss", "val_loss", "top1", "top5", "lr", "images_per_sec", "epoch_time", "ema_top1"):
        assert all(r[key] is not None for r in rows), key
    saved = json.loads((out / "summary.json").read_text())
    assert saved["epochs"] == 2 and saved["best_top1"] == max(r["top1"] for r in rows)
    assert saved["last_top1"] == rows[-1]["top1"] and saved["config"]["model"] == "test_vit"
    assert summary["images_per_sec"] > 0 and summary["total_time"] > 0
    ckpt = state(out / "last.pth")
    assert ckpt["epoch"] == 2 and ckpt["format"] == checkpoint.CHECKPOINT_FORMAT
    assert {"model", "optimizer", "scheduler", "scaler", "ema", "rng", "config"} <= set(ckpt)
    assert (out / "best.pth").is_file() and not list(out.glob("*.tmp"))


def test_ema_validation_reads_the_validation_set_once_an_epoch(tmp_path, monkeypatch):
    passes = []

    class Counting:
        def __init__(self, loader):
            self.loader = loader

        def __iter__(self):
            passes.append(1)
            return iter(self.loader)

    build = loaders.build_loaders

    def counting_loaders(*args, **kwargs):
        train_loader, val_loader = build(*args, **kwargs)
        return train_loader, Counting(val_loader)

    monkeypatch.setattr(loaders, "build_loaders", counting_loaders)
    cfg = tiny(tmp_path, epochs=2, ema=True, ema_decay=0.9)
    T.train(cfg)
    assert len(passes) == 2
    rows = [json.loads(l) for l in (Path(cfg.output) / "metrics.jsonl").read_text().splitlines()]
    assert all(r["ema_top1"] is not None and r["ema_val_loss"] is not None for r in rows)


def test_lr_scales_with_global_batch_and_weight_decay_skips_1d(tmp_path):
    cfg = tiny(tmp_path, epochs=1, lr=1e-3, lr_base_size=64, batch_size=16)
    assert T.train(cfg)["lr"] == pytest.approx(1e-3 * 16 / 64)
    opt = state(Path(cfg.output) / "last.pth")["optimizer"]
    decays = sorted(g["weight_decay"] for g in opt["param_groups"])
    assert decays == [0.0, cfg.weight_decay]


class Interrupt(Exception):
    pass


def test_resume_after_interruption_gives_identical_weights(tmp_path):
    # every source of randomness on: RandAugment, erasing, mixup/cutmix, drop path, EMA, worker processes
    kw = dict(epochs=3, drop_path=0.1, ema=True, ema_decay=0.9, workers=1, warmup_epochs=1,
              aa="rand-m9-mstd0.5-inc1", reprob=0.25, mixup=0.2, cutmix=1.0, smoothing=0.1)
    full = tiny(tmp_path, "full", **kw)
    T.train(full)

    part = tiny(tmp_path, "part", **kw)

    def stop_after_first(epoch, row):
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        T.train(part, on_epoch_end=stop_after_first)
    assert state(Path(part.output) / "last.pth")["epoch"] == 1
    T.train(tiny(tmp_path, "part", resume="auto", **kw))

    a, b = state(Path(full.output) / "last.pth"), state(Path(part.output) / "last.pth")
    assert a["epoch"] == b["epoch"] == 3
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    rows_a = [json.loads(l) for l in (Path(full.output) / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(l) for l in (Path(part.output) / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in rows_a] == [r["train_loss"] for r in rows_b]
    assert [r["top1"] for r in rows_a] == [r["top1"] for r in rows_b]


def test_corrupt_or_truncated_checkpoint_errors_clearly(tmp_path):
    cfg = tiny(tmp_path, epochs=1)
    T.train(cfg)
    last = Path(cfg.output) / "last.pth"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    with pytest.raises(checkpoint.CheckpointError, match="truncated or corrupt"):
        T.train(tiny(tmp_path, epochs=2, resume="auto"))
    assert last.read_bytes() == data[: len(data) // 2]  # not overwritten by a silent restart
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(checkpoint.CheckpointError, match="garbage.pth"):
        checkpoint.load_checkpoint(garbage)
    with pytest.raises(FileNotFoundError):
        T.train(tiny(tmp_path, "other", resume=str(tmp_path / "missing.pth")))
    plain = tmp_path / "plain.pth"
    torch.save({"w": torch.zeros(1)}, plain)
    with pytest.raises(checkpoint.CheckpointError, match="not a checkpoint of this engine"):
        T.train(tiny(tmp_path, "other", resume=str(plain)))


class NanAfter(nn.Module):
    """Linear classifier whose output turns NaN from the ``after``-th training forward on."""

    def __init__(self, num_classes=10, after=3, **_):
        super().__init__()
        self.fc = nn.Linear(3, num_classes)
        self.calls, self.after = 0, after

    def forward(self, x):
        y = self.fc(x.mean((2, 3)))
        if self.training:
            self.calls += 1
            if self.calls >= self.after:
                y = y * float("nan")
        return y


@register_model
def _test_nan_after(pretrained=False, **kw):
    return NanAfter(**kw)


def test_nan_loss_stops_naming_epoch_and_step(tmp_path):
    # 4 steps an epoch: the 7th forward is epoch 2, step 3
    cfg = tiny(tmp_path, model="_test_nan_after", img_size=None, model_kwargs={"after": 7}, epochs=3)
    with pytest.raises(FloatingPointError, match=r"epoch 2, step 3\b"):
        T.train(cfg)
    assert state(Path(cfg.output) / "last.pth")["epoch"] == 1


def test_config_file_with_command_line_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: test_vit\ndataset: fake\nepochs: 7\nbatch-size: 32\naa: none\nmodel_kwargs: {depth: 1}\n")
    cfg = T.parse_args(["--config", str(f), "--epochs", "3", "--no-progress", "--lr", "0.01"])
    assert (cfg.model, cfg.epochs, cfg.batch_size, cfg.aa, cfg.lr, cfg.progress) == \
        ("test_vit", 3, 32, None, 0.01, False)
    assert cfg.model_kwargs == {"depth": 1}
    both = T.parse_args(["--config", str(f), "--model-kwargs", '{"num_heads": 2, "depth": 2}'])
    assert both.model_kwargs == {"depth": 2, "num_heads": 2}  # the command line adds keys and wins
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"model": "x", "dataset": "fake", "bogus": 1}))
    with pytest.raises(ValueError, match="bogus"):
        T.parse_args(["--config", str(j)])


@pytest.mark.parametrize("tag", ["", "_stem2", "_4gpu", "_4gpu_cutmix"])
def test_cifar_comparison_configs_differ_in_the_model_alone(tag):
    """The LocalVim run and its Vim-style baseline share every setting but the model's name."""
    configs = Path(__file__).parents[2] / "configs"
    a = T.parse_args(["--config", str(configs / f"cifar10_local_vim_tiny{tag}.yaml")])
    b = T.parse_args(["--config", str(configs / f"cifar10_vim_tiny{tag}.yaml")])
    assert (a.model, b.model) == ("local_vim_tiny_cifar", "vim_tiny_cifar")
    assert a.dataset == "cifar10" and a.val_split == 5000 and a.split_seed == 0
    same = {k: v for k, v in vars(a).items() if k not in ("model", "output")}
    assert same == {k: v for k, v in vars(b).items() if k not in ("model", "output")}


def test_cli_trains_on_generated_data(tmp_path):
    out = tmp_path / "cli"
    summary = T.main(["--model", "test_resnet", "--dataset", "fake", "--fake-train-size", "128",
                      "--fake-val-size", "32", "--epochs", "1", "--batch-size", "16", "--workers", "0",
                      "--max-steps-per-epoch", "2", "--warmup-epochs", "0", "--output", str(out),
                      "--no-progress", "--device", "cpu", "--gpu-aug", "--aa", "none", "--clip-grad", "1.0"])
    assert summary["epochs"] == 1 and (out / "summary.json").is_file()


def _torchrun(out, *extra):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "localmamba.train", "--model", "test_vit", "--img-size", "32", "--dataset", "fake",
           "--fake-train-size", "128", "--fake-val-size", "31", "--epochs", "2", "--batch-size", "8",
           "--workers", "0", "--max-steps-per-epoch", "3", "--warmup-epochs", "0", "--device", "cpu",
           "--no-progress", "--drop-path", "0.1", "--output", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def test_torchrun_two_cpu_processes_write_one_set_of_files_and_resume_exactly(tmp_path):
    out = tmp_path / "ddp"
    r = _torchrun(out)
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_batch_size"] == 16 and summary["finished"]
    assert summary["val_images"] == 31
    # ShardSampler: each validation image counted once over both ranks (no padding to 32)
    assert all(abs(r["top1"] * 31 / 100 - round(r["top1"] * 31 / 100)) < 1e-6 for r in rows)
    assert len(re.findall(r"^epoch 2/2", r.stdout, re.M)) == 1  # rank 0 alone prints
    ckpt = state(out / "last.pth")
    assert len(ckpt["rng"]) == 2  # both ranks' RNG states, for an exact resume
    assert sorted(p.name for p in out.iterdir()) == ["best.pth", "last.pth", "metrics.jsonl", "summary.json"]
    # one epoch, then the other in a second launch: the same weights as the single launch
    part = tmp_path / "ddp_part"
    _torchrun(part, "--stop-after", "1")
    assert not json.loads((part / "summary.json").read_text())["finished"]
    _torchrun(part, "--resume", "auto")
    resumed = state(part / "last.pth")
    assert resumed["epoch"] == 2
    assert all(torch.equal(v, resumed["model"][k]) for k, v in ckpt["model"].items())


def test_hooks_add_fields_to_metrics_and_a_caller_built_model_is_trained(tmp_path):
    """What search builds on: its own module trained by the engine, a per-epoch field in metrics.jsonl."""
    import timm

    net = timm.create_model("test_vit", num_classes=10, img_size=32)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    seen = []
    hooks = T.Hooks(epoch_metrics=lambda epoch, model: {"probe": epoch * 10, "same_model": model is net},
                    on_epoch_end=lambda epoch, row: seen.append((epoch, row["probe"])))
    summary = T.train(tiny(tmp_path, epochs=2), model=net, hooks=hooks)
    rows = [json.loads(l) for l in (Path(summary["output"]) / "metrics.jsonl").read_text().splitlines()]
    assert [(r["probe"], r["same_model"]) for r in rows] == [(10, True), (20, True)]
    assert seen == [(1, 10), (2, 20)]
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())
    saved = state(Path(summary["output"]) / "last.pth")["model"]
    assert all(torch.equal(saved[k], v) for k, v in net.state_dict().items())


def test_grad_checkpointing_trains_to_the_same_weights(tmp_path):
    """--grad-checkpointing changes memory, not the result; a model without the switch is a clear error."""
    kw = dict(model="test_local_vim", epochs=1, drop_path=0.1)
    T.train(tiny(tmp_path, "plain", **kw))
    T.train(tiny(tmp_path, "ckpt", grad_checkpointing=True, **kw))
    a, b = state(tmp_path / "plain" / "last.pth")["model"], state(tmp_path / "ckpt" / "last.pth")["model"]
    for k in a:
        torch.testing.assert_close(b[k], a[k], msg=k)

    class Plain(nn.Module):
        def forward(self, x):
            return x
    with pytest.raises(T.ConfigError, match="set_grad_checkpointing"):
        T.train(tiny(tmp_path, "bad", grad_checkpointing=True), model=Plain())
