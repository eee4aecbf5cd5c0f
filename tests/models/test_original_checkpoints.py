"""The contract with the original code: its checkpoints load and give its logits."""
import argparse
import json
import os
from pathlib import Path

import pytest
import timm
import torch

import localmamba  # noqa: F401  (registers the models)
from localmamba.models import CheckpointError, model_from_arch
from localmamba.ops import available_backends

# ../shared beside the checkout; LOCALMAMBA_FIXTURES points elsewhere (e.g. a copy carried to a GPU machine)
FIXTURES = Path(os.environ.get("LOCALMAMBA_FIXTURES",
                               Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "original"))
NAMES = ["local_vim_small_arch", "local_vim_midcls_arch", "local_vim_search_arch",
         "local_vssm_small_arch", "local_vssm_search_arch"]

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"fixtures not found at {FIXTURES}")


def build_from_fixture(name: str, file=None, **extra):
    """The fixture's architecture (its JSON) with its checkpoint (or ``file``) loaded through timm."""
    arch = json.loads((FIXTURES / f"{name}.json").read_text())
    extra.setdefault("backend", "torch")
    return model_from_arch(arch, checkpoint=file or FIXTURES / f"{name}.ckpt", **extra), arch


@pytest.mark.parametrize("backend", [b for b in ("torch", "cpu") if b in available_backends()])
@pytest.mark.parametrize("name", NAMES)
def test_original_checkpoint_gives_original_logits(name, backend):
    model, arch = build_from_fixture(name, backend=backend)
    assert sum(p.numel() for p in model.parameters()) == arch["params"]
    io = torch.load(FIXTURES / f"{name}.io.pt", weights_only=True)
    with torch.no_grad():
        logits = model(io["input"])
    torch.testing.assert_close(logits, io["logits"], rtol=0, atol=1e-4)


@pytest.mark.cuda
@pytest.mark.parametrize("name", NAMES)
def test_original_checkpoint_on_cuda_kernels(name):
    if "cuda" not in available_backends():
        pytest.skip("needs a CUDA GPU and mamba-ssm")
    model, _ = build_from_fixture(name, backend="cuda")
    io = torch.load(FIXTURES / f"{name}.io.pt", weights_only=True)
    with torch.no_grad():
        logits = model.cuda()(io["input"].cuda()).cpu()
    torch.testing.assert_close(logits, io["logits"], rtol=0, atol=1e-4)


def test_wrong_family_is_named_in_the_error():
    # a LocalVMamba file loaded into a LocalVim: the error says what the file looks like
    with pytest.raises(CheckpointError, match="LocalVMamba") as err:
        timm.create_model("local_vim_tiny_search", pretrained=True, num_classes=10, img_size=64, embed_dim=32, depth=2,
                          pretrained_cfg_overlay=dict(file=str(FIXTURES / "local_vssm_small_arch.ckpt")))
    assert "Detail" not in str(err.value)  # the loader's internals say nothing more to a user here


def test_pickled_objects_need_explicit_trust(tmp_path):
    ckpt = torch.load(FIXTURES / "local_vssm_search_arch.ckpt", weights_only=True)
    ckpt["args"] = argparse.Namespace(lr=1e-3)  # training scripts often save their args: not a tensor
    f = tmp_path / "pickled.ckpt"
    torch.save(ckpt, f)
    with pytest.raises(CheckpointError, match="trust_pickle=True"):
        build_from_fixture("local_vssm_search_arch", file=f)
    model, _ = build_from_fixture("local_vssm_search_arch", file=f, trust_pickle=True)
    io = torch.load(FIXTURES / "local_vssm_search_arch.io.pt", weights_only=True)
    with torch.no_grad():
        torch.testing.assert_close(model(io["input"]), io["logits"], rtol=0, atol=1e-4)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    f = tmp_path / "broken.ckpt"
    f.write_bytes((FIXTURES / "local_vssm_search_arch.ckpt").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt"):
        build_from_fixture("local_vssm_search_arch", file=f)


def test_release_download_failure_is_a_clear_error(monkeypatch):
    import timm.models._hub as hub

    def offline(url, **kw):
        raise OSError("Name or service not known")
    monkeypatch.setattr(hub, "download_cached_file", offline)
    with pytest.raises(CheckpointError, match="pretrained_cfg_overlay=dict\\(file=PATH\\)"):
        timm.create_model("local_vim_tiny", pretrained=True)
    with pytest.raises(CheckpointError, match="no released weights"):
        timm.create_model("local_vim_small", pretrained=True)  # the original links it to a LocalVMamba-S file
