"""benchmarks/roofline.py's recording: transparent to the model, one scan call per mixer, replayable copies."""
import pathlib

import pytest
import timm
import torch

import localmamba  # noqa: F401
from localmamba import ops
from localmamba.layers import SS2D, MultiDirectionMamba


@pytest.fixture(scope="module")
def roofline():
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).parents[2] / "benchmarks"))
    try:
        import roofline
        yield roofline
    finally:
        sys.path.pop(0)


@pytest.mark.parametrize("name", ["test_local_vim", "test_local_vssm"])
def test_record_is_transparent_and_replayable(roofline, name):
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    mixers = [m for m in model.modules() if isinstance(m, (SS2D, MultiDirectionMamba))]
    calls, layers = {}, []
    real = ops.selective_scan
    with torch.no_grad():
        want = model(x)
        with roofline.record(model, 4, calls, layers):
            got = model(x)
    assert ops.selective_scan is real  # restored
    torch.testing.assert_close(got, want)
    assert sum(c["n"] for c in calls.values()) == len(mixers)
    assert sum(1 for name, *_ in layers if name in ("SS2D", "MultiDirectionMamba")) == len(mixers)
    assert all(i > 0 and o > 0 for _, i, _, o in layers)
    # the copies keep the layers' strides and values: the first call replays to the first layer's output
    first = next(iter(calls.values()))
    u = first["args"][0]
    hook_out = []
    h = mixers[0].ssm.register_forward_hook(lambda m, a, o: hook_out.append(o))
    with torch.no_grad():
        model(x)
    h.remove()
    with torch.no_grad():
        replay = ops.selective_scan(*first["args"], **first["kwargs"])
    torch.testing.assert_close(replay.view_as(hook_out[0]), hook_out[0])
    assert roofline.scan_flops(u, first["args"][2]) == 9 * u.numel() * first["args"][2].shape[1] + u.numel()


def test_forward_macs_and_scan_rule_add_up_to_the_library_count(roofline):
    """The counter's scan stand-in keeps every projection that feeds the scan: fvcore's count of the rest plus
    the scan rule over the recorded calls is the library's count (:func:`paper_flops`, the scan traced)."""
    from localmamba.models.flops import paper_flops

    model = timm.create_model("test_local_vssm").eval()
    calls, layers = {}, []
    with torch.no_grad(), roofline.record(model, 4, calls, layers):
        model(torch.randn(1, 3, 32, 32))
    scan = sum(roofline.scan_flops(c["args"][0], c["args"][2]) * c["n"] for c in calls.values())
    assert roofline.forward_macs(model, 32) + scan == paper_flops(model, 32)
