"""LocalVim: the plain (ViT-like) LocalMamba family, registered in timm.

Architecture (equal to the original ``VisionMamba`` with ``rms_norm``, ``residual_in_fp32``,
``fused_add_norm``, ``final_pool_type='mean'``, ``if_abs_pos_embed``, ``bimamba_type='v2'``):
16x16 patches (timm PatchEmbed, padded on the fly), absolute position embedding, optional class
token in the middle of the sequence, then ``depth`` blocks of Add -> RMSNorm -> MultiDirectionMamba,
with 2-D RoPE applied to the hidden states and the residual before every block (here to their sum: the
same), a final Add -> RMSNorm, mean pooling (or the middle class token) and a linear head.
``stem="conv"`` (ours, for the CIFAR variants) replaces the patch embedding by
:class:`~localmamba.layers.ConvStem`.
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import torch
import torch.nn as nn
from timm.layers import DropPath, PatchEmbed, to_2tuple, trunc_normal_
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from ..layers import ConvStem, MambaBlock, MultiDirectionMamba, VisionRope
from ..layers.rope import resize_grid_embedding
from ._common import CIFAR10, RELEASE_URL, SMALL_INPUT, Backbone, build, cfg, init_vit_weights, run_block
from .directions import (CANDIDATES, CIFAR_CANDIDATES, LOCAL_VIM_CIFAR_DIRECTIONS, LOCAL_VIM_DIRECTIONS,
                         LOCAL_VIM_SMALL_DIRECTIONS, VIM_DIRECTIONS, Directions, resolve_directions)

__all__ = ["LocalVim", "checkpoint_filter_fn"]


class LocalVim(Backbone):
    """Plain LocalMamba model.

    ``directions``: one list of names per layer, a :class:`~localmamba.models.DirectionSpec` or the path
    of a spec file; None (or a None entry) is a search layer over ``candidates`` (default: the original 8).
    """

    norm_attr = "norm_f"

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 192,
        depth: int = 20,
        directions: Directions = None,
        candidates: Sequence[str] | None = None,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        rope: bool = True,
        cls_token: str = "none",
        pt_hw_seq_len: int = 14,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        backend: str = "auto",
        stem: str = "patch",
        stem_depth: int = 1,
    ):
        super().__init__()
        if stem not in ("patch", "conv"):
            raise ValueError(f"stem must be 'patch' (the original's) or 'conv', got {stem!r}")
        if cls_token not in ("none", "middle"):
            raise ValueError(f"cls_token must be 'none' or 'middle', got {cls_token!r}")
        if rope and cls_token != "none":
            raise ValueError("RoPE with a class token is not supported (the original never combines them)")
        directions = resolve_directions(directions, "local_vim", depth) or [None] * depth
        self.candidates = tuple(CANDIDATES if candidates is None else candidates)
        self.num_classes = num_classes
        self.embed_dim = self.num_features = self.head_hidden_size = embed_dim
        self.patch_size = patch_size
        self.backend = backend
        self.directions = [None if d is None else tuple(d) for d in directions]

        if stem == "conv":
            self.patch_embed = ConvStem(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                                        embed_dim=embed_dim, depth=stem_depth)
        else:
            self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                                          embed_dim=embed_dim, strict_img_size=False, dynamic_img_pad=True)
        # the grid the forward really uses: an image size that is not a multiple of the patch is zero-padded
        self.grid_size = tuple(self.patch_embed.dynamic_feat_size(to_2tuple(img_size)))
        padded = tuple(g * patch_size for g in self.grid_size)
        if padded != to_2tuple(img_size):
            warnings.warn(f"img_size {to_2tuple(img_size)} is not a multiple of patch_size {patch_size}: images are "
                          f"zero-padded to {padded}, grid_size {self.grid_size}; pass "
                          f"img_size={padded[0] if padded[0] == padded[1] else padded} to silence this", stacklevel=2)
        n = self.grid_size[0] * self.grid_size[1]
        self.num_prefix_tokens = 1 if cls_token == "middle" else 0
        if cls_token == "middle":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + self.num_prefix_tokens, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        self.rope = VisionRope(embed_dim, self.grid_size, pt_seq_len=pt_hw_seq_len) if rope else None

        dpr = [0.0] + torch.linspace(0, drop_path_rate, depth).tolist()  # the original shifts by one
        self.layers = nn.ModuleList([
            MambaBlock(embed_dim, MultiDirectionMamba(embed_dim, self.directions[i] or self.candidates,
                                                      d_state=d_state, d_conv=d_conv, expand=expand, dt_init="vim",
                                                      search=self.directions[i] is None),
                       drop_path=dpr[i])
            for i in range(depth)
        ])
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.norm_f = nn.RMSNorm(embed_dim, eps=1e-5)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.feature_info = [dict(num_chs=embed_dim, reduction=patch_size, module=f"layers.{i}") for i in range(depth)]
        self._init_weights(depth)

    def _init_weights(self, depth: int) -> None:
        """The original's initialisation: ViT-style for Linear/LayerNorm, then Mamba's rescaled out_proj."""
        for m in self.modules():
            init_vit_weights(m)
        trunc_normal_(self.pos_embed, std=0.02)
        for layer in self.layers:
            w = layer.mixer.out_proj.weight
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            with torch.no_grad():
                w /= math.sqrt(depth)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"} | super().no_weight_decay()

    # --- forward -------------------------------------------------------------------------------
    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], int | None]:
        grid = tuple(self.patch_embed.dynamic_feat_size(x.shape[-2:]))
        x = self.patch_embed(x)  # (B, N, C)
        B, N, C = x.shape
        pos = resize_pos_embed(self.pos_embed, self.grid_size, grid, self.num_prefix_tokens > 0)  # (1, T, C)
        cls_pos = None
        if self.num_prefix_tokens:
            cls_pos = N // 2
            x = torch.cat([x[:, :cls_pos], self.cls_token.expand(B, -1, -1), x[:, cls_pos:]], 1)  # (B, N+1, C)
        return self.pos_drop(x + pos), grid, cls_pos

    def _blocks(self, x: torch.Tensor, grid: tuple[int, int], cls_pos: int | None, take: set[int] | None = None,
                stop: int | None = None):
        """Run the blocks; returns (hidden, residual, {layer index: residual stream after it})."""
        rope = self.rope.tables(grid) if self.rope is not None else None
        hidden, residual, taken = x, None, {}
        for i, layer in enumerate(self.layers[:stop]):
            hidden, residual = run_block(layer, self.grad_checkpointing, hidden, residual, grid, cls_position=cls_pos,
                                         backend=self.backend, rope=rope)
            if take is not None and i in take:
                taken[i] = residual + hidden.float()
        return hidden, residual, taken

    def _final_norm(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.norm_f(residual + self.drop_path(hidden).float()).to(hidden.dtype)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> normalised tokens (B, T, C) (T includes the class token, if any)."""
        x, grid, cls_pos = self._embed(x)
        hidden, residual, _ = self._blocks(x, grid, cls_pos)
        return self._final_norm(hidden, residual)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, (x.shape[1] - 1) // 2] if self.num_prefix_tokens else x.mean(1)  # middle class token, or mean (B, C)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False):
        """Residual stream after chosen layers, as (B, C, H, W) maps of the patch tokens (or NLC).

        ``indices``: an int n takes the last n layers, a list takes those layers. ``norm`` applies
        the final RMSNorm to each map.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError("output_fmt must be 'NCHW' or 'NLC'")
        take, max_index = feature_take_indices(len(self.layers), indices)
        B = x.shape[0]
        x, grid, cls_pos = self._embed(x)
        hidden, residual, taken = self._blocks(x, grid, cls_pos, take=set(take),
                                               stop=max_index + 1 if stop_early or intermediates_only else None)
        maps = []
        for i in take:
            t = taken[i]
            if norm:
                t = self.norm_f(t)
            t = t.to(hidden.dtype)
            if cls_pos is not None:
                t = torch.cat([t[:, :cls_pos], t[:, cls_pos + 1:]], 1)
            maps.append(t if output_fmt == "NLC" else t.transpose(1, 2).reshape(B, -1, *grid))
        if intermediates_only:
            return maps
        return self._final_norm(hidden, residual), maps

    # --- accounting -------------------------------------------------------------------------------
    def flops(self, img_size: tuple[int, int] = (224, 224), paper: bool = True) -> int:
        """Multiply-accumulates at ``img_size``, counted as the original ``VisionMamba.flops()`` does.

        The paper's count (``paper=True``) charges each layer's conv1d, x_proj and dt_proj once, although
        every direction has its own, and each direction's selective scan as 5*L*D*N + 2*L*D;
        ``paper=False`` charges them per direction, i.e. what the model actually computes.
        """
        gh, gw = self.patch_embed.dynamic_feat_size(img_size)
        p = self.patch_size
        L = gh * gw
        if isinstance(self.patch_embed, ConvStem):
            flops = self.patch_embed.flops(img_size)
        else:
            flops = 3 * p * p * self.embed_dim * L  # patch embedding conv
        L += self.num_prefix_tokens
        for layer in self.layers:
            m = layer.mixer
            K, D, N, R, C = len(m.directions), m.d_inner, m.ssm.d_state, m.dt_rank, m.d_model
            per_dir = (L + m.d_conv - 1) * D * m.d_conv + L * D * (R + 2 * N) + L * R * D
            flops += L * C * 2 * D  # in_proj
            flops += per_dir * (1 if paper else K)
            flops += K * (5 * L * D * N + 2 * L * D)  # selective scans
            flops += 2 * D * int(D * 0.125)  # channel attention
            flops += L * D * C + L * C  # out_proj, norm
        return flops + self.embed_dim * (1000 if paper else max(self.num_classes, 0))


def resize_pos_embed(pe: torch.Tensor, old: tuple[int, int], new: tuple[int, int], middle_cls: bool) -> torch.Tensor:
    """Resize (1, T, C) position embeddings from an ``old`` to a ``new`` grid (bicubic); with a middle
    class token, its entry moves from the middle of the old sequence to the middle of the new one."""
    if tuple(old) == tuple(new):
        return pe
    if not middle_cls:
        return resize_grid_embedding(pe, old, new)
    c = old[0] * old[1] // 2
    grid = resize_grid_embedding(torch.cat([pe[:, :c], pe[:, c + 1:]], 1), old, new)  # (1, N', C)
    m = grid.shape[1] // 2
    return torch.cat([grid[:, :m], pe[:, c:c + 1], grid[:, m:]], 1)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: LocalVim) -> dict[str, torch.Tensor]:
    """Map an original-format LocalVim state dict (per-direction ``A_log_{k}``, ``conv1d_{k}``...) to ours.

    Our layers stack the K directions (``mixer.conv1d``, ``mixer.ssm.A_logs``...), so the K
    per-direction tensors of each layer are concatenated in direction order. Position embedding and
    RoPE tables are resized when the model's grid differs from the checkpoint's.
    """
    sd = dict(state_dict)
    if any(".mixer.ssm." in k for k in sd):  # already ours
        out = sd
    else:
        out = {}
        depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("layers."))
        for i in range(depth):
            pre = f"layers.{i}.mixer."
            K = sum(1 for k in sd if k.startswith(pre + "A_log_"))

            def cat(name: str, dim: int = 0, stack: bool = False) -> torch.Tensor:
                ts = [sd.pop(pre + name.format(k)) for k in range(K)]
                return torch.stack(ts, dim) if stack else torch.cat(ts, dim)

            out[pre + "ssm.A_logs"] = cat("A_log_{}")
            out[pre + "ssm.Ds"] = cat("D_{}")
            out[pre + "conv1d.weight"] = cat("conv1d_{}.weight")
            out[pre + "conv1d.bias"] = cat("conv1d_{}.bias")
            out[pre + "ssm.x_proj_weight"] = cat("x_proj_{}.weight", stack=True)
            out[pre + "ssm.dt_projs_weight"] = cat("dt_proj_{}.weight", stack=True)
            out[pre + "ssm.dt_projs_bias"] = cat("dt_proj_{}.bias", stack=True)
        for k, v in sd.items():
            k = k.replace(".mixer.attn.", ".mixer.merge.attn.").replace(".mixer.multi_scan.weights", ".mixer.merge.weights")
            out[k] = v
    # resize position tables to the model's grid
    if "pos_embed" in out and out["pos_embed"].shape != model.pos_embed.shape:
        pe = out["pos_embed"]
        n_old = pe.shape[1] - model.num_prefix_tokens
        side = math.isqrt(n_old)
        if side * side != n_old:
            raise ValueError(f"cannot resize a non-square pos_embed of {n_old} tokens")
        out["pos_embed"] = resize_pos_embed(pe, (side, side), model.grid_size, model.num_prefix_tokens > 0)
    if model.rope is not None:
        for name in ("rope.freqs_cos", "rope.freqs_sin"):
            if name in out and out[name].shape != getattr(model.rope, name.split(".")[1]).shape:
                n_old = out[name].shape[0]
                s = math.isqrt(n_old)
                out[name] = resize_grid_embedding(out[name], (s, s), model.grid_size)
    return out


# --- registry ----------------------------------------------------------------------------------------

default_cfgs = generate_default_cfgs({
    "local_vim_tiny.in1k": cfg(RELEASE_URL + "local_vim_tiny.ckpt"),
    "local_vim_tiny_middle_cls_token.in1k": cfg(RELEASE_URL + "local_vim_tiny_middle_cls_token.ckpt"),
    # The original README links LocalVim-S to local_vssm_small.ckpt, a LocalVMamba-S file: no URL here.
    "local_vim_small.in1k": cfg(),
    "local_vim_tiny_search": cfg(),
    "vim_tiny": cfg(),
    "vim_small": cfg(),
    "local_vim_tiny_cifar": cfg(**CIFAR10, first_conv="patch_embed.convs.0"),
    "local_vim_tiny_cifar_search": cfg(**CIFAR10, first_conv="patch_embed.convs.0"),
    "test_local_vim": cfg(**SMALL_INPUT),
    "vim_tiny_cifar": cfg(**CIFAR10, first_conv="patch_embed.convs.0"),
})

def _create_local_vim(variant: str, pretrained: bool = False, **kwargs) -> LocalVim:
    """Build a LocalVim variant; features_only takes four evenly spaced layers ((4, 9, 14, 19) at depth 20,
    as the original detection backbone)."""
    depth = kwargs.get("depth", 20)
    out_indices = sorted({max(0, round(depth * k / 4) - 1) for k in (1, 2, 3, 4)})
    return build(LocalVim, variant, pretrained, checkpoint_filter_fn, out_indices, **kwargs)


@register_model
def local_vim_tiny(pretrained: bool = False, **kwargs) -> LocalVim:
    """LocalVim-T: width 192, 20 layers, the original search's directions."""
    model_args = dict(embed_dim=192, depth=20, directions=LOCAL_VIM_DIRECTIONS)
    return _create_local_vim("local_vim_tiny", pretrained, **dict(model_args, **kwargs))


