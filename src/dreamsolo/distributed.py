"""Data-parallel training: a training stage runs as N processes under `accelerate launch` (torchrun
underneath, DDP over gloo on CPU or NCCL on GPUs) when `DREAMSOLO_NPROC=N` is set.

An environment variable, not a params key: the number of processes is a property of the machine, and it
does not change the result. `train.batch_size` stays the global batch; each of N processes trains on
batch_size / N of its rows (every process draws the whole batch from the same seeded generator, and
DDP averages the gradients), so N processes make the steps one process makes, within float tolerance,
and nothing needs to rerun. Only rank 0 logs to MLflow, checkpoints and writes the stage's outputs. Imports no torch at module level (the stage wrapper calls `relaunch` first).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from dreamsolo.errors import UserError

NPROC_ENV = "DREAMSOLO_NPROC"
STAGES = ("train_scene", "train_instance", "train_arm")  # the stages that train


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process's place, from the variables torchrun sets (one process: rank 0 of 1)."""
    env = os.environ
    return World(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def requested() -> int:
    raw = os.environ.get(NPROC_ENV, "").strip() or "1"
    if not raw.isdigit() or int(raw) < 1:
        raise UserError(f"{NPROC_ENV}={raw!r}: expected a number of processes (1, 2, 8, ...)")
    return int(raw)


def launch_argv(n: int, argv: list[str]) -> list[str]:
    """`accelerate launch` of the same stage script on n processes of this machine."""
    accelerate = Path(sys.executable).with_name("accelerate")
    return [str(accelerate), "launch", "--multi_gpu", "--num_processes", str(n), "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", *argv]


def relaunch(stage: str) -> None:
    """In a training stage's first process, when N > 1 processes are asked for: become the launcher of
    N processes running the same command (the warm server off: each rank is a fresh interpreter)."""
    n = requested()
    if stage not in STAGES or n == 1 or world().size > 1:
        return
    os.environ["DREAMSOLO_WARM"] = "0"
    argv = launch_argv(n, [sys.argv[0], *sys.argv[1:]])
    sys.stdout.flush()
    os.execv(argv[0], argv)


def check(batch_size: int, evaluates: bool, w: World, desc: str) -> None:
    if w.size == 1:
        return
    if batch_size % w.size:
        raise UserError(f"{desc}: train.batch_size {batch_size} (the global batch) does not split over "
                        f"{NPROC_ENV}={w.size} processes: set it to a multiple of {w.size}")
    if evaluates:  # the step evaluations and the adaptive stop run in one process
        raise UserError(f"{desc}: eval_every (and stop: adaptive) with {NPROC_ENV}={w.size} is not "
                        "supported: unset one of them")


def init(dev) -> World:
    """Join the process group (once) when this process is one of several."""
    import torch.distributed as dist

    w = world()
    if w.size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return w


def finish(w: World) -> None:
    """Leave the process group once the last collective has run (rank 0 then writes alone)."""
    import torch.distributed as dist

    if w.size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def wrap(module, dev):
    """The module as DDP trains it (gradients averaged over the processes in backward)."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[dev.index] if dev.type == "cuda" else None)


def rows(n_groups: int, b: int, w: World):
    """This rank's rows of a global batch of `n_groups` contiguous blocks of size b·w.size each."""
    import torch

    big = b * w.size
    return torch.cat([torch.arange(g * big + w.rank * b, g * big + (w.rank + 1) * b) for g in range(n_groups)])


def mean_over_ranks(values: dict[str, float], dev) -> dict[str, float]:
    """The loss terms as one process would log them: the mean of the ranks' means (equal-size shards)."""
    import torch
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return {k: float(v) / dist.get_world_size() for k, v in zip(keys, t.tolist())}
