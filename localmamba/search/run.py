"""The search workflow on the training engine: supernet -> probabilities every epoch -> directions.json
and figures -> (optionally) the derived model trained with the same recipe.

Output folder (``config.output``)::

    supernet/            the engine's run of the supernet (metrics.jsonl with ``direction_probs`` per epoch,
                         last.pth, best.pth, summary.json): resumable like any training run
    directions.json      the derived DirectionSpec (top-k per layer, with the final probabilities)
    search.png           heatmap with the chosen cells, and each layer's probabilities over the epochs
    retrain/             the engine's run of the searched model (``retrain_epochs`` > 0)
    search_summary.json  both accuracies, the spec, the commands' options
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from ..engine import checkpoint as engine_checkpoint
from ..engine import train as engine_train
from ..engine.checkpoint import CheckpointError
from ..engine.config import ConfigError
from ..engine.model import create_model
from .derive import derive, spec_from_probabilities
from .plots import PROBS_FIELD, load_history, plot_search
from .supernet import candidates as supernet_candidates
from .supernet import family as model_family
from .supernet import is_supernet, probabilities, probabilities_from_state_dict, search_layers

__all__ = ["SUPERNETS", "searched_model_name", "check_supernet", "search", "train_spec", "derive_from_checkpoint"]

#: supernet -> the registered model of the same family and depth that its directions are for
SUPERNETS = {
    "local_vim_tiny_search": "local_vim_tiny",
    "local_vssm_tiny_search": "local_vssm_tiny",
    "local_vssm_small_search": "local_vssm_small",
    "local_vim_tiny_cifar_search": "local_vim_tiny_cifar",
    "local_vssm_tiny_cifar_search": "local_vssm_tiny_cifar",
}


def searched_model_name(supernet: str) -> str:
    """The model a supernet's derived directions are trained in (its name without ``_search`` otherwise)."""
    return SUPERNETS.get(supernet, supernet.removesuffix("_search"))


def _build(name: str, **kwargs) -> nn.Module:
    import timm

    from .. import models  # noqa: F401  (registers the families)

    return timm.create_model(name, **kwargs)


def check_supernet(name: str, model_kwargs: Optional[dict] = None) -> nn.Module:
    """The supernet ``name`` built on the CPU (fresh weights); a clear ConfigError (a ValueError) unless ``name`` is
    a registered supernet (a model whose layers are all search layers)."""
    import timm

    from .. import models  # noqa: F401

    if name not in timm.list_models():
        close = difflib.get_close_matches(name, list(SUPERNETS) + timm.list_models("*local*"), n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise ConfigError(f"unknown supernet {name!r}{hint} (supernets: {', '.join(SUPERNETS)})")
    model = None if name not in SUPERNETS and not name.endswith("_search") else _build(name, **(model_kwargs or {}))
    if model is None or not is_supernet(model):
        raise ConfigError(f"{name!r} is not a supernet (its layers have fixed directions); search one of "
                         f"{', '.join(SUPERNETS)}")
    return model


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def log_probabilities(epoch: int, model: nn.Module) -> dict:
    """The engine hook (``Hooks.epoch_metrics``): the supernet's probabilities as ``direction_probs`` in every
    epoch's row of metrics.jsonl, (layers, K) as lists."""
    return {PROBS_FIELD: [[round(p, 6) for p in r] for r in probabilities(model).tolist()]}


def _load_supernet(run_dir: Path) -> nn.Module:
    """The supernet of an engine run, with the weights of its last checkpoint (the architecture parameters
    of the model itself, not of an EMA)."""
    path = run_dir / "last.pth"
    ckpt = engine_checkpoint.load_checkpoint(path)
    if not engine_checkpoint.is_engine_checkpoint(ckpt):
        raise CheckpointError(f"{path} is not a training checkpoint of this engine")
    cfg = ckpt["config"]
    model = create_model(cfg["model"], ckpt["num_classes"], drop_path=cfg.get("drop_path"),
                         img_size=cfg.get("img_size"), **cfg.get("model_kwargs", {}))
    model.load_state_dict(ckpt["model"])
    return model


def _figure(spec, history, out: Path, reference=None) -> None:
    try:
        import matplotlib
        import matplotlib.pyplot as plt
    except ImportError:  # a training machine without the notebooks extra: the spec and metrics hold the data
        print(f"matplotlib is not installed: no {out.name} (pip install matplotlib, then --from-checkpoint)")
        return

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        plt.switch_backend("agg")
    fig = plot_search(spec, history=history, reference=reference, title=f"{spec.model}: direction probabilities")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"figure -> {out}", flush=True)


