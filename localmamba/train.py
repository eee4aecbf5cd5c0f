"""``python -m localmamba.train``: train a model (``--help`` lists the options).

The engine lives in :mod:`localmamba.engine` (this module is its command); its library API is importable
from here too: ``from localmamba.train import Config, train``.
"""
from .engine.config import Config, load_config_file, parse_args
from .engine.train import Hooks, main, train

__all__ = ["Config", "Hooks", "load_config_file", "main", "parse_args", "train"]

if __name__ == "__main__":
    from .engine.cli import run_command

    run_command(main, "python -m localmamba.train")
