"""Layers: mixers over several scan directions, their merge, blocks and position embeddings."""
from .blocks import MambaBlock, VSSBlock
from .mamba import MultiDirectionMamba
from .merge import ChannelAttention, DirectionMerge
from .rope import VisionRope
from .ss2d import SS2D
from .stem import ConvStem
from .ssm import DirectionalSSM

__all__ = ["MambaBlock", "VSSBlock", "MultiDirectionMamba", "ChannelAttention",
           "DirectionMerge", "VisionRope", "SS2D", "DirectionalSSM", "ConvStem"]
