"""A derived spec round-trips through its file and builds a model whose layers scan what it lists."""
import json

import pytest
import timm
import torch

import localmamba.models  # noqa: F401
from localmamba.search import CIFAR_CANDIDATES, DirectionSpec, DirectionSpecError, derive, search_layers


def _derived(supernet, logits_seed=0, **kw):
    torch.manual_seed(0)
    model = timm.create_model(supernet, **kw)
    g = torch.Generator().manual_seed(logits_seed)
    with torch.no_grad():
        for _, m in search_layers(model):
            m.merge.weights.copy_(torch.randn(8, 1, 1, 1, generator=g))
    return derive(model, k=4)


@pytest.mark.parametrize("supernet, target, kw", [
    ("local_vim_tiny_cifar_search", "local_vim_tiny_cifar", dict(depth=3, embed_dim=16)),
    ("local_vssm_tiny_cifar_search", "local_vssm_tiny_cifar", dict(dims=[8, 16, 24, 32], depths=[1, 1, 2, 1])),
])
def test_round_trip_builds_the_searched_model(supernet, target, kw, tmp_path):
    spec = _derived(supernet, **kw)
    assert spec.model == supernet and tuple(spec.candidates) == CIFAR_CANDIDATES
    path = tmp_path / "directions.json"
    spec.save(path)
    loaded = DirectionSpec.load(path)
    assert loaded.to_dict() == spec.to_dict()
    model = timm.create_model(target, directions=str(path), **kw)
    scanned = [list(m.directions) for _, m in model.named_modules() if hasattr(m, "merge") and hasattr(m, "directions")]
    assert scanned == spec.directions and not any(m.merge.search for _, m in model.named_modules() if hasattr(m, "merge"))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_wrong_depth_or_family_says_which(tmp_path):
    spec = _derived("local_vim_tiny_cifar_search", depth=3, embed_dim=16)
    path = tmp_path / "directions.json"
    spec.save(path)
    with pytest.raises(DirectionSpecError, match="depth 3 but the local_vim model has depth 12"):
        timm.create_model("local_vim_tiny_cifar", directions=str(path))
    with pytest.raises(DirectionSpecError, match="local_vim family.*this model is a local_vmamba"):
        timm.create_model("local_vssm_tiny_cifar", directions=str(path))


def test_invalid_spec_file_is_refused(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"family": "local_vim", "directions": [["h", "w0"]]}))
    with pytest.raises(DirectionSpecError, match="bad.json.*layer 0"):
        timm.create_model("local_vim_tiny_cifar", directions=str(bad))
    bad.write_text("h, v")
    with pytest.raises(DirectionSpecError, match="not JSON"):
        DirectionSpec.load(bad)
