"""Small shims for older timm releases (the GPU image's timm may predate some helpers)."""
from __future__ import annotations

try:
    from timm.models._features import feature_take_indices
except ImportError:  # timm < 1.0.10
    def feature_take_indices(num_features: int, indices=None, as_set: bool = False):
        """Indices of the features to take: None -> all, int n -> the last n, list -> those (negatives allowed)."""
        if indices is None:
            indices = num_features
        if isinstance(indices, int):
            if not 0 < indices <= num_features:
                raise ValueError(f"last-n ({indices}) is out of range (1 to {num_features})")
            take = [num_features - indices + i for i in range(indices)]
        else:
            take = []
            for i in indices:
                idx = num_features + i if i < 0 else i
                if not 0 <= idx < num_features:
                    raise ValueError(f"feature index {idx} is out of range (0 to {num_features - 1})")
                take.append(idx)
        return (set(take) if as_set else take), max(take)

__all__ = ["feature_take_indices"]
