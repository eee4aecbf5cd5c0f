"""CUDA-graph replay gives the eager results: inference outputs, training gradients and a training run.

The GPU tests skip without CUDA; the clear errors for what graphs cannot do run everywhere.
"""
import copy
import json
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

import localmamba  # noqa: F401  (registers the models)
from localmamba.engine import train as T
from localmamba.engine.cuda_graphs import InferenceGraph, graph_for_training

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
MODELS = ["local_vim_tiny_cifar", "local_vssm_tiny_cifar"]


def make(name, device="cuda"):
    torch.manual_seed(0)
    return timm.create_model(name, num_classes=10, drop_path_rate=0.0, backend="auto").to(device)


# ------------------------------------------------------------------------------------------------------
# errors, on any machine
# ------------------------------------------------------------------------------------------------------
def test_cpu_models_are_refused_with_the_reason():
    model = make("local_vim_tiny_cifar", "cpu")
    with pytest.raises(ValueError, match="needs a model on a CUDA device"):
        InferenceGraph(model.eval())
    with pytest.raises(ValueError, match="needs a model on a CUDA device"):
        graph_for_training(model.train(), torch.zeros(2, 3, 32, 32))


def test_training_config_refuses_graphs_with_compile_and_off_cuda(tmp_path):
    with pytest.raises(ValueError, match="do not combine"):
        T.Config(dataset="fake", cuda_graph=True, compile=True, output=str(tmp_path))
    cfg = T.Config(model="local_vim_tiny_cifar", dataset="fake", img_size=32, fake_train_size=32, fake_val_size=16,
                   epochs=1, batch_size=16, workers=0, device="cpu", cuda_graph=True, output=str(tmp_path / "r"),
                   progress=False, threads=1, mixup=0.0, cutmix=0.0)
    with pytest.raises(ValueError, match="--cuda-graph needs one process on a CUDA device"):
        T.train(cfg)


# ------------------------------------------------------------------------------------------------------
# GPU
# ------------------------------------------------------------------------------------------------------
@cuda
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_inference_graph_matches_eager_per_shape_and_follows_weight_updates(name, dtype):
    model = make(name).eval()
    graph = InferenceGraph(model, autocast_dtype=dtype)

    def eager(x):
        with torch.no_grad(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            return model(x)
    x1, x2 = torch.randn(4, 3, 32, 32, device="cuda"), torch.randn(4, 3, 32, 32, device="cuda")
    y1 = graph(x1)
    y2 = graph(x2)  # the same graph, new data: y1 must not be overwritten
    torch.testing.assert_close(y1, eager(x1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y2, eager(x2), rtol=1e-5, atol=1e-5)
    x3 = torch.randn(2, 3, 40, 40, device="cuda")  # another shape: another capture
    torch.testing.assert_close(graph(x3), eager(x3), rtol=1e-5, atol=1e-5)
    assert len(graph._graphs) == 2
    with torch.no_grad():
        model.head.weight.mul_(2)  # in place, as an optimizer updates
    torch.testing.assert_close(graph(x1), eager(x1), rtol=1e-5, atol=1e-5)


@cuda
def test_inference_graph_refuses_train_mode():
    with pytest.raises(ValueError, match="model.eval"):
        InferenceGraph(make(MODELS[0]).train())(torch.randn(2, 3, 32, 32, device="cuda"))


@cuda
@pytest.mark.parametrize("name", MODELS)
def test_training_graph_gives_eager_gradients_and_losses(name):
    eager = make(name).train()
    graphed = copy.deepcopy(eager)
    graph_for_training(graphed, torch.randn(8, 3, 32, 32, device="cuda"), autocast_dtype=torch.bfloat16)
    torch.manual_seed(1)
    x, y = torch.randn(8, 3, 32, 32, device="cuda"), torch.randint(0, 10, (8,), device="cuda")
    # eval mode runs the original forward (any shape), with the BatchNorm statistics the warm-up left alone
    with torch.no_grad():
        torch.testing.assert_close(graphed.eval()(x[:3]), eager.eval()(x[:3]), rtol=1e-5, atol=1e-5)
    eager.train(), graphed.train()
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-3) for m in (eager, graphed)]
    losses = {0: [], 1: []}
    for step in range(4):  # one batch, so that the loss must fall
        for i, (m, opt) in enumerate(zip((eager, graphed), opts)):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = F.cross_entropy(m(x), y)
            loss.backward()
            if step == 0:  # every gradient, before any update: the graph read x, not the capture's sample
                grads = [p.grad.float().clone() for p in m.parameters()]
                if i == 0:
                    ref = grads
                else:
                    for (n, _), a, b in zip(m.named_parameters(), ref, grads):
                        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-3 * a.abs().max().item() + 1e-7,
                                                   msg=lambda s, n=n: f"{n}: {s}")
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses[i].append(loss.item())
    assert losses[0][-1] < losses[0][0] - 0.05  # the steps train
    # later steps read the updated weights (bf16 rounding lets the two drift a little)
    assert losses[1] == pytest.approx(losses[0], rel=1e-2)


