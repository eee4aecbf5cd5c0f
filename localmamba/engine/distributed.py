"""Process-group helpers for ``torchrun`` (one process per device) and a launcher for notebooks.

Under ``torchrun`` the environment carries ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; without them
everything runs in one process and the collectives below are no-ops. The backend is NCCL on CUDA
and gloo on CPU.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """'auto' -> cuda:LOCAL_RANK when CUDA is available, else cpu; 'cuda' -> cuda:LOCAL_RANK."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{local_rank}"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
        torch.cuda.set_device(dev)
    return dev


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (if any) and pick the
    device of this process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kw = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend, **kw)
    return DistInfo(rank, local_rank, world, dev)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce(t: torch.Tensor, op=None) -> torch.Tensor:
    """Sum (or ``op``) a tensor over ranks, in place; returns it."""
    if dist.is_initialized():
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t


def all_gather_object(obj) -> list:
    """Every rank's ``obj`` in rank order (``[obj]`` in one process)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


# ----------------------------------------------------------------------------------------------
# Launching torchrun from Python (notebooks)
# ----------------------------------------------------------------------------------------------
def torchrun_command(args: Sequence[str], nproc_per_node: int = 1, nnodes: int = 1, node_rank: int = 0,
                     master_addr: str = "127.0.0.1", master_port: int = 29500,
                     module: str = "localmamba.train") -> list[str]:
    """``python -m torch.distributed.run ... -m MODULE ARGS`` (what the ``torchrun`` script runs),
    with the interpreter of this process, so it works inside a virtual environment."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc_per_node}"]
    if nnodes > 1:
        cmd += [f"--nnodes={nnodes}", f"--node_rank={node_rank}", f"--master_addr={master_addr}",
                f"--master_port={master_port}"]
    else:
        cmd += ["--standalone"]
    return cmd + ["-m", module, *map(str, args)]


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``metrics.jsonl`` file (empty list when it does not exist yet)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written right now
                break
    return rows


def launch(cmd: Sequence[str], output: str | os.PathLike, epochs: Optional[int] = None,
           log_name: str = "launch.log", poll_s: float = 1.0, env: Optional[dict] = None) -> list[dict]:
    """Run ``cmd`` (e.g. from :func:`torchrun_command`), its output going to ``output/log_name``,
    while a tqdm bar follows the epochs written to ``output/metrics.jsonl``. Returns the metrics rows;
    raises ``RuntimeError`` with the log's tail if the command fails."""
    from tqdm.auto import tqdm

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    metrics, log = output / "metrics.jsonl", output / log_name
    seen = len(read_metrics(metrics))
    env = {**os.environ, **(env or {})}
    with open(log, "w") as f, tqdm(total=epochs, desc="epochs", unit="epoch") as bar:
        proc = subprocess.Popen(list(cmd), stdout=f, stderr=subprocess.STDOUT, env=env)
        while True:
            done = proc.poll() is not None
            rows = read_metrics(metrics)
            for r in rows[seen:]:
                bar.update(1)
                bar.set_postfix(loss=r.get("train_loss"), top1=r.get("top1"))
            seen = max(seen, len(rows))
            if done:
                break
            time.sleep(poll_s)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise RuntimeError(f"command exited with {proc.returncode}: {' '.join(cmd)}\n--- {log} (tail) ---\n{tail}")
    return read_metrics(metrics)
