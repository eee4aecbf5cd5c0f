"""Which scan directions each layer runs: the searched tables, the search candidates, and the
:class:`DirectionSpec` file that carries a searched result from a supernet to the model trained on it.

Every model class resolves its ``directions`` argument through :func:`resolve_directions`, so a model
accepts a list of per-layer lists, a :class:`DirectionSpec` or the path of a spec file alike:
``timm.create_model("local_vim_tiny_cifar", directions="runs/search/directions.json")``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Sequence, Union

from ..scan import ORIGINAL_CANDIDATES, parse_direction

__all__ = [
    "CANDIDATES", "CIFAR_CANDIDATES", "FAMILIES", "DirectionSpec", "DirectionSpecError", "resolve_directions",
    "LOCAL_VIM_DIRECTIONS", "LOCAL_VIM_SMALL_DIRECTIONS", "LOCAL_VIM_CIFAR_DIRECTIONS", "VIM_DIRECTIONS",
    "LOCAL_VSSM_TINY_DIRECTIONS", "LOCAL_VSSM_SMALL_DIRECTIONS", "LOCAL_VSSM_CIFAR_DIRECTIONS", "VMAMBA_DIRECTIONS",
]

#: The 8 candidates of every supernet layer, in the original code's order (the order the original's
#: ``vis_search_prob.py`` sorts the chosen ones into).
CANDIDATES = ORIGINAL_CANDIDATES
#: The same at CIFAR grids (8x8 to 2x2 tokens): w7 becomes w4, half of an 8x8 grid as w7 is about half of 14x14.
CIFAR_CANDIDATES = tuple(d.replace("w7", "w4") for d in CANDIDATES)
#: family name -> the model class it builds (as ``DirectionSpec.family`` and the checkpoint summaries write it)
FAMILIES = ("local_vim", "local_vmamba")


def _cifar(table: Sequence[Sequence[str]]) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(d.replace("w7", "w4") for d in ds) for ds in table)


# --- the original search's results ------------------------------------------------------------------

#: Per-layer directions of LocalVim-T/S, found by the original search (shared by both sizes).
LOCAL_VIM_DIRECTIONS = (
    ("h", "v_flip", "w7", "w7_flip"), ("h_flip", "w2_flip", "w7", "w7_flip"), ("h", "h_flip", "v", "w7"),
    ("h", "h_flip", "v", "v_flip"), ("h", "h_flip", "v", "v_flip"), ("h", "h_flip", "v", "v_flip"),
    ("h_flip", "v", "v_flip", "w7"), ("h_flip", "v", "v_flip", "w2_flip"), ("h", "h_flip", "v", "v_flip"),
    ("h", "h_flip", "v", "v_flip"), ("h", "v", "v_flip", "w2"), ("h", "v", "v_flip", "w2_flip"),
    ("h", "h_flip", "v_flip", "w7"), ("h_flip", "v", "v_flip", "w2"), ("h", "h_flip", "v", "v_flip"),
    ("h", "v", "w2", "w2_flip"), ("v", "v_flip", "w2", "w7"), ("h", "h_flip", "v", "w2"),
    ("h", "h_flip", "w2_flip", "w7"), ("v", "v_flip", "w2", "w2_flip"),
)

#: local_vim_small as the original registry ends up with it: its file defines ``local_vim_small``
#: twice and the second definition, (h, h_flip, w2, w2_flip) in every layer, wins.
LOCAL_VIM_SMALL_DIRECTIONS = (("h", "h_flip", "w2", "w2_flip"),) * 20

#: LocalVim-T's searched directions with w7 (half of a 14x14 grid) mapped to w4 (half of 8x8), first 12 layers.
LOCAL_VIM_CIFAR_DIRECTIONS = _cifar(LOCAL_VIM_DIRECTIONS[:12])

#: Vim's two global scans, the baseline of the LocalVim family.
VIM_DIRECTIONS = ("h", "h_flip")

#: Per-block directions of LocalVMamba-T found by the original search (15 blocks over depths 2, 2, 9, 2).
LOCAL_VSSM_TINY_DIRECTIONS = (
    ("h", "h_flip", "w7", "w7_flip"), ("h_flip", "v_flip", "w2", "w2_flip"), ("h_flip", "v_flip", "w2_flip", "w7"),
    ("h_flip", "v", "v_flip", "w2"), ("h", "h_flip", "v_flip", "w2_flip"), ("h_flip", "v_flip", "w2", "w2_flip"),
    ("h", "w2_flip", "w7", "w7_flip"), ("h", "h_flip", "v", "v_flip"), ("h", "v_flip", "w7", "w7_flip"),
    ("h_flip", "v", "w2", "w7_flip"), ("v", "v_flip", "w2", "w7_flip"), ("h", "h_flip", "v_flip", "w2_flip"),
    ("v_flip", "w2_flip", "w7", "w7_flip"), ("h_flip", "v_flip", "w2_flip", "w7_flip"), ("h_flip", "v", "w7", "w7_flip"),
)
#: Per-block directions of LocalVMamba-S (33 blocks over depths 2, 2, 27, 2).
LOCAL_VSSM_SMALL_DIRECTIONS = (
    ("h", "v", "v_flip", "w7_flip"), ("h", "h_flip", "v", "w7"), ("h_flip", "v", "v_flip", "w7"),
    ("h_flip", "v", "w2_flip", "w7"), ("h_flip", "v", "w2_flip", "w7"), ("h_flip", "v_flip", "w2", "w7_flip"),
    ("h_flip", "v", "v_flip", "w7"), ("h", "v", "v_flip", "w7"), ("h", "v", "v_flip", "w7"),
    ("h", "v", "v_flip", "w7_flip"), ("h", "h_flip", "v", "v_flip"), ("h", "v", "v_flip", "w2"),
    ("v", "v_flip", "w2_flip", "w7"), ("h", "h_flip", "v", "w2"), ("h_flip", "v", "v_flip", "w7_flip"),
    ("h", "h_flip", "v", "v_flip"), ("h", "v", "v_flip", "w7_flip"), ("h", "v", "v_flip", "w7_flip"),
    ("h", "h_flip", "v_flip", "w7"), ("h_flip", "v_flip", "w2_flip", "w7"), ("h_flip", "v", "v_flip", "w7_flip"),
    ("v", "v_flip", "w7", "w7_flip"), ("h", "v", "v_flip", "w7_flip"), ("h_flip", "v", "v_flip", "w2"),
    ("h", "v", "v_flip", "w2_flip"), ("h", "h_flip", "v", "w7"), ("h", "h_flip", "w7", "w7_flip"),
    ("h", "v_flip", "w2", "w2_flip"), ("h", "v_flip", "w2", "w7"), ("h", "v", "v_flip", "w7_flip"),
    ("h_flip", "v", "w2_flip", "w7"), ("h_flip", "v_flip", "w7", "w7_flip"), ("h", "v", "w7", "w7_flip"),
)
#: LocalVMamba-T's CIFAR variant (depths 2, 2, 6, 2): the first 4 and last 8 searched sets, w7 made w4.
LOCAL_VSSM_CIFAR_DIRECTIONS = _cifar(LOCAL_VSSM_TINY_DIRECTIONS[:4] + LOCAL_VSSM_TINY_DIRECTIONS[-8:])

#: VMamba's four global scans, the baseline of the LocalVMamba family.
VMAMBA_DIRECTIONS = ("h", "h_flip", "v", "v_flip")


# --- direction spec files ---------------------------------------------------------------------------

class DirectionSpecError(ValueError):
    """A direction spec (file, dict or list) that is malformed or does not fit the model it is given to."""


@dataclass
class DirectionSpec:
    """The directions of every layer of one model, as a small JSON file that a search writes and a model reads.

    ``directions``: one list of direction names per layer (per block for LocalVMamba, over all stages);
    ``family``: 'local_vim' or 'local_vmamba'; ``model``: the model it came from (e.g. the supernet's
    registered name); ``candidates``: what the layers chose from; ``probabilities``: optionally, each
    layer's probability of every candidate (layers x candidates); ``depth``: the number of layers,
    ``len(directions)`` (checked against it when given).
    """

    directions: list[list[str]]
    family: str
    model: str = ""
    candidates: list[str] = field(default_factory=lambda: list(CANDIDATES))
    probabilities: list[list[float]] | None = None
    depth: int | None = None

    def __post_init__(self) -> None:
        self.directions = [list(ds) for ds in self.directions]
        self.candidates = list(self.candidates)
        if self.probabilities is not None:
            self.probabilities = [[float(p) for p in row] for row in self.probabilities]
        self._check()

    def _check(self) -> None:
        if self.depth is None:
            self.depth = len(self.directions)
        elif self.depth != len(self.directions):
            raise DirectionSpecError(f"direction spec: field 'depth' is {self.depth} but field 'directions' has "
                                     f"{len(self.directions)} layers")
        if self.family not in FAMILIES:
            raise DirectionSpecError(f"direction spec: field 'family' must be one of {FAMILIES}, got {self.family!r}")
        if not self.directions:
            raise DirectionSpecError("direction spec: field 'directions' is empty (need one list per layer)")
        for i, ds in enumerate(self.directions):
            if not ds:
                raise DirectionSpecError(f"direction spec: field 'directions', layer {i} is empty")
            _check_names(ds, f"direction spec: field 'directions', layer {i}")
        _check_names(self.candidates, "direction spec: field 'candidates'")
        if self.probabilities is not None:
            shape = (len(self.probabilities), {len(r) for r in self.probabilities})
            if shape != (self.depth, {len(self.candidates)}):
                raise DirectionSpecError(
                    f"direction spec: field 'probabilities' must have one row of {len(self.candidates)} "
                    f"(one per candidate) for each of the {self.depth} layers")

    def to_dict(self) -> dict:
        d = dict(model=self.model, family=self.family, depth=self.depth, candidates=self.candidates,
                 directions=self.directions)
        if self.probabilities is not None:
            d["probabilities"] = self.probabilities
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "direction spec") -> "DirectionSpec":
        """Validate and build; errors name the field that is wrong (``source`` says where ``d`` came from)."""
        if not isinstance(d, dict):
            raise DirectionSpecError(f"{source} is not a valid direction spec: expected a JSON object, "
                                     f"got {type(d).__name__}")
        for key in ("family", "directions"):
            if key not in d:
                raise DirectionSpecError(f"{source} is not a valid direction spec: field {key!r} is missing")
        ds = d["directions"]
        if not isinstance(ds, list) or not all(isinstance(x, list) for x in ds):
            raise DirectionSpecError(f"{source} is not a valid direction spec: field 'directions' must be a list "
                                     f"of lists of direction names, one list per layer")
        try:
            return cls(directions=ds, family=d["family"], model=str(d.get("model", "")), depth=d.get("depth"),
                       candidates=d.get("candidates", list(CANDIDATES)), probabilities=d.get("probabilities"))
        except (TypeError, ValueError) as e:
            msg = str(e).removeprefix("direction spec: ")
            raise DirectionSpecError(f"{source} is not a valid direction spec: {msg}") from None

    def save(self, path: str | os.PathLike) -> None:
        """Write the spec as JSON, one line per layer, so that a reader can see (and edit) each layer's choice."""
        d = self.to_dict()
        lines = []
        for k, v in d.items():
            if k in ("directions", "probabilities"):
                rows = ",\n".join(f"    {json.dumps([round(p, 6) for p in r] if k == 'probabilities' else r)}"
                                  for r in v)
                lines.append(f'  "{k}": [\n{rows}\n  ]')
            else:
                lines.append(f"  {json.dumps(k)}: {json.dumps(v)}")
        with open(path, "w") as f:
            f.write("{\n" + ",\n".join(lines) + "\n}\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DirectionSpec":
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise DirectionSpecError(f"direction spec file not found: {path}")
        try:
            with open(path) as f:
                d = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DirectionSpecError(f"{path} is not a valid direction spec: not JSON ({e})") from None
        return cls.from_dict(d, source=path)


def _check_names(names: Sequence[str], where: str) -> None:
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise DirectionSpecError(f"{where}: expected a list of direction names, got {names!r}")
    for name in names:
        try:
            parse_direction(name)
        except ValueError as e:
            raise DirectionSpecError(f"{where}: {e}") from None


Directions = Union[str, os.PathLike, DirectionSpec, Sequence[Union[Sequence[str], None]], None]


def resolve_directions(directions: Directions, family: str, depth: int) -> list[tuple[str, ...] | None] | None:
    """One list of per-layer direction tuples from what a user may pass as ``directions``.

    Accepts None (every layer a search layer), a list with one list of names (or None: a search layer)
    per layer, a :class:`DirectionSpec`, or the path of a spec file. Raises :class:`DirectionSpecError`
    (a ValueError) on a depth or family mismatch or an unknown direction name, saying which.
    """
    if directions is None:
        return None
    source = "directions"
    if isinstance(directions, (str, os.PathLike)):
        source = os.fspath(directions)
        directions = DirectionSpec.load(directions)
    if isinstance(directions, DirectionSpec):
        spec = directions
        if spec.family != family:
            origin = f" (from {spec.model})" if spec.model else ""
            raise DirectionSpecError(f"{source}: the spec is for the {spec.family} family{origin}, but this model is "
                                     f"a {family}; build a {spec.family} model from it")
        directions = spec.directions
    if isinstance(directions, str) or not isinstance(directions, Sequence):
        raise DirectionSpecError(f"directions must be a list of per-layer lists, a DirectionSpec or a spec file's "
                                 f"path, got {type(directions).__name__}")
    unit = "block" if family == "local_vmamba" else "layer"  # LocalVMamba's depth counts blocks over all stages
    if len(directions) != depth:
        raise DirectionSpecError(f"{source} has depth {len(directions)} but the {family} model has depth {depth} "
                                 f"({depth} {unit}s); give one set of directions per {unit}")
    out = []
    for i, ds in enumerate(directions):
        if ds is not None:
            _check_names(ds, f"{source}, {unit} {i}")
            ds = tuple(ds)
        out.append(ds)
    return out
