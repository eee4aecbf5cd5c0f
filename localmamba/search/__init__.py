"""Direction search: train a supernet, read the directions each layer prefers, build and train the searched model.

- :mod:`.supernet`: a supernet's search layers, candidates and learned probabilities;
- :mod:`.derive`: :func:`derive` (top-k per layer -> a :class:`DirectionSpec`), as the original's
  ``vis_search_prob.py``;
- :mod:`.plots`: :func:`plot_search` (layers x candidates heatmap, probabilities over epochs);
- :mod:`.run` and ``python -m localmamba.search``: the whole workflow on the training engine.
"""
from ..models.directions import CANDIDATES, CIFAR_CANDIDATES, DirectionSpec, DirectionSpecError
from .derive import derive, top_k_directions
from .plots import PROBS_FIELD, load_history, plot_directions, plot_search
from .supernet import architecture_parameters, candidates, is_supernet, probabilities, search_layers

__all__ = ["DirectionSpec", "DirectionSpecError", "CANDIDATES", "CIFAR_CANDIDATES", "derive", "top_k_directions", "plot_search", "plot_directions", "load_history", "PROBS_FIELD", "probabilities",
           "candidates", "architecture_parameters", "search_layers", "is_supernet"]
