"""LocalVMamba: the hierarchical (VMamba-like) LocalMamba family, registered in timm.

Architecture (equal to the original ``VSSM``): 4x4 patch stem (conv + LayerNorm, channels-last),
four stages of VSS blocks (x + SS2D(LN(x)), no MLP) with patch merging between stages, then
LayerNorm, global average pooling and a linear head. Stem and patch merging are timm's ``PatchEmbed``
and Swin ``PatchMerging``: the same functions and parameter names as the original's (its
``patch_embed.0``/``.2`` are renamed to ``proj``/``norm`` by :func:`checkpoint_filter_fn`).
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch
import torch.nn as nn
from timm.layers import PatchEmbed, to_2tuple
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models.swin_transformer import PatchMerging

from ..layers import SS2D, VSSBlock
from ._common import CIFAR10, RELEASE_URL, SMALL_INPUT, Backbone, build, cfg, init_vit_weights, run_block
from .directions import (CANDIDATES, CIFAR_CANDIDATES, LOCAL_VSSM_CIFAR_DIRECTIONS, LOCAL_VSSM_SMALL_DIRECTIONS,
                         LOCAL_VSSM_TINY_DIRECTIONS, VMAMBA_DIRECTIONS, Directions, resolve_directions)

__all__ = ["LocalVMamba", "checkpoint_filter_fn"]


class Stage(nn.Module):
    grad_checkpointing: bool = False  # set by LocalVMamba.set_grad_checkpointing

    def __init__(self, blocks: list[VSSBlock], downsample: nn.Module):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
        """-> (stage output before downsampling, input of the next stage)."""
        for block in self.blocks:
            x = run_block(block, self.grad_checkpointing, x, backend=backend)
        return x, self.downsample(x)


class LocalVMamba(Backbone):
    """Hierarchical LocalMamba.

    ``directions``: one list of names per block over all stages, a :class:`~localmamba.models.DirectionSpec`
    or the path of a spec file; None (or a None entry) is a search block over ``candidates`` (default: the
    original 8).
    """

    norm_attr = "norm"

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        dims: Sequence[int] = (96, 192, 384, 768),
        depths: Sequence[int] = (2, 2, 9, 2),
        directions: Directions = None,
        candidates: Sequence[str] | None = None,
        d_state: int = 16,
        ssm_ratio: float = 2.0,
        d_conv: int = 3,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        backend: str = "auto",
    ):
        super().__init__()
        if isinstance(dims, int):
            dims = [dims * 2 ** i for i in range(len(depths))]
        dims, depths = list(dims), list(depths)
        if len(dims) != len(depths):
            raise ValueError(f"dims and depths need one entry per stage, got {dims} and {depths}")
        n_blocks = sum(depths)
        directions = resolve_directions(directions, "local_vmamba", n_blocks) or [None] * n_blocks
        self.candidates = tuple(CANDIDATES if candidates is None else candidates)
        cropped = img_size and tuple(s - s % patch_size for s in to_2tuple(img_size))
        if img_size and cropped != to_2tuple(img_size):
            warnings.warn(f"img_size {to_2tuple(img_size)} is not a multiple of patch_size {patch_size}: the stem "
                          f"ignores the last rows and columns, as the original's, and sees {cropped}; pass "
                          f"img_size={cropped[0] if cropped[0] == cropped[1] else cropped} to silence this",
                          stacklevel=2)
        self.num_classes = num_classes
        self.dims = dims
        self.num_features = self.head_hidden_size = dims[-1]
        self.backend = backend
        self.directions = [None if d is None else tuple(d) for d in directions]
        # conv -> channels-last -> LayerNorm; img_size=None: any input size, cropped to a multiple of p as the original
        self.patch_embed = PatchEmbed(img_size=None, patch_size=patch_size, in_chans=in_chans, embed_dim=dims[0],
                                      norm_layer=nn.LayerNorm, output_fmt="NHWC")
        dpr = torch.linspace(0, drop_path_rate, n_blocks).tolist()
        self.layers = nn.ModuleList()
        self.feature_info = []
        b = 0
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            blocks = [VSSBlock(dim, SS2D(dim, self.directions[b + j] or self.candidates, d_state=d_state,
                                         ssm_ratio=ssm_ratio, d_conv=d_conv, search=self.directions[b + j] is None),
                               drop_path=dpr[b + j]) for j in range(depth)]
            b += depth
            # the original PatchMerging2D: odd sizes zero-padded, 2x2 neighbours in its order (x00, x10, x01, x11)
            down = PatchMerging(dim, dims[i + 1]) if i < len(dims) - 1 else nn.Identity()
            self.layers.append(Stage(blocks, down))
            self.feature_info.append(dict(num_chs=dim, reduction=patch_size * 2 ** i, module=f"layers.{i}"))
        self.norm = nn.LayerNorm(dims[-1])
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_vit_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> normalised last-stage map, channels-last (B, h, w, C)."""
        x = self.patch_embed(x)  # (B, H/4, W/4, C0)
        for stage in self.layers:
            _, x = stage(x, backend=self.backend)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(x.mean((1, 2)))  # (B, C)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False):
        """Stage outputs (before downsampling) as NCHW (or NHWC) maps; ``norm`` normalises the last stage's."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError("output_fmt must be 'NCHW' or 'NHWC'")
        take, max_index = feature_take_indices(len(self.layers), indices)
        stages = self.layers[: max_index + 1] if stop_early or intermediates_only else self.layers
        x = self.patch_embed(x)
        maps = []
        for i, stage in enumerate(stages):
            out, x = stage(x, backend=self.backend)
            if i in take:
                if norm and i == len(self.layers) - 1:
                    out = self.norm(out)
                maps.append(out.permute(0, 3, 1, 2).contiguous() if output_fmt == "NCHW" else out)
        if intermediates_only:
            return maps
        return self.norm(x), maps


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: LocalVMamba) -> dict[str, torch.Tensor]:
    """Map an original-format LocalVMamba (``VSSM``) state dict to ours (renames only)."""
    out = {}
    for k, v in state_dict.items():
        k = (k.replace("patch_embed.0.", "patch_embed.proj.").replace("patch_embed.2.", "patch_embed.norm.")
             .replace("classifier.norm.", "norm.").replace("classifier.head.", "head.")
             .replace(".op.multi_scan.attn.", ".op.merge.attn.").replace(".op.multi_scan.weights", ".op.merge.weights"))
        for name in ("x_proj_weight", "dt_projs_weight", "dt_projs_bias", "A_logs", "Ds"):
            k = k.replace(f".op.{name}", f".op.ssm.{name}")
        out[k.replace(".op.", ".mixer.")] = v
    return out


# --- registry ----------------------------------------------------------------------------------------

def _cfg(url: str = "", **kwargs) -> dict:
    """The shared defaults plus the last stage's 7x7 grid at 224 px."""
    return cfg(url, pool_size=(7, 7), **kwargs)


