"""Checkpoints: reading them safely, saying what a checkpoint that does not fit actually is, and loading
released (or given) weights into a registered model. Registration itself lives in the family modules.
"""
from __future__ import annotations

import functools
import os
import pickle
import re
import zipfile
from typing import Callable

import torch
import torch.nn as nn

__all__ = ["CheckpointError", "read_state_dict", "describe_state_dict", "load_pretrained", "model_from_arch",
           "known_archs", "check_format"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or does not fit the model it was loaded into."""


def check_format(path: str) -> None:
    """Refuse, with one clear line, a file that is not torch.save's output at all (a text file, an image, a
    truncated download) before torch.load turns it into an internal error from its unpickler or zip reader."""
    with open(path, "rb") as f:
        head = f.read(4)
    if zipfile.is_zipfile(path) or head[:1] == b"\x80":  # torch.save's zip format, or the legacy pickle format
        return
    if not head:
        raise CheckpointError(f"{path} is empty, not a PyTorch checkpoint (an interrupted download or copy?)")
    if head.startswith(b"PK"):
        raise CheckpointError(f"{path} is a truncated or corrupt PyTorch checkpoint (its zip archive has no "
                              f"directory): download or copy it again")
    raise CheckpointError(f"{path} is not a PyTorch checkpoint (neither torch.save's zip format nor a pickle; "
                          f"it starts with {head!r}): pass the .pth/.ckpt file written by torch.save")


def read_state_dict(path: str | os.PathLike, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a checkpoint file and return its state dict (``{'model': ...}``, ``{'state_dict': ...}`` or flat).

    Checkpoints from the web are untrusted: they are loaded with ``weights_only=True``, which refuses
    arbitrary pickled objects. ``trust_pickle=True`` lifts that for files you trust.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file not found: {path}")
    check_format(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as e:
        if not trust_pickle and "Weights only load failed" in str(e):
            raise CheckpointError(
                f"{path} contains Python objects other than tensors, which torch.load(weights_only=True) refuses "
                f"to unpickle because unpickling can run arbitrary code. If you trust this file, pass "
                f"trust_pickle=True (e.g. timm.create_model(..., trust_pickle=True)). Detail: {e}") from e
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {e}") from e
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, IndexError) as e:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): "
                              f"{type(e).__name__}: {str(e)[:200]}") from e
    if isinstance(ckpt, dict):
        for key in ("model", "state_dict", "model_ema", "module"):
            if key in ckpt and isinstance(ckpt[key], dict):
                ckpt = ckpt[key]
                break
    if not isinstance(ckpt, dict) or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return {k[7:] if k.startswith("module.") else k: v for k, v in ckpt.items()}


@functools.cache
def known_archs() -> dict[str, dict]:
    """name -> architecture summary of every registered model, inferred from its own state dict, so that an
    error can say which registered model a foreign checkpoint looks like (the first call builds each
    registered model once: a few seconds, on an error path only)."""
    import timm

    out = {}
    for name in timm.list_models(module=["local_vim", "local_vmamba"]):
        with torch.random.fork_rng():
            out[name] = _infer_arch(timm.create_model(name).state_dict())
    return out


def describe_state_dict(sd: dict[str, torch.Tensor]) -> str:
    """A short description of the architecture a state dict (original or ours) belongs to."""
    arch = _infer_arch(sd)
    if arch is None:
        return "an unknown architecture (neither LocalVim nor LocalVMamba keys)"
    names = [n for n, a in known_archs().items() if a == arch]
    family = "LocalVim" if arch["family"] == "local_vim" else "LocalVMamba"
    sizes = ", ".join(f"{k} {v}" for k, v in arch.items() if k != "family")
    if names:
        return f"{' / '.join(names)} ({family}: {sizes})"
    return f"an unregistered {family} ({sizes})"


def _infer_arch(sd: dict[str, torch.Tensor]) -> dict | None:
    layer_ids = {int(m.group(1)) for k in sd if (m := re.match(r"layers\.(\d+)\.mixer\.", k))}
    if layer_ids:
        return dict(family="local_vim", embed_dim=int(sd["patch_embed.proj.weight"].shape[0]),
                    depth=max(layer_ids) + 1, directions=_num_directions(sd, "layers.0.mixer."),
                    search=any(k.endswith(("multi_scan.weights", "merge.weights")) for k in sd),
                    cls_token="cls_token" in sd, stem=_stem(sd))
    blocks = {(int(m.group(1)), int(m.group(2))) for k in sd if (m := re.match(r"layers\.(\d+)\.blocks\.(\d+)\.", k))}
    if blocks:
        stages = max(s for s, _ in blocks) + 1
        depths = [1 + max(b for s2, b in blocks if s2 == s) for s in range(stages)]
        dims = []
        for s in range(stages):
            w = sd.get(f"layers.{s}.blocks.0.norm.weight")
            dims.append(int(w.shape[0]) if w is not None else -1)
        return dict(family="local_vmamba", dims=dims, depths=depths,
                    directions=max(_num_directions(sd, f"layers.0.blocks.0.{name}.") for name in ("mixer", "op")),
                    search=any(k.endswith(("multi_scan.weights", "merge.weights")) for k in sd))
    return None


def _stem(sd: dict[str, torch.Tensor]) -> str:
    """'patch' (one strided conv, as the original) or 'N convs' (:class:`~localmamba.layers.ConvStem`)."""
    n = sum(1 for k, v in sd.items() if k.startswith("patch_embed.convs.") and k.endswith(".weight") and v.dim() == 4)
    return f"{n} convs" if n else "patch"


def _num_directions(sd: dict[str, torch.Tensor], prefix: str) -> int:
    """K of one layer: per-direction keys (original LocalVim), else rows of the stacked dt bias."""
    per_direction = sum(1 for k in sd if k.startswith(prefix + "A_log_"))
    if per_direction:
        return per_direction
    for name in ("dt_projs_bias", "ssm.dt_projs_bias"):
        if prefix + name in sd:
            return int(sd[prefix + name].shape[0])
    return -1


def load_pretrained(model: nn.Module, filter_fn: Callable, trust_pickle: bool = False) -> None:
    """Load the weights named by ``model.pretrained_cfg`` ('file' first, else 'url') through ``filter_fn``."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    path = cfg.get("file")
    if not path:
        url = cfg.get("url")
        if not url:
            raise CheckpointError(
                f"no released weights are known for {cfg.get('architecture', type(model).__name__)}; "
                f"pass a file: timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH))")
        from timm.models._hub import download_cached_file
        try:
            path = download_cached_file(url, check_hash=False, progress=True)
        except Exception as e:  # no network, proxy, 404...
            raise CheckpointError(
                f"could not download {url} ({type(e).__name__}: {e}). Download it on a machine with a "
                f"network and pass it with pretrained_cfg_overlay=dict(file=PATH).") from e
    sd = read_state_dict(path, trust_pickle=trust_pickle)
    try:
        mapped = filter_fn(sd, model)
        model.load_state_dict(mapped, strict=True)
    except (RuntimeError, KeyError, ValueError) as e:
        ours, theirs = describe_state_dict(model.state_dict()), describe_state_dict(sd)
        # another architecture says all a user needs; the loader's own message only where they look alike
        detail = f"\nDetail: {str(e)[:600]}" if ours == theirs else ""
        raise CheckpointError(
            f"{path} does not fit {cfg.get('architecture', type(model).__name__)}: the model is "
            f"{ours}, but the checkpoint looks like {theirs}.{detail}") from e


