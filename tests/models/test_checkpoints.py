"""Reading checkpoint files: what a user passes by mistake gets one clear CheckpointError."""
import argparse

import pytest
import timm
import torch

import localmamba  # noqa: F401
from localmamba.models import CheckpointError, describe_state_dict, read_state_dict


@pytest.fixture
def saved(tmp_path):
    sd = timm.create_model("test_local_vim").state_dict()
    path = tmp_path / "ok.pth"
    torch.save({"model": sd, "epoch": 3}, path)
    return path, sd


@pytest.mark.parametrize("trust_pickle", [False, True])
@pytest.mark.parametrize("text", ["hello world\n1 2 3\n", "epoch,loss\n1,0.5\n", '{"model": "local_vim_tiny"}'])
def test_a_text_file_is_not_a_checkpoint_whatever_the_trust(tmp_path, text, trust_pickle):
    f = tmp_path / "notes.pth"
    f.write_text(text)
    with pytest.raises(CheckpointError, match="notes.pth is not a PyTorch checkpoint") as e:
        read_state_dict(f, trust_pickle=trust_pickle)
    assert "trust_pickle" not in str(e.value)  # the advice that led users into 'invalid literal for int()'
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        timm.create_model("test_local_vim", pretrained=True, pretrained_cfg_overlay=dict(file=str(f)))


@pytest.mark.parametrize("trust_pickle", [False, True])
def test_truncated_and_empty_files_are_clear_errors(saved, tmp_path, trust_pickle):
    path, _ = saved
    data = path.read_bytes()
    for name, content, message in [("half.pth", data[: len(data) // 2], "truncated or corrupt"),
                                   ("head.pth", data[:1000], "truncated or corrupt"),
                                   ("empty.pth", b"", "is empty")]:
        f = tmp_path / name
        f.write_bytes(content)
        with pytest.raises(CheckpointError, match=f"{name} .*{message}"):
            read_state_dict(f, trust_pickle=trust_pickle)


def test_legacy_format_reads_and_its_truncation_is_clear(tmp_path):
    sd = {"w": torch.arange(10.0)}
    f = tmp_path / "legacy.pth"
    torch.save(sd, f, _use_new_zipfile_serialization=False)
    torch.testing.assert_close(read_state_dict(f)["w"], sd["w"])
    f.write_bytes(f.read_bytes()[:-20])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_state_dict(f)


def test_state_dicts_are_unwrapped_and_pickled_objects_need_trust(saved, tmp_path):
    path, sd = saved
    got = read_state_dict(path)
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)
    f = tmp_path / "with_args.pth"
    torch.save({"model": {"module." + k: v for k, v in sd.items()}, "args": argparse.Namespace(lr=1e-3)}, f)
    with pytest.raises(CheckpointError, match="trust_pickle=True"):
        read_state_dict(f)
    assert read_state_dict(f, trust_pickle=True).keys() == sd.keys()  # DDP's 'module.' prefix dropped
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "missing.pth")


def test_describe_names_the_registered_model_a_state_dict_belongs_to():
    sd = timm.create_model("test_local_vssm").state_dict()
    assert describe_state_dict(sd).startswith("test_local_vssm (LocalVMamba")
    assert "unregistered LocalVim" in describe_state_dict(timm.create_model("test_local_vim", depth=3,
                                                                            directions=[["h"]] * 3).state_dict())
    assert "unknown architecture" in describe_state_dict({"fc.weight": torch.zeros(2, 2)})


def test_local_vmamba_state_dict_with_op_keys_loads():
    """Checkpoints that name the block's mixer ``op`` (the original's name, and this project's before it
    became ``mixer`` as in LocalVim's blocks) still load, strictly, to the same outputs."""
    torch.manual_seed(0)
    model = timm.create_model("test_local_vssm").eval()
    old = {k.replace(".mixer.", ".op."): v for k, v in model.state_dict().items()}
    assert any(".op." in k for k in old)
    fresh = timm.create_model("test_local_vssm").eval()
    fresh.load_state_dict(old, strict=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)
