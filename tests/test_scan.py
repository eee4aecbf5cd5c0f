import pytest
import torch

from localmamba.scan import (ORIGINAL_CANDIDATES, local_reverse, local_reverse_ref, local_scan, local_scan_ref,
                             multi_reverse, multi_scan, parse_direction, scan_length, scan_order, scan_plan)

GRIDS = [(14, 14), (12, 12), (7, 9), (1, 5)]
DIRECTIONS = list(ORIGINAL_CANDIDATES) + ["w3", "w4_flip", "w5", "w14", "w16_flip"]


@pytest.mark.parametrize("H,W", GRIDS)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_round_trip_and_matches_reshape_reference(direction, H, W):
    x = torch.randn(2, 3, H, W)
    y = local_scan(x, direction)
    assert y.shape == (2, 3, scan_length(direction, H, W))
    torch.testing.assert_close(y, local_scan_ref(x, direction, H, W), rtol=0, atol=0)
    # (B, C, H*W) input gives the same sequence
    torch.testing.assert_close(local_scan(x.flatten(2), direction, H, W), y, rtol=0, atol=0)
    back = local_reverse(y, direction, H, W)
    torch.testing.assert_close(back, x.flatten(2), rtol=0, atol=0)
    torch.testing.assert_close(local_reverse_ref(y, direction, H, W), back, rtol=0, atol=0)


def test_w2_on_4x4_worked_by_hand():
    # grid indices     windows (row-major), tokens row-major inside each window
    #  0  1 |  2  3
    #  4  5 |  6  7    -> [0 1 4 5] [2 3 6 7] [8 9 12 13] [10 11 14 15]
    # -------------
    #  8  9 | 10 11
    # 12 13 | 14 15
    expected = [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15]
    assert scan_order("w2", 4, 4).tolist() == expected
    assert scan_order("w2_flip", 4, 4).tolist() == expected[::-1]
    assert scan_order("v", 2, 3).tolist() == [0, 3, 1, 4, 2, 5]
    x = torch.arange(16.).view(1, 1, 4, 4)
    assert local_scan(x, "w2")[0, 0].tolist() == [float(i) for i in expected]


def test_padding_cases():
    # w2 on 3x3: padded to 4x4, padding visited inside the windows it falls in, and it is zero
    order = scan_order("w2", 3, 3).tolist()
    assert order == [0, 1, 3, 4, 2, -1, 5, -1, 6, 7, -1, -1, 8, -1, -1, -1]
    x = torch.arange(1., 10.).view(1, 1, 3, 3)
    y = local_scan(x, "w2")[0, 0]
    assert y.tolist() == [1, 2, 4, 5, 3, 0, 6, 0, 7, 8, 0, 0, 9, 0, 0, 0]
    # _flip reverses the whole padded sequence (padding first)
    assert local_scan(x, "w2_flip")[0, 0].tolist() == y.flip(0).tolist()
    assert scan_length("w7", 12, 12) == 196 and scan_length("w7", 14, 14) == 196
    assert scan_length("w2", 7, 7) == 64 and scan_length("v", 7, 9) == 63


def test_gradients_flow_through_scan_and_reverse():
    x = torch.randn(2, 4, 7, 9, requires_grad=True)
    w = torch.randn(2, 4, scan_length("w3_flip", 7, 9))
    (local_scan(x, "w3_flip") * w).sum().backward()
    # d/dx of sum(scan(x) * w) is w gathered back to the grid (padding positions drop out)
    torch.testing.assert_close(x.grad.flatten(2), local_reverse(w, "w3_flip", 7, 9))
    assert torch.autograd.gradcheck(lambda t: local_reverse(local_scan(t, "w2", 3, 3) * 2, "w2", 3, 3),
                                    (torch.randn(1, 2, 9, dtype=torch.double, requires_grad=True),))


@pytest.mark.parametrize("bad", ["x", "w1", "w", "h_flipp", "flip", "w0_flip", "W2", 7])
def test_unknown_direction_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="valid are"):
        parse_direction(bad)
    with pytest.raises(ValueError):
        scan_order(bad, 4, 4)


def test_inconsistent_shapes_are_errors():
    with pytest.raises(ValueError, match="H\\*W"):
        local_scan(torch.randn(1, 2, 10), "h", 3, 3)
    with pytest.raises(ValueError, match="needs H and W"):
        local_scan(torch.randn(1, 2, 9), "h")
    with pytest.raises(ValueError, match="must be"):
        local_reverse(torch.randn(1, 2, 9), "w2", 3, 3)
    with pytest.raises(ValueError, match="positive"):
        scan_order("h", 0, 3)


