"""A convolutional stem: the patch embedding of the small-image (CIFAR) variants.

A patchify stem (one stride-P convolution) gives a token no view of its neighbours, and on 32x32
images such models need hundreds of epochs; a few 3x3 convolutions before the tokens (Xiao et al.,
"Early convolutions help transformers see better", 2021) make them train in tens. The stem is a
drop-in for timm's ``PatchEmbed`` as the models use it (``grid_size``, ``dynamic_feat_size``, output
``(B, N, C)``, inputs of any size padded at the bottom and right to a multiple of the stride).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvStem(nn.Module):
    """3x3 conv (stride 1), log2(P) 3x3 convs of stride 2 (channels doubling up to ``embed_dim``),
    each with BatchNorm and GELU, then a 1x1 projection: a (P x P)-strided embedding. ``depth`` > 1
    follows each of them with ``depth - 1`` more 3x3 convs of stride 1 (a VGG-like stage)."""

    def __init__(self, img_size: int | tuple[int, int] = 32, patch_size: int = 4, in_chans: int = 3,
                 embed_dim: int = 192, depth: int = 1):
        super().__init__()
        if depth < 1:
            raise ValueError(f"stem depth must be at least 1, got {depth}")
        steps = int(math.log2(patch_size)) if patch_size > 0 else -1
        if steps < 1 or 2 ** steps != patch_size:
            raise ValueError(f"the conv stem needs a power-of-two stride of at least 2, got patch_size={patch_size}")
        if embed_dim % 2 ** steps:
            raise ValueError(f"the conv stem halves embed_dim {embed_dim} log2(patch_size) = {steps} times: "
                             f"it must be divisible by {2 ** steps}")
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.patch_size = (patch_size, patch_size)
        self.img_size = img_size
        self.grid_size = tuple(math.ceil(s / patch_size) for s in img_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        chans = [embed_dim // 2 ** (steps - i) for i in range(steps + 1)]  # e.g. P=4, C=192: 48, 96, 192
        layers, c_in = [], in_chans
        for i, c in enumerate(chans):
            for j in range(depth):
                layers += [nn.Conv2d(c_in, c, 3, stride=2 if i > 0 and j == 0 else 1, padding=1, bias=False),
                           nn.BatchNorm2d(c), nn.GELU()]
                c_in = c
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Conv2d(embed_dim, embed_dim, 1)

    def dynamic_feat_size(self, img_size: tuple[int, int]) -> tuple[int, int]:
        return tuple(math.ceil(s / self.patch_size[0]) for s in img_size)

    def flops(self, img_size: tuple[int, int]) -> int:
        """Multiply-accumulates of the convolutions at ``img_size`` (BatchNorm and GELU not counted)."""
        H, W = (math.ceil(s / self.patch_size[0]) * self.patch_size[0] for s in img_size)
        macs = 0
        for conv in [m for m in self.convs if isinstance(m, nn.Conv2d)] + [self.proj]:
            H, W = (H - 1) // conv.stride[0] + 1, (W - 1) // conv.stride[1] + 1
            macs += H * W * conv.weight.numel()
        return macs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size[0]
        H, W = x.shape[-2:]
        x = F.pad(x, (0, -W % p, 0, -H % p))  # (B, 3, H', W'), multiples of p
        x = self.proj(self.convs(x))  # (B, C, H'/p, W'/p)
        return x.flatten(2).transpose(1, 2)  # (B, N, C)
