"""What LocalVim and LocalVMamba share: the classifier interface, weight init and registry defaults."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.utils.checkpoint
from timm.layers import trunc_normal_
from timm.models import build_model_with_cfg
from timm.models._features import feature_take_indices

from .checkpoints import load_pretrained

RELEASE_URL = "https://github.com/hunto/LocalMamba/releases/download/v1.0.0/"
#: pretrained_cfg entries of the 32x32, 10-class variants; ``CIFAR10`` adds CIFAR-10's mean and std
SMALL_INPUT = dict(num_classes=10, input_size=(3, 32, 32), crop_pct=1.0)
CIFAR10 = dict(SMALL_INPUT, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))


def cfg(url: str = "", **kwargs) -> dict:
    """A pretrained_cfg with the ImageNet defaults both families start from."""
    return {**dict(url=url, num_classes=1000, input_size=(3, 224, 224), pool_size=None, crop_pct=0.875,
                   interpolation="bicubic", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                   first_conv="patch_embed.proj", classifier="head", license="apache-2.0",
                   paper_ids="arXiv:2403.09338"), **kwargs}


def build(model_cls: type, variant: str, pretrained: bool, filter_fn: Callable, out_indices: Sequence[int],
          **kwargs) -> nn.Module:
    """A registered variant, as timm's ``_create_*`` functions build theirs.

    ``pretrained=True`` loads the weights named by the pretrained config through ``filter_fn``
    (``trust_pickle=True`` lets a checkpoint hold more than tensors); ``features_only=True`` returns the
    maps of ``out_indices`` unless the caller gives its own.
    """
    trust_pickle = kwargs.pop("trust_pickle", False)
    indices = kwargs.pop("out_indices", None) or tuple(out_indices)
    model = build_model_with_cfg(model_cls, variant, pretrained=False,
                                 feature_cfg=dict(out_indices=indices, feature_cls="getter"), **kwargs)
    if pretrained:
        load_pretrained(model, filter_fn, trust_pickle=trust_pickle)
    return model


def init_vit_weights(m: nn.Module) -> None:
    """The original's ViT-style initialisation of one module: truncated-normal Linear, unit LayerNorm."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class Backbone(nn.Module):
    """timm's classifier and pruning interface over ``layers``, ``head``, ``num_features`` and the final
    norm named by ``norm_attr``."""

    norm_attr: str
    grad_checkpointing: bool = False

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's switch: recompute each block's activations in the backward instead of keeping them. Training
        memory drops to the blocks' inputs and one block's activations, for one more forward of compute."""
        self.grad_checkpointing = enable
        for m in self.modules():
            if m is not self and hasattr(m, "grad_checkpointing"):
                m.grad_checkpointing = enable

    @torch.jit.ignore
    def set_activation_recompute(self, enable: bool | None = True) -> None:
        """Remake each mixer's K-fold copies of its activations (the scanned sequences, delta) in the backward
        instead of keeping them: a gather and a thin GEMM more per layer, bit-identical gradients. ``None``, the
        default: on for CUDA tensors (see :mod:`localmamba.layers.recompute`)."""
        for m in self.modules():
            if hasattr(m, "recompute_activations"):
                m.recompute_activations = enable

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {n for n, p in self.named_parameters() if getattr(p, "_no_weight_decay", False)}

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        take, max_index = feature_take_indices(len(self.layers), indices)
        self.layers = self.layers[: max_index + 1]
        if prune_norm:
            setattr(self, self.norm_attr, nn.Identity())
        if prune_head:
            self.reset_classifier(0)
        return take


def run_block(block: nn.Module, checkpointed: bool, *args, **kwargs):
    """``block(*args, **kwargs)``, through :func:`torch.utils.checkpoint.checkpoint` when ``checkpointed`` and
    autograd records (see :meth:`Backbone.set_grad_checkpointing`)."""
    if checkpointed and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False, **kwargs)
    return block(*args, **kwargs)


def compile_model(model: nn.Module, input_size: tuple[int, int, int] | None = None, **kwargs) -> nn.Module:
    """``torch.compile(model, **kwargs)`` that traces these models as one graph.

    Building a scan plan (index tensors, once per grid) cannot be traced: compiled on a cold plan cache,
    every mixer splits the graph and dynamo compiles each block apart, once per distinct drop-path rate,
    past its recompile limit of 8 (the remaining blocks then silently run eagerly). So one eager forward
    of a zero image of ``input_size`` (default: the model's pretrained_cfg) builds the plans first, and
    the limit is raised to cover every block anyway (other sizes build theirs in the first call).
    """
    from timm.layers import DropPath

    p = next(model.parameters())
    training = model.training
    with torch.no_grad():
        size = input_size or model.pretrained_cfg["input_size"]
        model.eval()(torch.zeros(1, *size, device=p.device, dtype=p.dtype))
    model.train(training)
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # torch < 2.7
    blocks = sum(isinstance(m, DropPath) for m in model.modules())
    setattr(config, name, max(getattr(config, name), blocks + 8))
    return torch.compile(model, **kwargs)


def resolve_model_name(name: str) -> str:
    """``name`` if timm can build it (a pretrained tag such as ``.in1k`` allowed); otherwise a ValueError
    that suggests the closest registered names, ours first (the CLIs print it as their one-line error)."""
    import difflib

    import timm
    from timm.models import split_model_name_tag

    if timm.is_model(split_model_name_tag(name)[0]):
        return name
    ours = timm.list_models(module=["local_vim", "local_vmamba"])
    close = difflib.get_close_matches(name, ours, n=3, cutoff=0.75) or difflib.get_close_matches(
        name, timm.list_models(), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}?" if close else f"this library's models are: {', '.join(ours)}"
    raise ValueError(f"unknown model {name!r}; {hint}")
