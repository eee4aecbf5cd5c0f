"""LocalMamba classifiers as torchvision detection backbones: a dict of NCHW maps plus ``out_channels``.

Both wrappers take the classifier through its timm interface (``forward_intermediates``) and drop its
head, so a classification checkpoint loads into ``.body`` unchanged.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn as nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

__all__ = ["LayerNorm2d", "VMambaFPN", "SimpleFeaturePyramid"]


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (ViTDet's, between its deconvolutions)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, C, H, W)


class VMambaFPN(nn.Module):
    """LocalVMamba's four stages (strides 4, 8, 16, 32) through an FPN: five 256-channel levels.

    As the original's mmdetection wrapper, each stage output (taken before its downsampling) gets its
    own LayerNorm (``outnorm{i}``); the FPN adds a max-pooled stride-64 level ("pool") for the RPN.
    """

    def __init__(self, body: nn.Module, out_channels: int = 256):
        super().__init__()
        if not hasattr(body, "dims"):
            raise TypeError(f"VMambaFPN needs a LocalVMamba body (with .dims), got {type(body).__name__}")
        body.prune_intermediate_layers(len(body.layers), prune_norm=True, prune_head=True)
        self.body = body
        dims = list(body.dims)
        self.outnorms = nn.ModuleList(nn.LayerNorm(d) for d in dims)  # named outnorm{i} in the original
        self.fpn = FeaturePyramidNetwork(dims, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels
        self.strides = [body.feature_info[i]["reduction"] for i in range(len(dims))]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The normalised stage maps, NCHW, before the FPN."""
        maps = self.body.forward_intermediates(x, output_fmt="NHWC", intermediates_only=True)  # [(B, h, w, C_i)]
        return [n(m).permute(0, 3, 1, 2).contiguous() for n, m in zip(self.outnorms, maps)]  # [(B, C_i, h, w)]

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        feats = OrderedDict((str(i), f) for i, f in enumerate(self.features(x)))
        return self.fpn(feats)  # "0".."3" at strides 4..32, "pool" at 64


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid over LocalVim's last stride-16 map.

    Scales 4.0 (two 2x deconvolutions with LayerNorm2d + GELU between), 2.0 (one deconvolution),
    1.0 (identity) and 0.5 (2x2 max-pool), each followed by a 1x1 and a 3x3 conv with LayerNorm2d,
    plus a max-pooled stride-64 level. LocalVim resizes its position embedding and RoPE tables to
    every input grid, so any (non-square) padded image size works.

    Differences from the original: its config is named "cascade" but builds a plain Mask R-CNN on
    mmdetection, with a 2-conv RPN head, a 4-conv + 1-FC box head and LayerNorm2d in the box and mask
    heads; here the same pyramid feeds torchvision's Mask R-CNN (same anchors and RoIAlign levels,
    a 1-conv RPN head, a 2-FC box head, a 4-conv mask head, no norms in the heads).
    """

    def __init__(self, body: nn.Module, out_channels: int = 256, scales: Sequence[float] = (4.0, 2.0, 1.0, 0.5)):
        super().__init__()
        if not hasattr(body, "embed_dim"):
            raise TypeError(f"SimpleFeaturePyramid needs a LocalVim body (with .embed_dim), got {type(body).__name__}")
        if body.patch_size != 16:
            raise ValueError(f"the simple pyramid expects stride-16 tokens, got patch size {body.patch_size}")
        body.prune_intermediate_layers(1, prune_norm=True, prune_head=True)  # norm_f unused
        self.body = body
        C = body.embed_dim
        self.outnorm = LayerNorm2d(C)
        self.stages = nn.ModuleList()
        for s in scales:
            if s == 4.0:
                up = [nn.ConvTranspose2d(C, C // 2, 2, 2), LayerNorm2d(C // 2), nn.GELU(),
                      nn.ConvTranspose2d(C // 2, C // 4, 2, 2)]
                c = C // 4
            elif s == 2.0:
                up, c = [nn.ConvTranspose2d(C, C // 2, 2, 2)], C // 2
            elif s == 1.0:
                up, c = [], C
            elif s == 0.5:
                up, c = [nn.MaxPool2d(2, 2)], C
            else:
                raise ValueError(f"unsupported pyramid scale {s}: choose from 4.0, 2.0, 1.0, 0.5")
            self.stages.append(nn.Sequential(
                *up,
                nn.Conv2d(c, out_channels, 1, bias=False), LayerNorm2d(out_channels),
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), LayerNorm2d(out_channels)))
        self.top = LastLevelMaxPool()
        self.out_channels = out_channels
        self.strides = [int(16 / s) for s in scales]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The normalised stride-16 map of the last layer, NCHW, as a one-item list."""
        (m,) = self.body.forward_intermediates(x, indices=[len(self.body.layers) - 1], intermediates_only=True)
        return [self.outnorm(m)]  # [(B, C, H/16, W/16)]

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        (m,) = self.features(x)
        outs = [stage(m) for stage in self.stages]
        names = [str(i) for i in range(len(outs))]
        outs, names = self.top(outs, [m], names)  # appends "pool" (stride 64)
        return OrderedDict(zip(names, outs))