default_cfgs = generate_default_cfgs({
    "local_vssm_tiny": _cfg(),  # the original release says "retraining..."
    "local_vssm_small.in1k": _cfg(RELEASE_URL + "local_vssm_small.ckpt"),
    "local_vssm_tiny_search": _cfg(),
    "local_vssm_small_search": _cfg(),
    "vmamba_tiny": _cfg(),
    "vmamba_small": _cfg(),
    "local_vssm_tiny_cifar": _cfg(**CIFAR10),
    "local_vssm_tiny_cifar_search": _cfg(**CIFAR10),
    "vmamba_tiny_cifar": _cfg(**CIFAR10),
    "test_local_vssm": _cfg(**SMALL_INPUT),
})

def _create_local_vmamba(variant: str, pretrained: bool = False, **kwargs) -> LocalVMamba:
    """Build a LocalVMamba variant; features_only takes the four stages."""
    return build(LocalVMamba, variant, pretrained, checkpoint_filter_fn, (0, 1, 2, 3), **kwargs)


_TINY = dict(dims=(96, 192, 384, 768), depths=(2, 2, 9, 2), drop_path_rate=0.2)
_SMALL = dict(dims=(96, 192, 384, 768), depths=(2, 2, 27, 2), drop_path_rate=0.2)
# the original supernets: a quarter of the width, the depths of T and S
_SEARCH_TINY = dict(dims=(32, 64, 128, 256), depths=(2, 2, 9, 2), drop_path_rate=0.1, directions=None)
_SEARCH_SMALL = dict(dims=(32, 64, 128, 256), depths=(2, 2, 27, 2), drop_path_rate=0.1, directions=None)
# CIFAR (32x32): patch 2 gives 16, 8, 4, 2 grids; w4 and w2 suit them as w7 and w2 suit 56..7
_CIFAR = dict(img_size=32, patch_size=2, num_classes=10, dims=(48, 96, 192, 384), depths=(2, 2, 6, 2),
              drop_path_rate=0.1)


