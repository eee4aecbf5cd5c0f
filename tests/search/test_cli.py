"""python -m localmamba.search end to end on generated images, on the CPU, and its errors."""
import json

import pytest
import torch

from localmamba.search import PROBS_FIELD
from localmamba.search.__main__ import main

SUPERNET = "local_vim_tiny_cifar_search"
TINY = ["--model-kwargs", json.dumps({"depth": 2, "embed_dim": 16})]
FAST = ["--dataset", "fake", "--fake-train-size", "32", "--fake-val-size", "16", "--batch-size", "8",
        "--max-steps-per-epoch", "2", "--warmup-epochs", "0", "--lr", "1e-2", "--lr-base-size", "0",
        "--no-progress", "--device", "cpu", "--workers", "0", *TINY]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A search of 2 epochs, stopped after the first and resumed, then 1 epoch of the searched model."""
    out = tmp_path_factory.mktemp("search")
    common = ["--supernet", SUPERNET, *FAST, "--epochs", "2", "--output", str(out), "--retrain-epochs", "1"]
    main(common + ["--stop-after", "1"])
    result = main(common + ["--resume", "auto"])
    return out, result


def test_writes_spec_figure_and_both_accuracies(run):
    from localmamba.models.directions import DirectionSpec

    out, result = run
    spec = DirectionSpec.load(out / "directions.json")
    assert [list(d) for d in spec.directions] == [list(d) for d in result["directions"]]
    assert len(spec.directions) == 2 and all(len(d) == 4 for d in spec.directions)
    assert (out / "search.png").stat().st_size > 0
    summary = json.loads((out / "search_summary.json").read_text())
    assert summary["supernet_summary"]["epochs"] == 2 and summary["supernet_summary"]["last_top1"] is not None
    assert summary["retrain_summary"]["epochs"] == 1 and summary["retrain_summary"]["last_top1"] is not None
    # the retrained model scanned the derived directions
    ckpt = torch.load(out / "retrain" / "last.pth", weights_only=True)
    assert ckpt["config"]["model"] == "local_vim_tiny_cifar"  # the supernet's non-search model
    assert [list(d) for d in ckpt["config"]["model_kwargs"]["directions"]] == [list(d) for d in spec.directions]


def test_probabilities_logged_every_epoch_and_moving(run):
    out, _ = run
    rows = [json.loads(line) for line in (out / "supernet" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]  # the resumed run kept epoch 1's row
    probs = torch.tensor([r[PROBS_FIELD] for r in rows])  # (epochs, layers, K)
    assert probs.shape == (2, 2, 8)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 2), atol=1e-5, rtol=0)
    assert (probs[1] - probs[0]).abs().max() > 1e-4  # the architecture parameters trained


def test_from_checkpoint_derives_the_same_directions(run, tmp_path):
    out, result = run
    derived = main(["--from-checkpoint", str(out / "supernet" / "last.pth"), "--output", str(tmp_path)])
    assert derived["directions"] == result["directions"]
    assert (tmp_path / "search.png").is_file()
    assert [list(d) for d in main(["--from-checkpoint", str(out / "supernet" / "last.pth"), "--k", "2",
                                   "--output", str(tmp_path)])["directions"][0]] != result["directions"][0]


@pytest.mark.parametrize("args, message", [
    (["--supernet", "local_vim_tiny_cifar_serch"], "unknown supernet 'local_vim_tiny_cifar_serch'; did you mean "
                                                    "local_vim_tiny_cifar_search"),
    (["--supernet", "local_vim_tiny_cifar"], "'local_vim_tiny_cifar' is not a supernet"),
    (["--supernet", SUPERNET, "--k", "9"], "--k 9"),
])
def test_bad_supernet_is_one_line(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(args + FAST + ["--epochs", "1", "--output", str(tmp_path / "x")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_checkpoint_that_is_not_a_supernets(run, tmp_path, capsys):
    out, _ = run
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    for ckpt, message in [(out / "retrain" / "last.pth", "not a supernet"), (bad, "is not a PyTorch checkpoint")]:
        with pytest.raises(SystemExit) as e:
            main(["--from-checkpoint", str(ckpt), "--output", str(tmp_path / "d")])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1


def test_architecture_parameters_receive_gradients():
    import timm

    from localmamba.search import architecture_parameters

    torch.manual_seed(0)
    model = timm.create_model(SUPERNET, depth=2, embed_dim=16)
    model(torch.randn(4, 3, 32, 32)).logsumexp(-1).mean().backward()
    grads = [p.grad for p in architecture_parameters(model)]
    assert len(grads) == 2 and all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_spec_trains_the_searched_model_and_refuses_a_bad_file(run, tmp_path, capsys):
    out, result = run
    summary = main(["--spec", str(out / "directions.json"), *FAST, "--epochs", "1", "--output", str(tmp_path / "t")])
    assert summary["model"] == "local_vim_tiny_cifar" and summary["epochs"] == 1
    assert summary["config"]["model_kwargs"]["directions"] == [list(d) for d in result["directions"]]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"family": "local_vim", "directions": "h"}))
    with pytest.raises(SystemExit) as e:
        main(["--spec", str(bad), *FAST, "--epochs", "1", "--output", str(tmp_path / "u")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "not a valid direction spec" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "u").exists()