def model_from_arch(arch, checkpoint=None, **kwargs) -> torch.nn.Module:
    """Build the model an architecture description holds, optionally loading an original-format checkpoint.

    ``arch``: a dict or the path of a JSON file in the fixtures' format (``family`` 'local_vim' with
    ``img_size``, ``patch_size``, ``embed_dim``, ``depth``, ``rope``, ``cls_token``; or 'local_vmamba'
    with ``dims``, ``depths``; both with ``num_classes`` and ``directions``, null for a search supernet).
    ``checkpoint``: a file loaded through timm (``pretrained=True`` with ``pretrained_cfg_overlay``), so
    the checkpoint filter maps the original keys and a wrong file raises
    :class:`localmamba.models.CheckpointError`. ``kwargs`` override the architecture (e.g. ``backend``).
    Returns the model in eval mode.
    """
    import json
    import os

    import timm

    if isinstance(arch, (str, os.PathLike)):
        with open(arch) as f:
            arch = json.load(f)
    family = arch.get("family")
    kw = dict(num_classes=arch["num_classes"], directions=arch.get("directions"))
    if family == "local_vim":
        kw.update(img_size=arch["img_size"], patch_size=arch["patch_size"], embed_dim=arch["embed_dim"],
                  depth=arch["depth"], rope=arch["rope"], cls_token=arch["cls_token"])
        base = "local_vim_tiny" if arch.get("directions") else "local_vim_tiny_search"
    elif family == "local_vmamba":
        kw.update(dims=arch["dims"], depths=arch["depths"])
        base = "local_vssm_tiny" if arch.get("directions") else "local_vssm_tiny_search"
    else:
        raise ValueError(f"arch['family'] must be 'local_vim' or 'local_vmamba', got {family!r}")
    if kw["directions"] is None:
        del kw["directions"]  # the search variant's default
    kw.update(kwargs)
    if checkpoint is None:
        return timm.create_model(base, **kw).eval()
    return timm.create_model(base, pretrained=True, pretrained_cfg_overlay=dict(file=os.fspath(checkpoint)),
                             **kw).eval()