@cuda
def test_training_graph_accumulates_gradients_like_eager():
    eager = make(MODELS[0]).train()
    graphed = copy.deepcopy(eager)
    graph_for_training(graphed, torch.randn(4, 3, 32, 32, device="cuda"))
    xs = [torch.randn(4, 3, 32, 32, device="cuda") for _ in range(2)]
    for set_to_none in (True, False):  # .grad absent, then zeroed in place
        for m in (eager, graphed):
            m.zero_grad(set_to_none=set_to_none)
            for x in xs:  # two micro-batches: the second replay must not double the first's buffers
                m(x).square().mean().backward()
        for (n, a), b in zip(eager.named_parameters(), graphed.parameters()):
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-4 * a.grad.abs().max().item() + 1e-8,
                                       msg=lambda s, n=n: f"{n} (set_to_none={set_to_none}): {s}")


@cuda
def test_training_graph_refuses_other_shapes_autocast_and_a_second_capture():
    model = make(MODELS[0]).train()
    graph_for_training(model, torch.randn(4, 3, 32, 32, device="cuda"), autocast_dtype=torch.bfloat16)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        with pytest.raises(ValueError, match="fixed shapes"):
            model(torch.randn(3, 3, 32, 32, device="cuda"))
    with pytest.raises(ValueError, match="captured with autocast torch.bfloat16 but is called with autocast off"):
        model(torch.randn(4, 3, 32, 32, device="cuda"))
    with pytest.raises(ValueError, match="already has a training graph"):
        graph_for_training(model, torch.randn(4, 3, 32, 32, device="cuda"))


@cuda
def test_training_run_with_cuda_graph_matches_eager_run(tmp_path):
    def run(tag, **kw):
        cfg = T.Config(model="local_vim_tiny_cifar", dataset="fake", img_size=32, fake_train_size=128,
                       fake_val_size=32, epochs=2, batch_size=16, lr=1e-3, lr_base_size=0, warmup_epochs=0,
                       workers=0, device="cuda", amp=False, drop_path=0.0, mixup=0.0, cutmix=0.0, aa="none",
                       reprob=0.0, ema=True, ema_decay=0.9, output=str(tmp_path / tag), progress=False, **kw)
        T.train(cfg)
        return [json.loads(line) for line in (Path(cfg.output) / "metrics.jsonl").read_text().splitlines()]
    eager, graphed = run("eager"), run("graph", cuda_graph=True)
    assert len(eager) == len(graphed) == 2
    for a, b in zip(eager, graphed):  # fp32: only the order of atomic adds differs
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=2e-3)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=2e-3)  # the stem's BatchNorm statistics too
        assert b["ema_top1"] is not None
