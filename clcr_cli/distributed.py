"""Multi-process training on PyTorch's own engine (``torchrun``): what each rank needs.

``clcr train --nproc N`` (or ``torchrun --nproc-per-node N -m clcr_cli train ...``) starts
N processes; :func:`setup` joins them into one process group (gloo on CPU, nccl on GPUs).
Every rank walks the same seeded order of global batches and takes its rows of each
(:func:`shard`): the role of a ``DistributedSampler``, at the level of the batch, so that
with DDP's gradient averaging a step sees exactly the global batch a single process would.

Collectives take their tensors on the backend's device (:func:`collective_device`: the
rank's GPU under nccl, which refuses CPU tensors). A rank that fails must not leave the
others waiting for it: what every rank does before a collective step goes through
:func:`agree` (all ranks at once) or :func:`main_first` (rank 0, then the others), whose
:func:`checked_barrier` raises on every rank the failing rank's one line.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from clcr_cli.errors import ClcrError, environment_error
from clcr_cli.model.batch import Batch
from clcr_cli.model.errors import ModelConfigError

T = TypeVar("T")


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
        atexit.register(_leave)
    rank, world = dist.get_rank(), dist.get_world_size()
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    return Dist(rank, world, device)


def _leave() -> None:
    """Leave the process group at exit, whichever way the process ends: a group left to
    the C++ destructors can abort it while a peer exits too (gloo: "terminate called
    without an active exception", SIGABRT)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()


def collective_device() -> torch.device:
    """Where the process group's collectives take their tensors: this rank's GPU under
    nccl (which refuses CPU tensors), the CPU under gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def one_line(error: BaseException) -> str:
    """``error`` as the CLI would print it: a ClcrError's (or the model's) own message, a
    failing filesystem call as ``environment_error`` words it, else type and message."""
    if isinstance(error, ClcrError | ModelConfigError):
        text = str(error)
    elif isinstance(error, OSError):
        text = str(environment_error(error))
    else:
        text = f"{type(error).__name__}: {error}"
    return " ".join(text.split())


def checked_barrier(d: Dist, error: BaseException | None = None) -> None:
    """A barrier that also tells every rank whether any rank failed before it.

    Every rank calls it at the same point, with what failed there on this rank (None:
    nothing). If any rank failed, every rank raises a :class:`ClcrError` with the first
    failing rank's one line (``rank 1: <message>``, chained to this rank's own error),
    so that no rank waits for one that will never come; a rank that ended without a word
    (killed, crashed) is one line too, where the backend notices (gloo does at once). In
    a single process it raises ``error`` itself, if given.
    """
    if not d.active:
        if error is not None:
            raise error
        return
    messages: list[str | None] = [None] * dist.get_world_size()
    try:
        dist.all_gather_object(messages, None if error is None else one_line(error))
    except RuntimeError as exc:  # gloo: "Connection closed by peer"
        problem = "another rank ended before this check without saying why (see its output)"
        raise ClcrError(f"rank {d.rank}: {one_line(error)}" if error else problem) from exc
    failed = [(rank, message) for rank, message in enumerate(messages) if message is not None]
    if failed:
        rank, message = failed[0]
        others = f" (and {len(failed) - 1} other ranks)" if len(failed) > 1 else ""
        raise ClcrError(f"rank {rank}: {message}{others}") from error


def agree(d: Dist, fn: Callable[[], T]) -> T:
    """``fn()`` on every rank, then a :func:`checked_barrier`: its result where it
    succeeded on every rank, else the first failing rank's error raised on all of them."""
    try:
        result = fn()
    except Exception as exc:
        checked_barrier(d, exc)
        raise  # a single process: checked_barrier raised exc
    checked_barrier(d)
    return result


def main_first(d: Dist, fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0, then on the other ranks (rank 0 extracts, say, and the others
    find it done); a failure on any rank is raised on every rank (:func:`checked_barrier`),
    so no rank waits for rank 0's work after rank 0 has failed, nor rank 0 for the others."""
    if d.main:
        result = agree(d, fn)
        checked_barrier(d)  # the others' turn
        return result
    checked_barrier(d)  # rank 0's turn
    return agree(d, fn)


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
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=collective_device())
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist(), strict=True))
