"""The time-major layout's row gathers equal the plan's gathers (multi_scan, multi_reverse), values and
gradients, whatever the storage of their input."""
import pytest
import torch

from localmamba.layers import TIME_MAJOR
from localmamba.scan import multi_reverse, multi_scan, scan_plan


@pytest.mark.parametrize("directions,grid,cls_position", [
    (("h", "v_flip", "w2", "w3_flip"), (5, 6), None),  # window padding: the plan reads zero rows
    (("h_flip", "w4", "v"), (4, 4), 8),               # a class token mid-sequence
])
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("storage", ["BTC", "TBC"])
def test_time_major_row_gathers_equal_the_plan_gathers(directions, grid, cls_position, B, storage):
    torch.manual_seed(0)
    plan = scan_plan(directions, *grid, cls_position=cls_position)
    C = 5
    x = torch.randn(B, plan.T, C) if storage == "BTC" else torch.randn(plan.T, B, C).transpose(0, 1)
    x.requires_grad_(True)
    xs = TIME_MAJOR.scan(x, plan)  # (B, K, C, L)
    ref = multi_scan(x, plan)  # (B, K, L, C)
    assert xs.permute(3, 0, 1, 2).is_contiguous()  # (L, B, K, C) storage, as the CPU scan reads it
    torch.testing.assert_close(xs, ref.transpose(2, 3), rtol=0, atol=0)
    g = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(xs, x, g.transpose(2, 3))[0], torch.autograd.grad(ref, x, g)[0])

    y = torch.randn(plan.L, B, plan.K, C).permute(1, 2, 3, 0).requires_grad_(True)  # (B, K, C, L), time-major
    out = TIME_MAJOR.reverse(y, plan)  # (B, K, T, C)
    ref = multi_reverse(y.transpose(2, 3), plan)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    g = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(out, y, g)[0], torch.autograd.grad(ref, y, g)[0])
    with pytest.raises(ValueError, match="Layout.reverse"):
        TIME_MAJOR.reverse(y[..., :-1], plan)
