"""Models by name for the engine: ``timm.create_model`` with a clear error for a name timm does not know."""
from __future__ import annotations

from typing import Optional

import timm
import torch.nn as nn

from ..models import resolve_model_name  # importing models registers them in timm
from .config import ConfigError


def check_model_name(name: str) -> None:
    """Raise :class:`ConfigError` naming the closest registered models when timm has no model ``name``."""
    try:
        resolve_model_name(name)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def create_model(name: str, num_classes: int, *, drop_path: Optional[float] = None,
                 img_size: Optional[int] = None, **kwargs) -> nn.Module:
    """``timm.create_model`` by name; ``drop_path`` and ``img_size`` are passed only when given."""
    check_model_name(name)
    if drop_path is not None:
        kwargs["drop_path_rate"] = drop_path
    if img_size is not None:
        kwargs["img_size"] = img_size
    return timm.create_model(name, num_classes=num_classes, **kwargs)