@register_model
def local_vim_tiny_middle_cls_token(pretrained: bool = False, **kwargs) -> LocalVim:
    """LocalVim-T with a class token in the middle of the sequence and no RoPE (the original's 77.8% model)."""
    model_args = dict(embed_dim=192, depth=20, directions=LOCAL_VIM_DIRECTIONS, rope=False, cls_token="middle")
    return _create_local_vim("local_vim_tiny_middle_cls_token", pretrained, **dict(model_args, **kwargs))


@register_model
def local_vim_small(pretrained: bool = False, **kwargs) -> LocalVim:
    """LocalVim-S: width 384, 20 layers, the directions the original registry ends up with."""
    model_args = dict(embed_dim=384, depth=20, directions=LOCAL_VIM_SMALL_DIRECTIONS)
    return _create_local_vim("local_vim_small", pretrained, **dict(model_args, **kwargs))


@register_model
def local_vim_tiny_search(pretrained: bool = False, **kwargs) -> LocalVim:
    """The original LocalVim supernet: width 128, 20 layers, each searching the 8 candidates."""
    model_args = dict(embed_dim=128, depth=20, directions=None)
    return _create_local_vim("local_vim_tiny_search", pretrained, **dict(model_args, **kwargs))


@register_model
def vim_tiny(pretrained: bool = False, **kwargs) -> LocalVim:
    """Vim-T's twin: LocalVim-T with Vim's two global scans in every layer."""
    model_args = dict(embed_dim=192, depth=20, directions=(VIM_DIRECTIONS,) * 20)
    return _create_local_vim("vim_tiny", pretrained, **dict(model_args, **kwargs))


