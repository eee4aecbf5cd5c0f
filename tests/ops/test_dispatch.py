"""The backend registry shared by every op: one vocabulary, "auto" per device, install hints, warnings once."""
import warnings

import pytest
import torch

from localmamba.ops import _dispatch, _triton, causal_conv1d, channel_merge, selective_scan
from localmamba.ops.conv1d import CONV1D
from localmamba.ops.merge import MERGE
from localmamba.ops.scan import SCAN

OPS = (SCAN, CONV1D, MERGE)


@pytest.mark.parametrize("call", [
    lambda b: selective_scan(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.zeros(2, 1), torch.zeros(1, 1, 3),
                             torch.zeros(1, 1, 3), backend=b),
    lambda b: causal_conv1d(torch.zeros(1, 2, 3), torch.zeros(2, 4), backend=b),
    lambda b: channel_merge(torch.zeros(1, 3, 2), torch.zeros(1, 3, dtype=torch.long), torch.sigmoid, backend=b),
], ids=["scan", "conv", "merge"])
def test_unknown_name_lists_the_names(call):
    with pytest.raises(ValueError, match=r"unknown backend 'mamba'; choose one of \['auto', 'ref', 'torch', "
                                         r"'cpu', 'cuda', 'triton'\]"):
        call("mamba")


@pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
def test_every_name_resolves_on_every_device(op):
    """A layer passes one name to all its ops: every valid name maps to an implementation of each op, "ref"
    to the reference everywhere."""
    for device in ("cpu", "meta"):
        assert op.resolve("ref", device) == "ref"
        for name in _dispatch.BACKENDS:
            if name in ("cuda", "triton") and _dispatch.backend_error(name) is not None:
                continue  # explicit and unavailable: raises (below)
            assert op.resolve(name, device) in op.impls


def test_explicit_unavailable_backend_raises_with_install_hint(monkeypatch):
    monkeypatch.setattr(_triton, "triton_error", lambda: "triton does not import")
    for op in OPS:
        with pytest.raises(RuntimeError, match="pip install triton"):
            op.resolve("triton", "cuda")


def test_auto_fallback_warns_once_per_backend_and_device(monkeypatch):
    """Triton missing on a GPU: the scan falls back to mamba-ssm or torch, the conv to torch, the merge to the
    reference, with one warning in all (the conv and the merge do not repeat the scan's)."""
    monkeypatch.setattr(_triton, "triton_error", lambda: "triton does not import")
    monkeypatch.setattr(_dispatch, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            assert CONV1D.resolve("auto", "cuda") == "torch"
            assert MERGE.resolve("auto", "cuda") == "ref"
    triton_warnings = [w for w in caught if "Triton" in str(w.message)]
    assert len(triton_warnings) == 1 and "pip install triton" in str(triton_warnings[0].message)


def test_auto_prefers_triton_on_cuda(monkeypatch):
    monkeypatch.setattr(_triton, "triton_error", lambda: None)
    assert [op.resolve("auto", "cuda") for op in OPS] == ["triton"] * 3
    assert CONV1D.resolve("cuda", "cuda") == "triton" and MERGE.resolve("cuda", "cuda") == "triton"
    assert CONV1D.resolve("auto", "cpu") == ("cpu" if _dispatch.backend_error("cpu") is None else "torch")
    assert MERGE.resolve("auto", "cpu") == "ref"


def test_torch_means_plain_pytorch_and_traces_skip_triton(monkeypatch):
    """"torch" never reaches a kernel (the merge, which has no torch path, runs its reference), and "auto" under
    a torch.jit trace (the FLOP counter) skips Triton, whose launches a trace cannot record."""
    monkeypatch.setattr(_triton, "triton_error", lambda: None)
    assert [op.resolve("torch", "cuda") for op in OPS] == ["torch", "torch", "ref"]
    monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)
    assert [op.resolve("auto", "cuda") for op in OPS] == ["cuda" if _dispatch.backend_error("cuda") is None
                                                          else "torch", "torch", "ref"]
