"""FLOPs counted the paper's way for LocalVMamba: fvcore, with the selective scan as 9*B*L*D*N."""
import pytest
import timm
import torch

import localmamba  # noqa: F401
from localmamba.models.flops import paper_flops


def test_local_vmamba_tiny_flops_are_the_papers():
    """The paper gives 5.7 G for LocalVMamba-T at 224 (rounded to 0.1 G). The count traces the torch scan,
    whose own ops (its bmm) are traced too and must not add to the scan rule (they did: 5.94 G)."""
    pytest.importorskip("fvcore")
    flops = paper_flops(timm.create_model("local_vssm_tiny"), 224)
    assert abs(flops / 5.7e9 - 1) < 0.01, flops


def test_the_count_makes_its_own_trace_work_and_leaves_the_model_as_it_was(monkeypatch):
    """The layers keep no tracing branches for the counter: with torch.jit.is_tracing() answering False
    everywhere, the count is the same, and the model's backend and the patched ops are restored."""
    pytest.importorskip("fvcore")
    from localmamba import scan
    from localmamba.layers import ssm

    model = timm.create_model("test_local_vssm", backend="auto").train()
    gather, projection = scan._gather, ssm._block_projection
    expected = paper_flops(model, 32)
    monkeypatch.setattr(torch.jit, "is_tracing", lambda: False)
    assert paper_flops(model, 32) == expected > 0
    assert model.backend == "auto" and model.training
    assert scan._gather is gather and ssm._block_projection is projection
