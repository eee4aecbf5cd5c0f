"""Scan orders: how a 2-D grid of tokens becomes the 1-D sequences a selective scan reads.

A *direction* is a string of the grammar ``h | v | wK``, optionally followed by ``_flip``:

- ``h``: row-major (left to right, top to bottom), the order of ``x.flatten(2)``.
- ``v``: column-major (top to bottom, left to right).
- ``wK`` (any integer K >= 2): the grid is zero-padded at the bottom/right to a multiple of K, cut into
  KxK windows; windows are visited in row-major order and tokens row-major inside each window.
  Padded positions are part of the sequence (they carry zeros), exactly as in the original code.
- ``_flip`` reverses the whole (padded) sequence.

Everything here is an index gather: :func:`scan_order` gives the visiting order once per
(direction, H, W), cached, and scanning is ``index_select`` with it, so it runs on any device and
autograd works through it. :class:`ScanPlan` stacks several directions (padded to a common length)
so that a layer scans and reverses all of its directions with one gather each; their gradients are
gathers too (each token appears once per direction), so no backward needs index_add's atomics.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "ORIGINAL_CANDIDATES", "Direction", "parse_direction", "scan_length", "scan_order", "scan_positions",
    "local_scan", "local_reverse", "local_scan_ref", "local_reverse_ref", "ScanPlan", "scan_plan",
    "multi_scan", "multi_reverse",
]

#: The 8 candidates the paper searches over, in the original code's order.
ORIGINAL_CANDIDATES = ("h", "h_flip", "v", "v_flip", "w2", "w2_flip", "w7", "w7_flip")

_GRAMMAR = re.compile(r"^(h|v|w([0-9]+))(_flip)?$")
_VALID = "'h', 'v' or 'wK' (K >= 2), each optionally followed by '_flip' (e.g. 'w7_flip')"


@dataclass(frozen=True)
class Direction:
    """A parsed direction: ``kind`` is 'h', 'v' or 'w'; ``window`` is K for 'w' (else None)."""

    name: str
    kind: str
    window: int | None
    flip: bool


@lru_cache(maxsize=None)
def parse_direction(direction: str) -> Direction:
    """Parse a direction string; raise ValueError naming the grammar if it is not one."""
    if not isinstance(direction, str):
        raise ValueError(f"direction must be a string, got {type(direction).__name__}: valid are {_VALID}")
    m = _GRAMMAR.match(direction)
    if m is None:
        raise ValueError(f"unknown scan direction {direction!r}: valid are {_VALID}")
    window = int(m.group(2)) if m.group(2) is not None else None
    if window is not None and window < 2:
        raise ValueError(f"window size in {direction!r} must be >= 2: valid are {_VALID}")
    return Direction(direction, m.group(1)[0], window, m.group(3) is not None)


def _check_grid(H: int, W: int) -> tuple[int, int]:
    if int(H) != H or int(W) != W or H < 1 or W < 1:
        raise ValueError(f"grid size must be positive integers, got H={H}, W={W}")
    return int(H), int(W)


def scan_length(direction: str, H: int, W: int) -> int:
    """Length of the scanned sequence: H*W for 'h'/'v', the padded grid's size for 'wK'."""
    d = parse_direction(direction)
    H, W = _check_grid(H, W)
    if d.kind == "w":
        K = d.window
        return math.ceil(H / K) * K * math.ceil(W / K) * K
    return H * W


@lru_cache(maxsize=1024)
def _order(direction: str, H: int, W: int) -> torch.Tensor:
    d = parse_direction(direction)
    grid = torch.arange(H * W).view(H, W)
    if d.kind == "h":
        order = grid.flatten()
    elif d.kind == "v":
        order = grid.t().flatten()
    else:
        K = d.window
        Hg, Wg = math.ceil(H / K), math.ceil(W / K)
        padded = F.pad(grid, (0, Wg * K - W, 0, Hg * K - H), value=-1)  # (Hg*K, Wg*K)
        order = padded.view(Hg, K, Wg, K).permute(0, 2, 1, 3).flatten()
    if d.flip:
        order = order.flip(0)
    return order.contiguous()