@register_model
def vim_small(pretrained: bool = False, **kwargs) -> LocalVim:
    """Vim-S's twin: LocalVim-S with Vim's two global scans in every layer."""
    model_args = dict(embed_dim=384, depth=20, directions=(VIM_DIRECTIONS,) * 20)
    return _create_local_vim("vim_small", pretrained, **dict(model_args, **kwargs))


# CIFAR: a conv stem to an 8x8 token grid (see layers.stem), 12 layers, the first 12 searched direction
# sets with 4x4 windows in place of 7x7; the Vim-style twin differs in its directions alone
_CIFAR = dict(img_size=32, patch_size=4, stem="conv", embed_dim=192, depth=12, num_classes=10, pt_hw_seq_len=8)


@register_model
def local_vim_tiny_cifar(pretrained: bool = False, **kwargs) -> LocalVim:
    """LocalVim-T for 32x32 images: conv stem, 12 layers, the searched directions with w7 made w4."""
    model_args = dict(_CIFAR, directions=LOCAL_VIM_CIFAR_DIRECTIONS)
    return _create_local_vim("local_vim_tiny_cifar", pretrained, **dict(model_args, **kwargs))


@register_model
def local_vim_tiny_cifar_search(pretrained: bool = False, **kwargs) -> LocalVim:
    """The supernet of local_vim_tiny_cifar: its geometry, every layer searching the 8 candidates (w7 made w4)."""
    model_args = dict(_CIFAR, directions=None, candidates=CIFAR_CANDIDATES)
    return _create_local_vim("local_vim_tiny_cifar_search", pretrained, **dict(model_args, **kwargs))


@register_model
def vim_tiny_cifar(pretrained: bool = False, **kwargs) -> LocalVim:
    """local_vim_tiny_cifar with Vim's two global scans in every layer."""
    model_args = dict(_CIFAR, directions=(VIM_DIRECTIONS,) * 12)
    return _create_local_vim("vim_tiny_cifar", pretrained, **dict(model_args, **kwargs))


@register_model
def test_local_vim(pretrained: bool = False, **kwargs) -> LocalVim:
    """A tiny LocalVim for tests and CPU demos (timm's ``test_*`` convention)."""
    model_args = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_classes=10, pt_hw_seq_len=4,
                      directions=(("h", "v_flip", "w2", "w3_flip"), ("h", "h_flip", "v", "w2")))
    return _create_local_vim("test_local_vim", pretrained, **dict(model_args, **kwargs))