def search(config, k: int = 4, retrain_epochs: int = 0, retrain_model: Optional[str] = None) -> dict:
    """Train the supernet ``config.model`` with the engine (every option of ``config`` applies: resume, DDP,
    AMP, ...), derive its top-``k`` directions into ``directions.json`` and ``search.png`` under
    ``config.output``, then, with ``retrain_epochs`` > 0, train the searched model (``retrain_model``,
    default :func:`searched_model_name`) with the same recipe for that many epochs. Returns (and writes
    as ``search_summary.json``) both runs' summaries and the spec."""
    n_candidates = len(supernet_candidates(check_supernet(config.model, config.model_kwargs)))
    if not 1 <= k <= n_candidates:
        raise ConfigError(f"--k {k}: a layer keeps 1 to {n_candidates} of its {n_candidates} candidates")
    out = Path(config.output)
    sup_cfg = dataclasses.replace(config, output=str(out / "supernet"))
    sup = engine_train.train(sup_cfg, hooks=engine_train.Hooks(epoch_metrics=log_probabilities))
    spec = derive(_load_supernet(out / "supernet"), k=k, model_name=config.model)
    result = {"supernet": config.model, "k": k, "directions": spec.directions, "supernet_summary": _brief(sup),
              "spec": str(out / "directions.json"), "retrain_summary": None}
    if _is_main():
        spec.save(out / "directions.json")
        print(f"directions ({k} of {n_candidates} per layer) -> {out / 'directions.json'}", flush=True)
        _figure(spec, load_history(out / "supernet"), out / "search.png")
    if retrain_epochs and not sup["finished"]:
        print("the supernet has not finished its epochs (--stop-after): continue it with --resume auto "
              "before retraining", flush=True)
    elif retrain_epochs:
        target = retrain_model or searched_model_name(config.model)
        kwargs = {**config.model_kwargs, "directions": [list(d) for d in spec.directions]}
        re_cfg = dataclasses.replace(config, model=target, epochs=retrain_epochs, model_kwargs=kwargs,
                                     output=str(out / "retrain"))
        result["retrain_model"] = target
        result["retrain_summary"] = _brief(engine_train.train(re_cfg))
    if _is_main():
        engine_checkpoint.write_text_atomic(out / "search_summary.json", json.dumps(result, indent=2))
        s, r = result["supernet_summary"], result["retrain_summary"]
        line = f"supernet {config.model}: top-1 {_pct(s['last_top1'])} after {s['epochs']} epochs"
        if r is not None:
            line += f" | searched {result['retrain_model']}: top-1 {_pct(r['last_top1'])} after {r['epochs']} epochs"
        print(line, flush=True)
    return result


def train_spec(spec_path: str | os.PathLike, argv: list[str], model: Optional[str] = None) -> dict:
    """Train the model of a direction spec (``model``, default the searched model of the supernet it names) with
    the engine options ``argv`` (``--model`` is set here); returns the engine's summary."""
    from ..engine.config import parse_args
    from ..models.directions import DirectionSpec

    spec = DirectionSpec.load(spec_path)
    if model is None and not spec.model:
        raise ConfigError(f"{spec_path} names no model it came from: say which model to train (--retrain-model)")
    config = parse_args([*argv, "--model", model or searched_model_name(spec.model)])
    config.model_kwargs = {**config.model_kwargs, "directions": spec.directions}
    return engine_train.train(config)


def _pct(v) -> str:
    return "-" if v is None else f"{v:.2f}%"


def _brief(summary: dict) -> dict:
    keys = ("model", "epochs", "finished", "params", "last_top1", "best_top1", "last_top5", "total_time",
            "images_per_sec", "output")
    return {k: summary.get(k) for k in keys}


def derive_from_checkpoint(path: str | os.PathLike, supernet: Optional[str] = None, k: int = 4,
                           model_kwargs: Optional[dict] = None):
    """A DirectionSpec from a supernet checkpoint: one of this engine (``last.pth``: the supernet's name is in
    it) or a state dict (ours or the original's, e.g. its search checkpoints; ``supernet`` names the model)."""
    from ..models import read_state_dict

    ckpt = engine_checkpoint.load_checkpoint(path)
    if engine_checkpoint.is_engine_checkpoint(ckpt):
        supernet = supernet or ckpt["config"]["model"]
        model_kwargs = {**ckpt["config"].get("model_kwargs", {}), **(model_kwargs or {})}
        sd = ckpt["model"]
    else:
        if supernet is None:
            raise ConfigError(f"{path} does not say which model it holds: name its supernet (--supernet)")
        sd = read_state_dict(path)
    try:
        probs = probabilities_from_state_dict(sd)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    model = check_supernet(supernet, model_kwargs)
    cands = supernet_candidates(model)
    n_layers = len(search_layers(model))
    if tuple(probs.shape) != (n_layers, len(cands)):
        raise CheckpointError(f"{path} has {probs.shape[0]} search layers of {probs.shape[1]} candidates; "
                         f"{supernet} has {n_layers} of {len(cands)}: name the supernet it was trained as")
    return spec_from_probabilities(probs, cands, model_family(model), supernet, k)