def scan_order(direction: str, H: int, W: int) -> torch.Tensor:
    """The visiting order of ``direction`` on an HxW grid.

    Returns a LongTensor of length :func:`scan_length`: entry ``t`` is the row-major index
    (``i * W + j``) of the token visited at step ``t``, or -1 where the step visits padding.
    """
    H, W = _check_grid(H, W)
    return _order(direction, H, W).clone()


@lru_cache(maxsize=1024)
def _inverse(direction: str, H: int, W: int) -> torch.Tensor:
    order = _order(direction, H, W)
    pos = torch.arange(order.numel())
    real = order >= 0
    inv = torch.empty(H * W, dtype=torch.long)
    inv[order[real]] = pos[real]
    return inv


def scan_positions(direction: str, H: int, W: int) -> torch.Tensor:
    """The inverse of :func:`scan_order`: entry ``i * W + j`` is the step at which token (i, j) is
    visited (padding steps counted), a LongTensor of length H*W."""
    H, W = _check_grid(H, W)
    return _inverse(direction, H, W).clone()


_DEVICE_CACHE: dict = {}


def _on(t: torch.Tensor, device: torch.device, key) -> torch.Tensor:
    """Cache the device copy of an index tensor (index building is done once, on the CPU)."""
    if device.type == "cpu":
        return t
    k = (key, str(device))
    out = _DEVICE_CACHE.get(k)
    if out is None:
        out = _DEVICE_CACHE[k] = t.to(device)
    return out


def _flat_input(x: torch.Tensor, H: int | None, W: int | None, what: str) -> tuple[torch.Tensor, int, int]:
    if x.dim() == 4:
        if H is not None and (H, W) != tuple(x.shape[-2:]):
            raise ValueError(f"{what}: x is {tuple(x.shape)} but H, W = {H}, {W}")
        H, W = x.shape[-2:]
        return x.flatten(2), H, W
    if x.dim() == 3:
        if H is None or W is None:
            raise ValueError(f"{what}: x of shape (B, C, L) needs H and W")
        H, W = _check_grid(H, W)
        if x.shape[-1] != H * W:
            raise ValueError(f"{what}: x has {x.shape[-1]} tokens but H*W = {H}*{W} = {H * W}")
        return x, H, W
    raise ValueError(f"{what}: x must be (B, C, H, W) or (B, C, H*W), got shape {tuple(x.shape)}")


def local_scan(x: torch.Tensor, direction: str, H: int | None = None, W: int | None = None) -> torch.Tensor:
    """Scan a grid into a sequence: x (B, C, H, W) or (B, C, H*W) -> (B, C, L_dir).

    Padded positions of 'wK' directions hold zeros.
    """
    x, H, W = _flat_input(x, H, W, "local_scan")
    order = _on(_order(direction, H, W), x.device, ("order", direction, H, W))  # (L_dir,)
    if scan_length(direction, H, W) == H * W:
        return x.index_select(-1, order)  # (B, C, L)
    xp = F.pad(x, (0, 1))  # (B, C, H*W + 1): the last slot is the zero that padding reads
    return xp.index_select(-1, torch.where(order < 0, H * W, order))  # (B, C, L_dir)


def local_reverse(y: torch.Tensor, direction: str, H: int, W: int) -> torch.Tensor:
    """Inverse of :func:`local_scan` on real tokens: y (B, C, L_dir) -> (B, C, H*W) in row-major order."""
    H, W = _check_grid(H, W)
    L = scan_length(direction, H, W)
    if y.dim() != 3 or y.shape[-1] != L:
        raise ValueError(f"local_reverse: y must be (B, C, {L}) for {direction!r} on {H}x{W}, got {tuple(y.shape)}")
    inv = _on(_inverse(direction, H, W), y.device, ("inverse", direction, H, W))  # (H*W,)
    return y.index_select(-1, inv)  # (B, C, H*W)


