"""The two commands' answers to expected mistakes: one line saying what to fix, exit status 2, no
traceback, nothing left behind; and their --help."""
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from localmamba.engine import cli, loaders
from localmamba.engine import evaluate as E
from localmamba.engine import train as T

ROOT = Path(__file__).parents[2]
TRAIN = ["--dataset", "fake", "--epochs", "1", "--warmup-epochs", "0", "--device", "cpu", "--no-progress",
         "--workers", "0"]


def fails_with_one_line(capsys, main, prog, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.run_command(main, prog, argv)
    assert exit_info.value.code == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{prog}: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_unknown_model_suggests_close_names_and_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "run"
    err = fails_with_one_line(capsys, T.main, "train", ["--model", "local_vim_tinyy", "--output", str(out), *TRAIN])
    assert "unknown model 'local_vim_tinyy'" in err and "local_vim_tiny" in err.split("did you mean")[1]
    assert not out.exists()


def test_missing_data_folder(tmp_path, capsys):
    out = tmp_path / "run"
    err = fails_with_one_line(capsys, T.main, "train", ["--model", "test_vit", "--dataset", "cifar10", "--data-dir",
                                                       str(tmp_path / "nowhere"), "--epochs", "1", "--output",
                                                       str(out), "--device", "cpu"])
    assert "nowhere" in err and "--download" in err
    assert not out.exists()


def test_bad_direction_spec_and_oversized_val_split(tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text("not json")
    err = fails_with_one_line(capsys, T.main, "train", ["--model", "test_local_vim", "--model-kwargs",
                                                       f'{{"directions": "{spec}"}}', "--output",
                                                       str(tmp_path / "a"), *TRAIN])
    assert "spec.json" in err
    err = fails_with_one_line(capsys, T.main, "train", ["--model", "test_local_vim", "--val-split", "100000",
                                                       "--output", str(tmp_path / "b"), *TRAIN])
    assert "--val-split 100000" in err


@pytest.mark.parametrize("name, text, says", [
    ("bad.yaml", "epochs: [1\n", "not valid YAML"),
    ("bad.json", "{epochs: 1", "not valid JSON"),
    ("list.yaml", "- 1\n- 2\n", "expected a mapping"),
    ("typo.yaml", "epoch: 3\n", "did you mean 'epochs'"),
])
def test_bad_config_file(tmp_path, capsys, name, text, says):
    f = tmp_path / name
    f.write_text(text)
    err = fails_with_one_line(capsys, T.main, "train", ["--config", str(f)])
    assert says in err and name in err
    missing = fails_with_one_line(capsys, T.main, "train", ["--config", str(tmp_path / "absent.yaml")])
    assert "config file not found" in missing


def test_corrupt_wrong_or_missing_checkpoint(tmp_path, capsys):
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    err = fails_with_one_line(capsys, E.main, "evaluate", ["--checkpoint", str(text), "--model", "test_vit",
                                                           "--dataset", "fake", "--device", "cpu"])
    assert "is not a PyTorch checkpoint" in err and "trust_pickle" not in err
    truncated = tmp_path / "cut.pth"
    torch.save({"model": {"w": torch.zeros(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    err = fails_with_one_line(capsys, E.main, "evaluate", ["--checkpoint", str(truncated), "--model", "test_vit",
                                                           "--dataset", "fake", "--device", "cpu"])
    assert "truncated or corrupt" in err
    err = fails_with_one_line(capsys, E.main, "evaluate", ["--checkpoint", str(tmp_path / "absent.pth")])
    assert "checkpoint not found" in err
    plain = tmp_path / "plain.pth"
    torch.save({"w": torch.zeros(1)}, plain)
    err = fails_with_one_line(capsys, T.main, "train", ["--model", "test_vit", "--img-size", "32", "--resume",
                                                        str(plain), "--output", str(tmp_path / "r"), *TRAIN])
    assert "not a checkpoint of this engine" in err
    err = fails_with_one_line(capsys, E.main, "evaluate", ["--checkpoint", str(plain), "--model", "test_vitt"])
    assert "unknown model 'test_vitt'" in err


def test_commands_exit_2_without_traceback():
    """The real commands (python -m), not only their main()."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "localmamba.train", "--model", "local_vim_tinyy", *TRAIN],
                       capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = subprocess.run([sys.executable, "-m", "localmamba.evaluate", "--checkpoint", "absent.pth"],
                       capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "checkpoint not found" in r.stderr, r.stderr


def test_help_states_each_default_once(capsys):
    for main in (T.main, E.main):
        with pytest.raises(SystemExit):
            main(["--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert text.count("--checkpoint") + text.count("--model") > 0
        assert "(default: None)" not in text
        options = text.split(" --")[1:]  # one chunk an option: its flag, metavar and help
        assert len(options) > 10
        doubled = [o for o in options if o.count("default") > 1]  # "(default: the dataset's) (default: None)"
        assert not doubled, doubled


def test_workers_default_fits_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert loaders.default_workers() == 2 and loaders.default_workers(world_size=4) == 1
    assert loaders.default_workers(cap=1) == 1


def test_evaluate_with_default_workers_does_not_warn_about_workers(tmp_path, capsys):
    cfg = T.Config(model="test_vit", img_size=32, dataset="fake", fake_train_size=64, fake_val_size=16,
                   epochs=1, batch_size=16, warmup_epochs=0, workers=0, output=str(tmp_path / "run"),
                   progress=False, device="cpu", threads=1, mixup=0, cutmix=0, aa=None)
    T.train(cfg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        E.main(["--checkpoint", str(tmp_path / "run" / "last.pth"), "--device", "cpu"])
    assert not [w for w in caught if "worker" in str(w.message)], [str(w.message) for w in caught]
