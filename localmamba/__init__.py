"""LocalMamba: visual state space models with windowed selective scan (arXiv 2403.09338).

Importing the package registers its models in timm (``timm.create_model('local_vim_tiny')``).
"""
from . import models, ops, scan  # importing models registers them in timm
from .ops import selective_scan, selective_scan_ref
from .scan import local_reverse, local_scan, scan_order

__version__ = "0.1.0"
__all__ = ["models", "ops", "scan", "selective_scan", "selective_scan_ref", "local_scan", "local_reverse",
           "scan_order"]
