"""Models by name for the engine: ``timm.create_model`` with a clear error for a name timm does not know."""
from __future__ import annotations

import difflib
from typing import Optional

import timm
import torch.nn as nn

from .. import models as _models  # noqa: F401 - registers the localmamba models in timm
from .config import ConfigError


def check_model_name(name: str) -> None:
    """Raise :class:`ConfigError` naming the closest registered models when timm has no model ``name``."""
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else \
        "list the localmamba models with timm.list_models('*local*') or timm.list_models('*vim*')"
    raise ConfigError(f"unknown model {name!r}: {hint}")


def create_model(name: str, num_classes: int, *, drop_path: Optional[float] = None,
                 img_size: Optional[int] = None, **kwargs) -> nn.Module:
    """``timm.create_model`` by name; ``drop_path`` and ``img_size`` are passed only when given."""
    check_model_name(name)
    if drop_path is not None:
        kwargs["drop_path_rate"] = drop_path
    if img_size is not None:
        kwargs["img_size"] = img_size
    return timm.create_model(name, num_classes=num_classes, **kwargs)
