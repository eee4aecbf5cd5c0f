"""``python -m localmamba.evaluate``: evaluate a checkpoint (``--help`` lists the options).

The engine lives in :mod:`localmamba.engine` (this module is its command); its library API is importable
from here too: ``from localmamba.evaluate import evaluate, load_model``.
"""
from .engine.evaluate import confusion_matrix, evaluate, load_metrics, load_model, main, predict

__all__ = ["confusion_matrix", "evaluate", "load_metrics", "load_model", "main", "predict"]

if __name__ == "__main__":
    from .engine.cli import run_command

    run_command(main, "python -m localmamba.evaluate")
