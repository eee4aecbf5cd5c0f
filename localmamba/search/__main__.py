"""``python -m localmamba.search``: direction search from the command line.

    # search on CIFAR-10 (45,000 train / 5,000 held out), then train the searched model with the same recipe
    python -m localmamba.search --supernet local_vim_tiny_cifar_search --config configs/search_cifar10_local_vim.yaml \\
        --data-dir data/cifar10_train_jpeg.npz --output runs/search --retrain-epochs 15

    # a minute on a CPU, on generated images
    python -m localmamba.search --supernet local_vim_tiny_cifar_search --dataset fake --epochs 2 \\
        --warmup-epochs 0 --max-steps-per-epoch 5 --batch-size 16 --output runs/search_demo

    # directions from a supernet checkpoint you already have (ours, or the original's with --supernet)
    python -m localmamba.search --from-checkpoint runs/search/supernet/last.pth --output runs/search

    # train what a search found (same as python -m localmamba.train --model local_vim_tiny_cifar
    # --model-kwargs '{"directions": "runs/search/directions.json"}')
    python -m localmamba.search --spec runs/search/directions.json --config configs/cifar10_local_vim_tiny.yaml \\
        --data-dir data/cifar10_train_jpeg.npz --output runs/searched

Every option of ``python -m localmamba.train`` applies to the supernet (and to the retrained model): resume
with ``--resume auto``, several GPUs through ``torchrun``, ``--amp``, ``--cuda-graph``, progress bars.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..engine import config as engine_config
from ..engine.cli import run_command
from ..engine.config import ConfigError
from ..models.directions import DirectionSpecError

PROG = "python -m localmamba.search"


def search_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, add_help=False,
                                description="Direction search: train a supernet, derive each layer's top-k "
                                            "directions, optionally train the searched model.")
    g = p.add_argument_group("search (the training options below apply to the supernet and the retrained model)")
    g.add_argument("--supernet", help="a *_search model, e.g. local_vim_tiny_cifar_search (or 'model' in --config)")
    g.add_argument("--k", type=int, default=4, help="directions kept per layer (default: 4, the paper's)")
    g.add_argument("--retrain-epochs", type=int, default=0,
                   help="then train the searched model this many epochs with the same recipe (default: 0, none)")
    g.add_argument("--retrain-model", help="the model the directions are trained in (default: the supernet's "
                                           "name without _search, e.g. local_vim_tiny_cifar)")
    g.add_argument("--from-checkpoint", metavar="CKPT",
                   help="only derive directions.json and search.png from this supernet checkpoint")
    g.add_argument("--spec", metavar="FILE", help="no search: train the model of this directions.json (its "
                                                  "supernet's searched model, or --retrain-model) with the options")
    return p


def main(argv=None) -> dict:
    """The command: expected errors (an unknown supernet, a checkpoint that is not a supernet's, a bad spec)
    as one line on stderr and exit status 2, as the engine's commands."""
    return run_command(_main, PROG, argv)


def _main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    sp = search_parser()
    if "-h" in argv or "--help" in argv:
        print(sp.format_help())
        print(engine_config.build_parser().format_help().split("\n\n", 2)[2])  # the options, without usage and title
        raise SystemExit(0)
    known, rest = sp.parse_known_args(argv)
    try:
        if known.from_checkpoint:
            return _derive_only(known, rest)
        if known.spec:
            from .run import train_spec

            return train_spec(known.spec, rest, model=known.retrain_model)
        if known.supernet:
            rest += ["--model", known.supernet]
        elif "--config" not in rest and not any(a.startswith("--config=") for a in rest):
            sp.error("--supernet NAME is required (e.g. local_vim_tiny_cifar_search)")
        if known.retrain_epochs < 0:
            sp.error("--retrain-epochs must be >= 0")
        from .run import search

        return search(engine_config.parse_args(rest), k=known.k, retrain_epochs=known.retrain_epochs,
                      retrain_model=known.retrain_model)
    except DirectionSpecError as e:  # a spec that is not valid or does not fit the model
        raise ConfigError(str(e)) from None


def _derive_only(known, rest) -> dict:
    import json

    from .plots import load_history
    from .run import _figure, derive_from_checkpoint

    p = argparse.ArgumentParser(prog=f"{PROG} --from-checkpoint CKPT")
    p.add_argument("--output", required=True)
    p.add_argument("--model-kwargs", type=json.loads, default={})
    args = p.parse_args(rest)
    spec = derive_from_checkpoint(known.from_checkpoint, supernet=known.supernet, k=known.k,
                                  model_kwargs=args.model_kwargs)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    spec.save(out / "directions.json")
    metrics = Path(known.from_checkpoint).parent / "metrics.jsonl"
    try:
        history = load_history(metrics) if metrics.is_file() else None
    except ValueError:
        history = None
    _figure(spec, history, out / "search.png")
    print(f"{spec.model}: {known.k} directions per layer -> {out / 'directions.json'}")
    for i, d in enumerate(spec.directions):
        print(f"  layer {i:2d}: {', '.join(d)}")
    return {"directions": spec.directions, "spec": str(out / "directions.json")}


if __name__ == "__main__":
    main()