@pytest.mark.parametrize("cls_position", [None, 0, 6, 12])
def test_multi_scan_plan_equals_single_direction_scans(cls_position):
    H, W = 3, 4
    dirs = ("h", "v_flip", "w2", "w3_flip")
    plan = scan_plan(dirs, H, W, cls_position=cls_position)
    T = H * W + (cls_position is not None)
    x = torch.randn(2, T, 5, requires_grad=True)  # tokens-last
    ys = multi_scan(x, plan)  # (B, K, L, C)
    assert ys.shape == (2, 4, plan.L, 5) and plan.L == max(scan_length(d, H, W) for d in dirs) + (T - H * W)
    patches = x if cls_position is None else torch.cat([x[:, :cls_position], x[:, cls_position + 1:]], 1)
    for k, d in enumerate(dirs):
        single = local_scan(patches.transpose(1, 2), d, H, W)  # (B, C, L_d)
        if cls_position is not None:  # the class token sits at the same index of every sequence
            cls = x[:, cls_position].unsqueeze(-1)
            single = torch.cat([single[..., :cls_position], cls, single[..., cls_position:]], -1)
        n = single.shape[-1]
        assert plan.lengths[k] == n
        torch.testing.assert_close(ys[:, k, :n].transpose(1, 2), single)
        assert ys[:, k, n:].abs().sum() == 0  # padded to the common length with zeros
    back = multi_reverse(ys, plan)  # (B, K, T, C)
    for k in range(len(dirs)):
        torch.testing.assert_close(back[:, k], x)
    back.sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, len(dirs)))


@pytest.mark.parametrize("cls_position", [None, 5])
def test_multi_scan_and_reverse_gradients_match_autograd_of_index_select(cls_position):
    # the custom backward (gathers, no index_add) against autograd through plain indexing
    plan = scan_plan(("h", "v_flip", "w2", "w3_flip"), 3, 5, cls_position=cls_position)  # padded plan
    T = plan.T
    x = torch.randn(2, T, 3, dtype=torch.double, requires_grad=True)
    xp = torch.cat([x, x.new_zeros(2, 1, 3)], 1)
    want = xp[:, plan.gather.flatten()].view(2, plan.K, plan.L, 3)
    got = multi_scan(x, plan)
    w = torch.randn_like(got)
    torch.testing.assert_close(got, want)
    gx, = torch.autograd.grad((got * w).sum(), x)
    wx, = torch.autograd.grad((want * w).sum(), x)
    torch.testing.assert_close(gx, wx)
    y = torch.randn(2, plan.K, plan.L, 3, dtype=torch.double, requires_grad=True)
    v = torch.randn(2, plan.K, T, 3, dtype=torch.double)
    want = y.reshape(2, -1, 3)[:, plan.flat_reverse].view(2, plan.K, T, 3)
    gy, = torch.autograd.grad((multi_reverse(y, plan) * v).sum(), y)
    wy, = torch.autograd.grad((want * v).sum(), y)
    torch.testing.assert_close(gy, wy)
    assert gy[:, 0, plan.lengths[0]:].abs().sum() == 0  # padding positions get no gradient
    # second order too (the backward is built from the same differentiable gathers)
    assert torch.autograd.gradgradcheck(lambda t: multi_reverse(multi_scan(t, plan) ** 2, plan), (x,))


@pytest.mark.parametrize("cls_position", [None, 5])
def test_interleaved_layout_is_the_stacked_one_transposed(cls_position):
    # layout="blkc" (B, L, K, C): the same sequences as (B, K, L, C), interleaved per position
    plan = scan_plan(("h", "v_flip", "w2", "w3_flip"), 3, 5, cls_position=cls_position)  # padded plan
    x = torch.randn(2, plan.T, 3, dtype=torch.double, requires_grad=True)
    got = multi_scan(x, plan, layout="blkc")
    assert got.shape == (2, plan.L, plan.K, 3) and got.is_contiguous()
    torch.testing.assert_close(got, multi_scan(x, plan).transpose(1, 2))
    y = torch.randn(2, plan.L, plan.K, 3, dtype=torch.double, requires_grad=True)
    torch.testing.assert_close(multi_reverse(y, plan, layout="blkc"), multi_reverse(y.transpose(1, 2), plan))
    torch.testing.assert_close(multi_reverse(got, plan, layout="blkc"), x.unsqueeze(1).expand(2, plan.K, plan.T, 3))
    w = torch.randn_like(got)
    gx, = torch.autograd.grad((got * w).sum(), x)
    wx, = torch.autograd.grad((multi_scan(x, plan) * w.transpose(1, 2)).sum(), x)
    torch.testing.assert_close(gx, wx)
    assert torch.autograd.gradgradcheck(
        lambda t: multi_reverse(multi_scan(t, plan, layout="blkc") ** 2, plan, layout="blkc"), (x,))
    with pytest.raises(ValueError, match="layout"):
        multi_scan(x, plan, layout="bkcl")
    with pytest.raises(ValueError, match=r"\(B, %d, %d, C\)" % (plan.L, plan.K)):
        multi_reverse(y.transpose(1, 2), plan, layout="blkc")


@pytest.mark.parametrize("layout", ["bklc", "blkc"])
@pytest.mark.parametrize("cls_position", [None, 5])
def test_reverse_rows_index_the_reverse(layout, cls_position):
    """reverse_rows (K, T): the row of the flattened scanned sequences that multi_reverse reads for each
    direction and token, without repeats (ops that reverse by themselves rely on it)."""
    plan = scan_plan(("h", "v_flip", "w2", "w3_flip"), 3, 5, cls_position=cls_position)  # padded plan
    rows = plan.reverse_rows("cpu", layout)
    assert rows.shape == (plan.K, plan.T) and rows.unique().numel() == rows.numel()
    seq = (plan.L, plan.K) if layout == "blkc" else (plan.K, plan.L)
    y = torch.randn(2, *seq, 3)
    torch.testing.assert_close(y.flatten(1, 2)[:, rows], multi_reverse(y, plan, layout=layout))
    assert plan.reverse_rows("cpu", layout).equal(rows)