def local_scan_ref(x: torch.Tensor, direction: str, H: int, W: int) -> torch.Tensor:
    """Plain reshape/permute version of :func:`local_scan` (the original code's formulation), for tests."""
    d = parse_direction(direction)
    B, C = x.shape[:2]
    x = x.reshape(B, C, H, W)
    if d.kind == "h":
        y = x.flatten(2)
    elif d.kind == "v":
        y = x.transpose(-1, -2).flatten(2)
    else:
        K = d.window
        Hg, Wg = math.ceil(H / K), math.ceil(W / K)
        x = F.pad(x, (0, Wg * K - W, 0, Hg * K - H))
        y = x.view(B, C, Hg, K, Wg, K).permute(0, 1, 2, 4, 3, 5).reshape(B, C, -1)
    return y.flip(-1) if d.flip else y


def local_reverse_ref(y: torch.Tensor, direction: str, H: int, W: int) -> torch.Tensor:
    """Plain reshape/permute version of :func:`local_reverse`, for tests."""
    d = parse_direction(direction)
    B, C, _ = y.shape
    if d.flip:
        y = y.flip(-1)
    if d.kind == "h":
        return y
    if d.kind == "v":
        return y.view(B, C, W, H).transpose(-1, -2).reshape(B, C, H * W)
    K = d.window
    Hg, Wg = math.ceil(H / K), math.ceil(W / K)
    y = y.view(B, C, Hg, Wg, K, K).permute(0, 1, 2, 4, 3, 5).reshape(B, C, Hg * K, Wg * K)
    return y[:, :, :H, :W].reshape(B, C, H * W)


