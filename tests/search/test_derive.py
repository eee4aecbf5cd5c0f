"""derive: the top-k directions of every layer from the probabilities a supernet learned."""
import pytest
import timm
import torch

import localmamba.models  # noqa: F401  (registers the models)
import localmamba.search
from localmamba.search import candidates, derive, probabilities, top_k_directions
from localmamba.search.supernet import probabilities_from_state_dict

CANDS = ("h", "h_flip", "v", "v_flip", "w2", "w2_flip", "w7", "w7_flip")


def tiny_supernet(name="local_vim_tiny_search", **kw):
    torch.manual_seed(0)
    kw = dict(depth=3, embed_dim=16, img_size=32, patch_size=8, num_classes=10) if name.startswith("local_vim") else kw
    return timm.create_model(name, **kw)


def set_logits(model, logits):
    with torch.no_grad():
        for layer, row in zip([m for _, m in localmamba.search.search_layers(model)], logits):
            layer.merge.weights.copy_(torch.tensor(row, dtype=torch.float32).view(-1, 1, 1, 1))


def test_top_k_keeps_the_most_probable_in_candidate_order():
    probs = torch.tensor([[0.05, 0.30, 0.05, 0.20, 0.10, 0.05, 0.15, 0.10],
                          [0.40, 0.01, 0.01, 0.01, 0.01, 0.06, 0.20, 0.30]])
    assert top_k_directions(probs, CANDS, 4) == [("h_flip", "v_flip", "w2", "w7"), ("h", "w2_flip", "w7", "w7_flip")]
    assert top_k_directions(probs, CANDS, 1) == [("h_flip",), ("h",)]


def test_ties_go_to_the_candidate_listed_first():
    uniform = torch.full((2, 8), 1 / 8)
    assert top_k_directions(uniform, CANDS, 4) == [CANDS[:4]] * 2
    # a tie at the boundary: v (index 2) and w2 (index 4) share the 3rd place; v is listed first
    probs = torch.tensor([[0.3, 0.0, 0.1, 0.0, 0.1, 0.0, 0.5, 0.0]])
    assert top_k_directions(probs, CANDS, 3) == [("h", "v", "w7")]
    assert top_k_directions(probs.flip(-1), CANDS[::-1], 3) == [("w7", "w2", "h")]  # order of the list given


@pytest.mark.parametrize("k", [0, 9])
def test_k_outside_the_candidates_is_refused(k):
    with pytest.raises(ValueError, match=f"k={k}.*8 candidates"):
        top_k_directions(torch.full((1, 8), 1 / 8), CANDS, k)


def test_bad_probabilities_are_refused():
    with pytest.raises(ValueError, match=r"\(layers, 8\)"):
        top_k_directions(torch.full((2, 7), 1 / 7), CANDS, 4)
    with pytest.raises(ValueError, match="NaN"):
        top_k_directions(torch.tensor([[float("nan")] * 8]), CANDS, 4)


def test_derive_reads_the_supernet():
    model = tiny_supernet()
    logits = [[0, 3, 0, 2, 1, 0, 0, 4], [5, 0, 0, 0, 4, 3, 2, 0], [0, 0, 1, 1, 1, 1, 0, 0]]
    set_logits(model, logits)
    assert candidates(model) == CANDS
    expected = torch.tensor(logits, dtype=torch.float32).softmax(-1)
    torch.testing.assert_close(probabilities(model), expected)
    spec = derive(model, k=4)
    assert [tuple(d) for d in spec.directions] == [("h_flip", "v_flip", "w2", "w7_flip"), ("h", "w2", "w2_flip", "w7"),
                                                    ("v", "v_flip", "w2", "w2_flip")]
    assert spec.family == "local_vim" and spec.depth == 3 and tuple(spec.candidates) == CANDS
    torch.testing.assert_close(torch.tensor(spec.probabilities, dtype=torch.float64), expected.double(), atol=1e-6, rtol=0)
    assert [tuple(d) for d in derive(model, k=2).directions] == [("h_flip", "w7_flip"), ("h", "w2"), ("v", "v_flip")]
    with pytest.raises(ValueError, match="k=9"):
        derive(model, k=9)


def test_state_dict_probabilities_match_the_model_and_the_original_key_names():
    model = tiny_supernet()
    set_logits(model, torch.randn(3, 8).tolist())
    sd = model.state_dict()
    torch.testing.assert_close(probabilities_from_state_dict(sd), probabilities(model))
    original = {k.replace(".mixer.merge.weights", ".mixer.multi_scan.weights"): v for k, v in sd.items()}
    torch.testing.assert_close(probabilities_from_state_dict(original), probabilities(model))


def test_a_model_that_is_not_a_supernet_is_refused():
    model = timm.create_model("test_local_vim")
    with pytest.raises(ValueError, match="supernet"):
        probabilities(model)
    with pytest.raises(ValueError, match="not a supernet"):
        probabilities_from_state_dict(model.state_dict())


def test_derive_local_vmamba():
    model = tiny_supernet("local_vssm_tiny_search", dims=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_classes=10)
    logits = torch.zeros(4, 8)
    logits[:, 6] = 1.0  # every block prefers w7
    set_logits(model, logits.tolist())
    spec = derive(model, k=4)
    assert spec.family == "local_vmamba" and spec.depth == 4
    assert all(tuple(d) == ("h", "h_flip", "v", "w7") for d in spec.directions)
