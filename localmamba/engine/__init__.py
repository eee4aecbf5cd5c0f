"""The training engine: classification training and evaluation on CPU, one GPU or many (``torchrun``).

The commands are ``python -m localmamba.train`` and ``python -m localmamba.evaluate`` (thin entry modules
that call :func:`localmamba.engine.train.main` and :func:`localmamba.engine.evaluate.main` through
:func:`localmamba.engine.cli.run_command`). The package, bottom to top::

    config.py       Config (one field per --option), config files, the command line; ConfigError
    data.py         datasets (CIFAR, image folders, .npz, generated), held-out splits; DataError
    loaders.py      transforms, samplers, loaders seeded by (seed, epoch, rank), DeviceLoader (--gpu-aug)
    distributed.py  torchrun process groups, collectives, metrics.jsonl reading, a launcher for notebooks
    checkpoint.py   the one atomic writer and the one weights_only reader of checkpoints, RNG states
    model.py        models by name (timm), with close names suggested for an unknown one
    cuda_graphs.py  training and inference steps captured as CUDA graphs
    evaluate.py     metrics over a loader, models from checkpoints, evaluate(); the evaluate command
    train.py        train(config, model=None, hooks=None): a run as named steps; the train command
    cli.py          expected errors (USER_ERRORS) as one line and exit status 2

Imports point one way: data < config < model, loaders < evaluate < train (checkpoint and distributed stand
alone, cli is on top), and nothing here imports search or detection, which are above; search and
detection build on :func:`localmamba.engine.train.train`, :class:`Hooks`, :mod:`checkpoint` and :mod:`data`.
The package exports no function named like one of its modules (``engine.train`` is the module), so
``from localmamba.engine import train`` always gives the module.
"""
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import Config, ConfigError, load_config_file, parse_args
from .data import DataError
from .evaluate import load_model
from .train import Hooks

__all__ = ["CheckpointError", "Config", "ConfigError", "DataError", "Hooks", "load_checkpoint", "load_config_file",
           "load_model", "parse_args", "save_checkpoint"]
