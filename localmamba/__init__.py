"""LocalMamba: visual state space models with windowed selective scan (arXiv 2403.09338).

Importing the package registers its models in timm (``timm.create_model('local_vim_tiny')``).
"""
from . import scan
from .scan import local_reverse, local_scan, scan_order
from . import models  # registers the models in timm

__version__ = "0.1.0"
