"""2-D rotary position embedding of LocalVim (EVA-02's ``VisionRotaryEmbeddingFast``)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers.pos_embed_sincos import rot  # (x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...): pairs by 90 degrees

__all__ = ["VisionRope", "resize_grid_embedding"]


def resize_grid_embedding(emb: torch.Tensor, old_size: tuple[int, int], new_size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of a per-token table (..., H*W, C) laid out row-major on an HxW grid."""
    if tuple(old_size) == tuple(new_size):
        return emb
    lead = emb.shape[:-2]
    C = emb.shape[-1]
    grid = emb.reshape(-1, *old_size, C).permute(0, 3, 1, 2).float()  # (N, C, H, W)
    grid = F.interpolate(grid, size=tuple(new_size), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(*lead, new_size[0] * new_size[1], C).to(emb.dtype)


class VisionRope(nn.Module):
    """Rotary embedding over the token grid: half of the channels rotate with the row, half with the column.

    Frequencies follow the original: ``dim`` = embed_dim // 2 per axis, positions t = arange(ft) / ft * pt
    (``pt_seq_len`` = 14, the 224/16 grid the frequencies were designed for). The tables are
    buffers saved in checkpoints (``rope.freqs_cos``/``rope.freqs_sin``), so loading them reproduces a
    trained model exactly; other grid sizes use a bicubic resize of the tables.
    """

    def __init__(self, embed_dim: int, grid_size: tuple[int, int], pt_seq_len: int = 14, theta: float = 10000.0):
        super().__init__()
        dim = embed_dim // 2
        self.grid_size = tuple(grid_size)
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))  # (dim/2,)
        ft = grid_size[0]
        t = torch.arange(ft) / ft * pt_seq_len
        f = torch.einsum("t,f->tf", t, freqs).repeat_interleave(2, -1)  # (ft, dim)
        f = torch.cat([f[:, None, :].expand(ft, ft, dim), f[None, :, :].expand(ft, ft, dim)], -1)  # (ft, ft, 2*dim)
        if grid_size[1] != ft:  # the original only builds square tables; resize to rectangles
            f = resize_grid_embedding(f.reshape(1, ft * ft, -1), (ft, ft), tuple(grid_size))[0]
        self.register_buffer("freqs_cos", f.reshape(-1, f.shape[-1]).cos())
        self.register_buffer("freqs_sin", f.reshape(-1, f.shape[-1]).sin())

    def tables(self, grid_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each (H*W, C), for a grid of ``grid_size``."""
        return (resize_grid_embedding(self.freqs_cos, self.grid_size, grid_size),
                resize_grid_embedding(self.freqs_sin, self.grid_size, grid_size))

    @staticmethod
    def apply(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x (B, H*W, C) -> x rotated in place of its grid position."""
        return x * cos + rot(x) * sin
