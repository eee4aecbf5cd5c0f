"""Reading a supernet: its search layers, their candidates and the probabilities the search learned.

A supernet (``*_search`` models) runs every candidate direction in every layer and mixes them with a
softmax over one learnable vector per layer (:class:`~localmamba.layers.merge.DirectionMerge`,
``search=True``). The architecture parameters are those vectors; everything here reads them in layer
order, which is the order of the model's modules (and of its state dict, which the original's
``vis_search_prob.py`` walks).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers.merge import DirectionMerge

__all__ = ["search_layers", "is_supernet", "candidates", "probabilities", "architecture_parameters",
           "probabilities_from_state_dict", "family"]


def search_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, mixer) of every search layer, in layer order; a mixer has ``directions`` and ``merge``."""
    model = getattr(model, "module", model)  # DDP
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return [(name, m) for name, m in model.named_modules()
            if isinstance(getattr(m, "merge", None), DirectionMerge) and m.merge.search]


def is_supernet(model: nn.Module) -> bool:
    """Whether every direction layer of ``model`` is a search layer (and it has at least one)."""
    mixers = [m for _, m in getattr(model, "module", model).named_modules()
              if isinstance(getattr(m, "merge", None), DirectionMerge)]
    return bool(mixers) and all(m.merge.search for m in mixers)


def _require_supernet(model: nn.Module) -> list[tuple[str, nn.Module]]:
    layers = search_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no search layers: direction search needs a supernet "
                         "(a '*_search' model, e.g. local_vim_tiny_cifar_search)")
    return layers


def candidates(model: nn.Module) -> tuple[str, ...]:
    """The candidate directions the supernet's layers choose from (one tuple: every layer offers the same)."""
    sets = {tuple(m.directions) for _, m in _require_supernet(model)}
    if len(sets) != 1:
        raise ValueError(f"the search layers offer different candidate sets {sorted(sets)}; derive expects one")
    return sets.pop()


def architecture_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The architecture parameters (one vector of K logits per layer), in layer order."""
    return [m.merge.weights for _, m in _require_supernet(model)]


def probabilities(model: nn.Module) -> torch.Tensor:
    """softmax of each layer's architecture parameters: (layers, K), float32 on the CPU, detached."""
    return torch.stack([m.merge.probabilities().float().cpu() for _, m in _require_supernet(model)])


def probabilities_from_state_dict(sd: dict[str, torch.Tensor]) -> torch.Tensor:
    """(layers, K) probabilities from a supernet's state dict (ours or the original's), in state-dict order,
    as the original's ``vis_search_prob.py`` reads them."""
    logits = [v.detach().float().flatten() for k, v in sd.items()
              if k.endswith((".merge.weights", ".multi_scan.weights"))]
    if not logits:
        raise ValueError("this state dict has no architecture parameters ('*.merge.weights'): it is not a "
                         "supernet's; derive directions from a checkpoint of a '*_search' model")
    return torch.stack(logits).softmax(-1)


def family(model: nn.Module) -> str:
    """'local_vim' or 'local_vmamba', the family a direction spec is written for."""
    from ..models import LocalVim, LocalVMamba

    model = getattr(model, "module", model)
    model = getattr(model, "_orig_mod", model)
    if isinstance(model, LocalVim):
        return "local_vim"
    if isinstance(model, LocalVMamba):
        return "local_vmamba"
    raise ValueError(f"{type(model).__name__} is neither a LocalVim nor a LocalVMamba model")
