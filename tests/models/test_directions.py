"""Direction tables, DirectionSpec files and the CIFAR supernets."""
import json

import pytest
import timm
import torch

import localmamba  # noqa: F401
from localmamba.models import CANDIDATES, CIFAR_CANDIDATES, DirectionSpec, DirectionSpecError, LocalVim, LocalVMamba

VIM_DIRS = [["h", "v_flip", "w2", "w2_flip"], ["h_flip", "v", "w3", "w3_flip"]]  # test_local_vim: depth 2


def mixers(model):
    """The token mixer of every layer (LocalVim) or block (LocalVMamba), in order."""
    if isinstance(model, LocalVim):
        return [layer.mixer for layer in model.layers]
    return [block.mixer for stage in model.layers for block in stage.blocks]


def test_candidates_are_the_originals_and_their_cifar_variant():
    assert CANDIDATES == ("h", "h_flip", "v", "v_flip", "w2", "w2_flip", "w7", "w7_flip")
    assert CIFAR_CANDIDATES == ("h", "h_flip", "v", "v_flip", "w2", "w2_flip", "w4", "w4_flip")


def test_spec_round_trips_through_a_readable_file(tmp_path):
    spec = DirectionSpec(VIM_DIRS, family="local_vim", model="test_local_vim", candidates=CIFAR_CANDIDATES,
                         probabilities=[[0.125] * 8, [0.5, 0.5] + [0.0] * 6])
    path = tmp_path / "spec.json"
    spec.save(path)
    text = path.read_text()
    assert '["h", "v_flip", "w2", "w2_flip"]' in text  # one line per layer
    assert json.loads(text)["depth"] == 2
    back = DirectionSpec.load(path)
    assert back == spec and back.to_dict() == spec.to_dict()
    assert DirectionSpec.from_dict(spec.to_dict()) == spec
    assert DirectionSpec(VIM_DIRS, family="local_vim", depth=2).depth == spec.depth == 2
    with pytest.raises(DirectionSpecError, match="field 'depth' is 3"):
        DirectionSpec(VIM_DIRS, family="local_vim", depth=3)
    no_probs = DirectionSpec(VIM_DIRS, family="local_vim")
    no_probs.save(path)
    assert DirectionSpec.load(path) == no_probs and "probabilities" not in no_probs.to_dict()


@pytest.mark.parametrize("form", ["path", "spec", "lists"])
def test_models_accept_a_spec_file_a_spec_or_lists(tmp_path, form):
    spec = DirectionSpec(VIM_DIRS, family="local_vim", model="somewhere")
    spec.save(tmp_path / "spec.json")
    directions = {"path": str(tmp_path / "spec.json"), "spec": spec, "lists": VIM_DIRS}[form]
    model = timm.create_model("test_local_vim", directions=directions)
    assert [list(m.directions) for m in mixers(model)] == VIM_DIRS
    assert not any(m.search for m in mixers(model))
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_local_vmamba_takes_one_spec_entry_per_block(tmp_path):
    dirs = [["h", "w2"], ["v", "v_flip"], ["w2_flip", "h_flip"], ["h", "v"]]  # test_local_vssm: 4 blocks
    DirectionSpec(dirs, family="local_vmamba").save(tmp_path / "s.json")
    model = timm.create_model("test_local_vssm", directions=tmp_path / "s.json")
    assert [list(m.directions) for m in mixers(model)] == dirs


def test_mismatches_say_what_is_wrong(tmp_path):
    deep = DirectionSpec([["h", "v"]] * 5, family="local_vim", model="x")
    with pytest.raises(DirectionSpecError, match="depth 5 but the local_vim model has depth 2"):
        timm.create_model("test_local_vim", directions=deep)
    vmamba = DirectionSpec(VIM_DIRS, family="local_vmamba", model="local_vssm_tiny_cifar_search")
    with pytest.raises(DirectionSpecError, match="for the local_vmamba family .* this model is a local_vim"):
        timm.create_model("test_local_vim", directions=vmamba)
    with pytest.raises(DirectionSpecError, match=r"layer 1: unknown scan direction 'diag'"):
        timm.create_model("test_local_vim", directions=[["h"], ["v", "diag"]])
    assert issubclass(DirectionSpecError, ValueError)


@pytest.mark.parametrize("content, field", [
    ("not json at all", "not JSON"),
    ('["h", "v"]', "expected a JSON object"),
    ('{"directions": [["h"], ["v"]]}', "field 'family' is missing"),
    ('{"family": "local_vim"}', "field 'directions' is missing"),
    ('{"family": "vit", "directions": [["h"], ["v"]]}', "field 'family' must be one of"),
    ('{"family": "local_vim", "directions": ["h", "v"]}', "field 'directions' must be a list of lists"),
    ('{"family": "local_vim", "depth": 3, "directions": [["h"], ["v"]]}', "field 'depth' is 3"),
    ('{"family": "local_vim", "directions": [["h"], ["up"]]}', "field 'directions', layer 1: unknown scan"),
    ('{"family": "local_vim", "directions": [["h"], []]}', "field 'directions', layer 1 is empty"),
    ('{"family": "local_vim", "directions": [["h"], ["v"]], "candidates": ["h", "x"]}', "field 'candidates'"),
    ('{"family": "local_vim", "directions": [["h"], ["v"]], "probabilities": [[1.0]]}', "field 'probabilities'"),
])
def test_an_invalid_spec_file_names_the_field(tmp_path, content, field):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DirectionSpecError, match=f"bad.json is not a valid direction spec: {field}"):
        timm.create_model("test_local_vim", directions=str(path))
    with pytest.raises(DirectionSpecError, match="not found"):
        DirectionSpec.load(tmp_path / "missing.json")


@pytest.mark.parametrize("supernet, model", [("local_vim_tiny_cifar_search", "local_vim_tiny_cifar"),
                                             ("local_vssm_tiny_cifar_search", "local_vssm_tiny_cifar")])
def test_cifar_supernets_search_the_cifar_candidates_at_the_cifar_geometry(supernet, model):
    sup = timm.create_model(supernet)
    ref = timm.create_model(model)
    assert sup.pretrained_cfg["input_size"] == ref.pretrained_cfg["input_size"] == (3, 32, 32)
    assert sup.num_classes == ref.num_classes == 10
    assert len(mixers(sup)) == len(mixers(ref))
    for s, r in zip(mixers(sup), mixers(ref)):
        assert s.search and s.directions == CIFAR_CANDIDATES and s.d_inner == r.d_inner
        assert s.merge.probabilities().shape == (8,)
    assert sup(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # the searched model is built from a spec of the supernet's family and depth
    spec = DirectionSpec([list(CIFAR_CANDIDATES[:4])] * len(mixers(sup)),
                         family="local_vim" if isinstance(sup, LocalVim) else "local_vmamba", model=supernet)
    derived = timm.create_model(model, directions=spec)
    assert all(m.directions == CIFAR_CANDIDATES[:4] and not m.search for m in mixers(derived))


@pytest.mark.parametrize("name, cls", [("local_vim_tiny_search", LocalVim), ("local_vssm_tiny_search", LocalVMamba),
                                       ("local_vim_tiny_cifar_search", LocalVim)])
def test_search_factories_take_keyword_arguments(name, cls):
    kw = dict(embed_dim=32, depth=2) if cls is LocalVim else dict(dims=(8, 16, 24, 32), depths=(1, 1, 1, 1))
    model = timm.create_model(name, num_classes=7, **kw)
    assert isinstance(model, cls) and model.num_classes == 7 and len(mixers(model)) in (2, 4)
    assert all(m.search for m in mixers(model))
