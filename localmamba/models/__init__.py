"""The LocalVim and LocalVMamba families; importing this module registers them in timm."""
from . import local_vim, local_vmamba
from ._common import compile_model
from .checkpoints import CheckpointError, describe_state_dict, model_from_arch, read_state_dict
from .directions import CANDIDATES, CIFAR_CANDIDATES, DirectionSpec, DirectionSpecError, resolve_directions
from .local_vim import LocalVim
from .local_vmamba import LocalVMamba

__all__ = ["LocalVim", "LocalVMamba", "compile_model", "CheckpointError", "describe_state_dict", "model_from_arch",
           "read_state_dict", "CANDIDATES", "CIFAR_CANDIDATES", "DirectionSpec", "DirectionSpecError",
           "resolve_directions"]
