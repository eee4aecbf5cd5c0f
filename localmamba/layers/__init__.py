"""Layers: mixers over several scan directions, their merge, blocks and position embeddings.

``layout.py`` names where a mixer's scanned sequences live (chosen once per forward for the device and
backend); ``reference.py`` holds the original per-direction loops of the two mixers, the oracles of the tests
and the baseline of the benchmarks."""
from .blocks import MambaBlock, VSSBlock
from .layout import INTERLEAVED, STACKED, TIME_MAJOR, Layout
from .mamba import MultiDirectionMamba
from .merge import ChannelAttention, DirectionMerge
from .rope import VisionRope
from .ss2d import SS2D
from .stem import ConvStem
from .ssm import DirectionalSSM

__all__ = ["MambaBlock", "VSSBlock", "MultiDirectionMamba", "ChannelAttention",
           "DirectionMerge", "VisionRope", "SS2D", "DirectionalSSM", "ConvStem", "Layout", "STACKED",
           "TIME_MAJOR", "INTERLEAVED"]