@dataclass(frozen=True)
class ScanPlan:
    """Several directions stacked so that one gather scans them all, and one gather reverses them.

    The token sequence has ``T`` entries: the H*W grid in row-major order, plus, if ``cls_position``
    is set, a class token inserted at that index (it is then inserted at the same index of every
    scanned sequence, as the original middle-class-token model does). Scanned sequences are padded
    with zeros at their end to the longest one, ``L``: a causal scan never reads past its end, so
    this padding changes nothing on real positions.

    gather:  (K, L) indices into the T tokens, with T meaning "a zero".
    reverse: (K, T) index of each token in each direction's scanned sequence.
    lengths: the true length of each direction's sequence.
    """

    directions: tuple[str, ...]
    H: int
    W: int
    cls_position: int | None
    gather: torch.Tensor
    reverse: torch.Tensor
    lengths: tuple[int, ...]
    flat_gather: torch.Tensor  # (K*L,) the gather, flattened for one index_select
    flat_reverse: torch.Tensor  # (K*T,) reverse offset by k*L: indices into the flattened (K*L) sequences
    flat_unreverse: torch.Tensor  # (K*L,) gather offset by k*(T+1): indices into K zero-padded token rows
    padded: bool  # some direction reads the zero row T (window padding or unequal lengths)
    # the same three for the interleaved layout (B, L, K, C), position-major: rows l*K + k
    flat_gather_lk: torch.Tensor  # (L*K,) gather transposed: into T+1
    flat_reverse_lk: torch.Tensor  # (K*T,) reverse*K + k: into the L*K interleaved rows
    flat_unreverse_lk: torch.Tensor  # (L*K,) flat_unreverse transposed: into K*(T+1)

    @property
    def K(self) -> int:
        return len(self.directions)

    @property
    def T(self) -> int:
        return self.H * self.W + (self.cls_position is not None)

    @property
    def L(self) -> int:
        return self.gather.shape[1]

    def indices(self, device: torch.device, interleaved: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(flat gather, flat reverse, flat unreverse) on ``device``: gather (K*L,) into T+1, reverse
        (K*T,) into K*L, unreverse (K*L,) into K*(T+1); ``interleaved``: their versions for scanned
        sequences laid out (B, L, K, C) rather than (B, K, L, C)."""
        key = self._key(interleaved)
        device = torch.device(device)
        g, r, u = ((self.flat_gather_lk, self.flat_reverse_lk, self.flat_unreverse_lk) if interleaved else
                   (self.flat_gather, self.flat_reverse, self.flat_unreverse))
        return _on(g, device, key + ("g",)), _on(r, device, key + ("r",)), _on(u, device, key + ("u",))

    def reverse_rows(self, device: torch.device, layout: str = "bklc") -> torch.Tensor:
        """(K, T): the row of the scanned sequences, flattened to (K*L) rows (``layout="blkc"``: (L*K)
        rows, position-major), that holds direction k's token t. Rows past a direction's end or holding
        window padding are never read. :func:`multi_reverse` as an index, for ops that gather it themselves."""
        interleaved = _interleaved(layout)
        flat = self.flat_reverse_lk if interleaved else self.flat_reverse
        return _on(flat.view(self.K, self.T), torch.device(device), self._key(interleaved) + ("rows",))

    def _key(self, interleaved: bool) -> tuple:
        """This plan's key in the device cache: one tensor per plan, layout and device (ops that check an
        index once per tensor rely on getting the same one back)."""
        return ("plan", self.directions, self.H, self.W, self.cls_position, interleaved)


_PLANS: dict = {}  # (directions, H, W, cls_position) as passed -> plan: scan_plan's fast path


@lru_cache(maxsize=256)
def _plan(directions: tuple[str, ...], H: int, W: int, cls_position: int | None) -> ScanPlan:
    N = H * W
    T = N + (cls_position is not None)
    gathers, reverses, lengths = [], [], []
    for d in directions:
        order = _order(d, H, W)
        inv = _inverse(d, H, W)
        if cls_position is not None:
            tok = torch.where(order >= cls_position, order + 1, order)  # patch index -> token index (-1 stays)
            tok = torch.cat([tok[:cls_position], torch.tensor([cls_position]), tok[cls_position:]])
            pos = torch.where(inv >= cls_position, inv + 1, inv)  # sequence position after insertion
            inv = torch.cat([pos[:cls_position], torch.tensor([cls_position]), pos[cls_position:]])
            order = tok
        gathers.append(torch.where(order < 0, T, order))
        reverses.append(inv)
        lengths.append(order.numel())
    L = max(lengths)
    gather = torch.stack([F.pad(g, (0, L - g.numel()), value=T) for g in gathers])  # (K, L)
    reverse = torch.stack(reverses)  # (K, T)
    k = torch.arange(len(directions)).unsqueeze(1)
    flat_reverse = (reverse + k * L).flatten()
    unreverse = gather + k * (T + 1)  # (K, L)
    return ScanPlan(tuple(directions), H, W, cls_position, gather, reverse, tuple(lengths), gather.flatten(),
                    flat_reverse, unreverse.flatten(), bool((gather == T).any()),
                    gather.t().flatten(), (reverse * len(directions) + k).flatten(), unreverse.t().flatten())


def scan_plan(directions: Sequence[str], H: int, W: int, cls_position: int | None = None) -> ScanPlan:
    """Build (once, cached) the stacked gather/reverse indices of ``directions`` on an HxW grid.

    A cached plan is a plain dict lookup, which torch.compile traces without a graph break (building
    one is not: it runs eagerly, once per key)."""
    directions = tuple(directions)
    plan = _PLANS.get((directions, H, W, cls_position))
    if plan is not None:
        return plan
    if not directions:
        raise ValueError(f"need at least one direction: valid are {_VALID}")
    for d in directions:
        parse_direction(d)
    H, W = _check_grid(H, W)
    if cls_position is not None and not 0 <= cls_position <= H * W:
        raise ValueError(f"cls_position must be in [0, {H * W}], got {cls_position}")
    plan = _PLANS[(directions, H, W, cls_position)] = _plan(directions, H, W, cls_position)
    return plan


def _scan(x: torch.Tensor, plan: ScanPlan, interleaved: bool = False) -> torch.Tensor:
    gather = plan.indices(x.device, interleaved)[0]
    xp = F.pad(x, (0, 0, 0, 1)) if plan.padded else x  # (B, T+1, C): row T is the zero that padding reads
    seq = (plan.L, plan.K) if interleaved else (plan.K, plan.L)
    return xp.index_select(1, gather).view(x.shape[0], *seq, x.shape[2])  # (B, L, K, C) or (B, K, L, C)


def _reverse(y: torch.Tensor, plan: ScanPlan, interleaved: bool = False) -> torch.Tensor:
    B, C = y.shape[0], y.shape[3]
    reverse = plan.indices(y.device, interleaved)[1]
    return y.reshape(B, plan.K * plan.L, C).index_select(1, reverse).view(B, plan.K, plan.T, C)  # (B, K, T, C)


def _unreverse(g: torch.Tensor, plan: ScanPlan, interleaved: bool = False) -> torch.Tensor:
    """Adjoint of :func:`_reverse`: token-order rows back to scan positions, zeros on padding."""
    B, K, T, C = g.shape
    unreverse = plan.indices(g.device, interleaved)[2]
    gp = F.pad(g, (0, 0, 0, 1))  # (B, K, T+1, C): row T of each direction is the zero for padding
    seq = (plan.L, K) if interleaved else (K, plan.L)
    return gp.view(B, K * (T + 1), C).index_select(1, unreverse).view(B, *seq, C)  # (B, L, K, C) or (B, K, L, C)


class _Gather(torch.autograd.Function):
    """One of the plan's gathers; its gradient is the adjoint gather: scan <-> reverse summed over
    directions, reverse <-> unreverse. Double backward works, as each backward is a _Gather again."""

    @staticmethod
    def forward(ctx, x, plan, op, interleaved=False):
        ctx.plan, ctx.op, ctx.interleaved = plan, op, interleaved
        return _OPS[op](x, plan, interleaved)

    @staticmethod
    def backward(ctx, g):
        if ctx.op == "scan":
            return _Gather.apply(g, ctx.plan, "reverse", ctx.interleaved).sum(1), None, None, None  # (B, T, C)
        adjoint = "unreverse" if ctx.op == "reverse" else "reverse"
        return _Gather.apply(g, ctx.plan, adjoint, ctx.interleaved), None, None, None


_OPS = {"scan": _scan, "reverse": _reverse, "unreverse": _unreverse}
_LAYOUTS = {"bklc": False, "blkc": True}


def _gather(x: torch.Tensor, plan: ScanPlan, op: str, interleaved: bool) -> torch.Tensor:
    """``_Gather.apply``. A ``torch.jit`` trace cannot record an autograd Function that takes a ScanPlan: the
    FLOP counter (:func:`localmamba.models.flops.traceable`) swaps this for the bare gather ``_OPS[op]``."""
    return _Gather.apply(x, plan, op, interleaved)


def _interleaved(layout: str) -> bool:
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {list(_LAYOUTS)}, got {layout!r}")
    return _LAYOUTS[layout]


def multi_scan(x: torch.Tensor, plan: ScanPlan, layout: str = "bklc") -> torch.Tensor:
    """Scan tokens-last x (B, T, C) in all of the plan's directions, zero-padded: -> (B, K, L, C), or with
    ``layout="blkc"`` (B, L, K, C), the K directions interleaved per position: channels-last (B, L, K*C),
    the layout in which the GPU kernels read every channel of a step at once."""
    if x.dim() != 3 or x.shape[1] != plan.T:
        raise ValueError(f"multi_scan: x must be (B, {plan.T}, C) for this plan, got {tuple(x.shape)}")
    return _gather(x, plan, "scan", _interleaved(layout))


def multi_reverse(y: torch.Tensor, plan: ScanPlan, layout: str = "bklc") -> torch.Tensor:
    """Inverse of :func:`multi_scan`: y (B, K, L, C) (``layout="blkc"``: (B, L, K, C)) -> (B, K, T, C),
    each direction back in token order."""
    interleaved = _interleaved(layout)
    want = (plan.L, plan.K) if interleaved else (plan.K, plan.L)
    if y.dim() != 4 or y.shape[1:3] != want:
        raise ValueError(f"multi_reverse: y must be (B, {want[0]}, {want[1]}, C) for layout {layout!r}, "
                         f"got {tuple(y.shape)}")
    return _gather(y, plan, "reverse", interleaved)
