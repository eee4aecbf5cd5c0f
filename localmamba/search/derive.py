"""From learned probabilities to a searched architecture: the top-k candidates of every layer.

The original's ``classification/tools/vis_search_prob.py`` visits every ``multi_scan.weights`` of a
supernet checkpoint in state-dict order, takes the softmax, keeps the indices of the 4 largest
probabilities (``torch.topk``) and sorts them ascending, so every layer's list is in the canonical
candidate order, and prints one list per layer.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ..models.directions import DirectionSpec
from .supernet import candidates as supernet_candidates
from .supernet import family as model_family
from .supernet import probabilities as supernet_probabilities

__all__ = ["top_k_directions", "spec_from_probabilities", "derive"]


def top_k_directions(probs: torch.Tensor, candidates: Sequence[str], k: int = 4) -> list[tuple[str, ...]]:
    """The ``k`` most probable of ``candidates`` in every row of ``probs`` (layers, K), each set listed in
    candidate order. Ties go to the candidate listed first (``torch.topk`` leaves them unspecified)."""
    probs = torch.as_tensor(probs, dtype=torch.float64)
    if probs.dim() != 2 or probs.shape[1] != len(candidates):
        raise ValueError(f"probabilities must be (layers, {len(candidates)}) for candidates {tuple(candidates)}, "
                         f"got shape {tuple(probs.shape)}")
    K = len(candidates)
    if not 1 <= k <= K:
        raise ValueError(f"k={k} directions per layer is not possible with {K} candidates: choose 1 <= k <= {K}")
    if not torch.isfinite(probs).all():
        raise ValueError("probabilities contain NaN or infinity: the search diverged; nothing can be derived")
    out = []
    for row in probs.tolist():
        ranked = sorted(range(K), key=lambda i: (-row[i], i))  # stable: highest first, then candidate order
        out.append(tuple(candidates[i] for i in sorted(ranked[:k])))
    return out


def spec_from_probabilities(probs: torch.Tensor, candidates: Sequence[str], family: str, model: str = "",
                            k: int = 4) -> DirectionSpec:
    """The :class:`DirectionSpec` of the top-``k`` candidates per row of ``probs`` (layers, K), probabilities kept."""
    probs = torch.as_tensor(probs, dtype=torch.float64)
    return DirectionSpec(directions=[list(d) for d in top_k_directions(probs, candidates, k)], model=model,
                         family=family, depth=len(probs), candidates=list(candidates),
                         probabilities=[[round(p, 6) for p in row] for row in probs.tolist()])


def derive(model: nn.Module, k: int = 4, model_name: str | None = None) -> DirectionSpec:
    """The searched directions of a trained supernet: a :class:`~localmamba.models.directions.DirectionSpec`
    that lists, for every layer, the ``k`` candidates of highest probability (softmax of the layer's
    architecture parameters), in candidate order, with the probabilities themselves.

    As the original's ``vis_search_prob.py`` (top-k of the softmax per layer, indices sorted ascending),
    except that: ``k`` is an argument (the paper keeps 4 of 8) and k larger than the candidates is refused;
    ties are broken deterministically (the candidate listed first wins) where ``torch.topk`` leaves the
    order unspecified; and the result is a file a model can be built from, not printed lists.
    ``model_name`` is recorded as the spec's source (default: the model's timm name).
    """
    name = model_name or (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or type(model).__name__
    return spec_from_probabilities(supernet_probabilities(model), supernet_candidates(model), model_family(model),
                                   name, k)
