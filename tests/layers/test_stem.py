"""ConvStem: the conv patch embedding of the CIFAR variants."""
import pytest
import torch
import torch.nn as nn

from localmamba.layers import ConvStem


@pytest.mark.parametrize("patch,depth", [(2, 1), (4, 1), (4, 2), (8, 1)])
def test_stride_grid_and_channels(patch, depth):
    stem = ConvStem(img_size=32, patch_size=patch, embed_dim=64, depth=depth)
    x = torch.randn(2, 3, 32, 32)
    out = stem(x)
    g = 32 // patch
    assert stem.grid_size == (g, g) and out.shape == (2, g * g, 64)
    convs = [m for m in stem.convs if isinstance(m, nn.Conv2d)]
    assert len(convs) == depth * (1 + patch.bit_length() - 1)
    assert sum(c.stride[0] == 2 for c in convs) == patch.bit_length() - 1


def test_other_sizes_are_padded_at_bottom_right():
    stem = ConvStem(img_size=32, patch_size=4, embed_dim=32).eval()
    x = torch.randn(1, 3, 30, 37)
    assert stem.dynamic_feat_size((30, 37)) == (8, 10)
    out = stem(x)
    assert out.shape == (1, 80, 32)
    # the same as padding by hand with zeros
    padded = torch.nn.functional.pad(x, (0, 3, 0, 2))
    assert torch.allclose(out, stem(padded))


def test_tokens_see_only_their_receptive_field():
    """One conv a stage: a token sees 9x9 pixels around its 4x4 patch; a change outside leaves it alone."""
    stem = ConvStem(img_size=32, patch_size=4, embed_dim=32).eval()
    x = torch.randn(1, 3, 32, 32)
    y = x.clone()
    y[..., 20:, 20:] = 0  # far from the top-left token
    a, b = stem(x), stem(y)
    assert torch.allclose(a[:, 0], b[:, 0])
    assert not torch.allclose(a[:, -1], b[:, -1])


def test_flops_counts_every_conv_multiply_accumulate():
    stem = ConvStem(img_size=32, patch_size=4, embed_dim=32, depth=2)
    macs = 0

    def hook(m, inp, out):
        nonlocal macs
        macs += out.shape[-2] * out.shape[-1] * m.weight.numel()

    for m in stem.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(hook)
    stem(torch.randn(1, 3, 28, 36))
    assert stem.flops((28, 36)) == macs


@pytest.mark.parametrize("kw", [dict(patch_size=3), dict(patch_size=1), dict(embed_dim=30, patch_size=8),
                                dict(depth=0)])
def test_bad_arguments_say_what_is_wrong(kw):
    with pytest.raises(ValueError, match="stem"):
        ConvStem(**{"embed_dim": 32, **kw})
