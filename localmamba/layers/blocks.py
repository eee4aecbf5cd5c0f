"""Residual blocks around the mixers (LocalVMamba's patch merging is timm's Swin ``PatchMerging``)."""
from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import DropPath

from .mamba import MultiDirectionMamba
from .rope import VisionRope
from .ss2d import SS2D

__all__ = ["MambaBlock", "VSSBlock"]


class MambaBlock(nn.Module):
    """Vim's block: Add -> RMSNorm -> mixer, returning (mixer output, residual).

    The residual stream is kept in fp32 (``residual_in_fp32``) and the add is folded into the
    next block's norm, as mamba-ssm's fused add+norm does; this is the same arithmetic, unfused.
    ``rope`` (cos, sin): the rotary position embedding, applied to the sum. The original rotates the
    hidden states and the residual apart before the add: the same (the rotation is linear and drop
    path scales whole samples), in half the work.
    """

    def __init__(self, dim: int, mixer: MultiDirectionMamba, drop_path: float = 0.0, eps: float = 1e-5):
        super().__init__()
        self.mixer = mixer
        self.norm = nn.RMSNorm(dim, eps=eps)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor | None, grid_size: tuple[int, int],
                cls_position: int | None = None, backend: str = "auto",
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        residual = hidden.float() if residual is None else residual + self.drop_path(hidden).float()  # (B, T, C)
        if rope is not None:
            residual = VisionRope.apply(residual, *rope)  # (B, T, C)
        hidden = self.norm(residual).to(hidden.dtype)  # (B, T, C)
        return self.mixer(hidden, grid_size, cls_position=cls_position, backend=backend), residual


class VSSBlock(nn.Module):
    """x + drop_path(SS2D(LN(x))), channels-last (B, H, W, C). No MLP: the LocalVMamba recipe."""

    def __init__(self, dim: int, mixer: SS2D, drop_path: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mixer = mixer  # named as in MambaBlock; the original (and this project before) called it ``op``
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self._register_load_state_dict_pre_hook(_rename_op_keys)

    def forward(self, x: torch.Tensor, backend: str = "auto") -> torch.Tensor:
        return x + self.drop_path(self.mixer(self.norm(x), backend=backend))


def _rename_op_keys(state_dict: dict, prefix: str, *args) -> None:
    """State dicts that name the mixer ``op`` (the original's and this project's earlier checkpoints) load."""
    for k in [k for k in state_dict if k.startswith(prefix + "op.")]:
        state_dict[prefix + "mixer." + k[len(prefix) + 3:]] = state_dict.pop(k)
