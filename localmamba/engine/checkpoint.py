"""Checkpoint files of the engine: one atomic writer and one reader, for training, resume, evaluation, EMA
(and the search and detection engines built on this one).

- :func:`save_checkpoint` / :func:`write_text_atomic`: write ``PATH.tmp``, flush, then ``os.replace``;
  a reader (or a run killed mid-write) never sees a half-written ``last.pth``, ``metrics.jsonl`` or
  ``summary.json``.
- :func:`load_checkpoint`: ``torch.load(weights_only=True)`` (no arbitrary pickled objects, as
  ``localmamba.models``' reader of released weights), with one :class:`CheckpointError` line for a
  missing, truncated, corrupt or non-PyTorch file.
- An engine checkpoint is a dict with ``format == CHECKPOINT_FORMAT`` (:func:`is_engine_checkpoint`);
  :func:`check_resumable` says in one line why a file cannot be resumed.
- :func:`get_rng_state` / :func:`set_rng_state`: every generator's state as tensors and lists, so a
  checkpoint holding them still loads with ``weights_only=True``.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..models import CheckpointError  # one error for any checkpoint that cannot be read, resumed or loaded
from ..models.checkpoints import check_format  # the file check of the models' reader, shared

CHECKPOINT_FORMAT = "localmamba.train"  # the value older runs wrote; kept so they still resume
CHECKPOINT_VERSION = 1

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "CheckpointError", "CheckpointNotFoundError", "save_checkpoint",
           "load_checkpoint", "write_text_atomic", "write_jsonl", "is_engine_checkpoint", "check_resumable",
           "get_rng_state", "set_rng_state"]


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint path that names no file (a :class:`CheckpointError` and a ``FileNotFoundError``)."""


def _tmp_path(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def save_checkpoint(obj: dict, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path.tmp`` then ``os.replace``: a reader never sees a half-written file."""
    path = Path(path)
    tmp = _tmp_path(path)
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """``path`` holds either its old text or ``text``, never a part of it."""
    path = Path(path)
    tmp = _tmp_path(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    """``rows`` as JSON lines (``metrics.jsonl``), written atomically."""
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> Any:
    """``torch.load(weights_only=True)`` with a one-line :class:`CheckpointError` for a missing, truncated
    or corrupt file, or one that holds Python objects ``weights_only`` refuses (``__cause__`` is then the
    ``pickle.UnpicklingError``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint not found: {path}; check the path (a run writes OUTPUT/last.pth "
                              "and OUTPUT/best.pth)")
    check_format(str(path))  # a text file, an empty or a truncated one: one line before torch.load's internals
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - zip/unpickling errors of every kind
        detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise CheckpointError(
            f"cannot read checkpoint {path} ({path.stat().st_size} bytes): {type(e).__name__}: {detail}. "
            "The file is not a PyTorch checkpoint, is truncated or corrupt, or holds objects weights_only "
            "loading refuses; restore it or use another checkpoint. Nothing was overwritten.") from e


def is_engine_checkpoint(ckpt) -> bool:
    return isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT


def check_resumable(ckpt, path, model: Optional[str] = None) -> None:
    """Raise :class:`CheckpointError` unless ``ckpt`` is an engine checkpoint that can continue a run of
    ``model``."""
    if not is_engine_checkpoint(ckpt):
        raise CheckpointError(f"{path} is not a checkpoint of this engine (no format marker); "
                              "to start from weights only, load them into the model yourself")
    missing = [k for k in ("model", "optimizer", "scheduler", "epoch", "rng") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} lacks {missing}; it cannot be resumed")
    if model is not None and ckpt["config"].get("model") != model:
        raise CheckpointError(f"{path} was trained with model {ckpt['config'].get('model')!r}, "
                              f"not {model!r}")


def get_rng_state() -> dict:
    """Python, numpy, torch and CUDA generator states as lists and tensors (``weights_only``-safe)."""
    version, state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(state), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(s: dict) -> None:
    version, state, gauss = s["python"]
    random.setstate((version, tuple(state), gauss))
    kind, keys, pos, has_gauss, cached = s["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(s["torch"])
    if s.get("cuda") and torch.cuda.is_available() and len(s["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(s["cuda"])