@register_model
def local_vssm_tiny(pretrained: bool = False, **kwargs) -> LocalVMamba:
    """LocalVMamba-T: dims 96-768, depths 2, 2, 9, 2, the original search's directions."""
    model_args = dict(_TINY, directions=LOCAL_VSSM_TINY_DIRECTIONS)
    return _create_local_vmamba("local_vssm_tiny", pretrained, **dict(model_args, **kwargs))


@register_model
def local_vssm_small(pretrained: bool = False, **kwargs) -> LocalVMamba:
    """LocalVMamba-S: dims 96-768, depths 2, 2, 27, 2, the original search's directions."""
    model_args = dict(_SMALL, directions=LOCAL_VSSM_SMALL_DIRECTIONS)
    return _create_local_vmamba("local_vssm_small", pretrained, **dict(model_args, **kwargs))


@register_model
def local_vssm_tiny_search(pretrained: bool = False, **kwargs) -> LocalVMamba:
    """The original LocalVMamba-T supernet: dims 32-256, every block searching the 8 candidates."""
    return _create_local_vmamba("local_vssm_tiny_search", pretrained, **dict(_SEARCH_TINY, **kwargs))


@register_model
def local_vssm_small_search(pretrained: bool = False, **kwargs) -> LocalVMamba:
    """The original LocalVMamba-S supernet: dims 32-256, every block searching the 8 candidates."""
    return _create_local_vmamba("local_vssm_small_search", pretrained, **dict(_SEARCH_SMALL, **kwargs))


@register_model
def vmamba_tiny(pretrained: bool = False, **kwargs) -> LocalVMamba:
    """VMamba-T's twin: LocalVMamba-T with VMamba's four global scans in every block."""
    model_args = dict(_TINY, directions=(VMAMBA_DIRECTIONS,) * 15)
    return _create_local_vmamba("vmamba_tiny", pretrained, **dict(model_args, **kwargs))


@register_model
def vmamba_small(pretrained: bool = False, **kwargs) -> LocalVMamba:
    """VMamba-S's twin: LocalVMamba-S with VMamba's four global scans in every block."""
    model_args = dict(_SMALL, directions=(VMAMBA_DIRECTIONS,) * 33)
    return _create_local_vmamba("vmamba_small", pretrained, **dict(model_args, **kwargs))


@register_model
def local_vssm_tiny_cifar(pretrained: bool = False, **kwargs) -> LocalVMamba:
    """LocalVMamba-T for 32x32 images: patch 2, dims 48-384, depths 2, 2, 6, 2, searched directions (w7 made w4)."""
    model_args = dict(_CIFAR, directions=LOCAL_VSSM_CIFAR_DIRECTIONS)
    return _create_local_vmamba("local_vssm_tiny_cifar", pretrained, **dict(model_args, **kwargs))


@register_model
def local_vssm_tiny_cifar_search(pretrained: bool = False, **kwargs) -> LocalVMamba:
    """The supernet of local_vssm_tiny_cifar: its geometry, every block searching the 8 candidates (w7 made w4)."""
    model_args = dict(_CIFAR, directions=None, candidates=CIFAR_CANDIDATES)
    return _create_local_vmamba("local_vssm_tiny_cifar_search", pretrained, **dict(model_args, **kwargs))


@register_model
def vmamba_tiny_cifar(pretrained: bool = False, **kwargs) -> LocalVMamba:
    """local_vssm_tiny_cifar with VMamba's four global scans in every block."""
    model_args = dict(_CIFAR, directions=(VMAMBA_DIRECTIONS,) * 12)
    return _create_local_vmamba("vmamba_tiny_cifar", pretrained, **dict(model_args, **kwargs))


@register_model
def test_local_vssm(pretrained: bool = False, **kwargs) -> LocalVMamba:
    """A tiny LocalVMamba for tests and CPU demos (timm's ``test_*`` convention)."""
    model_args = dict(patch_size=2, num_classes=10, dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), drop_path_rate=0.1,
                      directions=(("h", "w2"), ("v_flip", "w3"), ("h_flip", "v"), ("w2_flip", "h")))
    return _create_local_vmamba("test_local_vssm", pretrained, **dict(model_args, **kwargs))
