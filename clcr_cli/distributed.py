"""Multi-process training on PyTorch's own engine (``torchrun``): what each rank needs.

``clcr train --nproc N`` (or ``torchrun --nproc-per-node N -m clcr_cli train ...``) starts
N processes; :func:`setup` joins them into one process group (gloo on CPU, nccl on GPUs).
Every rank walks the same seeded order of global batches and takes its rows of each
(:func:`shard`): the role of a ``DistributedSampler``, at the level of the batch, so that
with DDP's gradient averaging a step sees exactly the global batch a single process would.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from clcr_cli.model.batch import Batch


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: str = "cpu"

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``clcr <argv>`` under torchrun with ``nproc`` processes on this machine.

    ``argv`` is the command line after ``clcr``; its ``--nproc`` option is dropped.
    Returns torchrun's exit code.
    """
    import subprocess
    import sys

    args, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            args.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    return subprocess.call([*cmd, "-m", "clcr_cli", *args])


def launched() -> bool:
    """True inside a process started by torchrun with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str) -> Dist:
    """Join the process group when launched by torchrun; otherwise a single process."""
    if not launched():
        return Dist(device=device)
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    return Dist(rank, world, device)


def barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()


def shard(batch: Batch, d: Dist) -> Batch:
    """This rank's rows of a global batch: rows rank, rank + world, ..."""
    if not d.active:
        return batch

    def take(x: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
        return None if x is None else {k: v[d.rank :: d.world] for k, v in x.items()}

    return Batch(
        inputs=take(batch.inputs),
        lengths=take(batch.lengths),
        target=None if batch.target is None else batch.target[d.rank :: d.world],
        present=take(batch.present),
    )


def all_sum(values: dict[str, float], d: Dist) -> dict[str, float]:
    """Sum a dict of numbers over ranks (identity in a single process)."""
    if not d.active:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist(), strict=True))
