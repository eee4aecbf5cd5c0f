"""The LocalVim and LocalVMamba families; importing this module registers them in timm.

- :mod:`.local_vim`, :mod:`.local_vmamba`: the model classes, their ``@register_model`` variants and the
  filters that map original-format checkpoints;
- :mod:`.directions`: the searched direction tables, the search candidates and :class:`DirectionSpec`
  (a searched result as a JSON file that ``directions=`` accepts);
- :mod:`.checkpoints`: reading checkpoint files safely, describing what they hold, loading released weights;
- :mod:`.flops`: parameters and FLOPs counted the paper's way;
- :mod:`._common`: what both families share (classifier interface, init, build, name lookup, compile).
"""
from . import local_vim, local_vmamba
from ._common import compile_model, resolve_model_name
from .checkpoints import CheckpointError, describe_state_dict, model_from_arch, read_state_dict
from .directions import CANDIDATES, CIFAR_CANDIDATES, DirectionSpec, DirectionSpecError, resolve_directions
from .local_vim import LocalVim
from .local_vmamba import LocalVMamba

__all__ = ["LocalVim", "LocalVMamba", "compile_model", "CheckpointError", "describe_state_dict", "model_from_arch",
           "read_state_dict", "CANDIDATES", "CIFAR_CANDIDATES", "DirectionSpec", "DirectionSpecError",
           "resolve_directions", "resolve_model_name"]
