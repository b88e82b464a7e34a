"""Data-parallel training on several processes, GPUs or machines with PyTorch's own tools.

Launch any training command with ``torchrun`` (one process per GPU, or per CPU socket)::

    torchrun --nproc_per_node=4 -m deeprnn train --model dts-rnn --data nottingham --out RUN

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`setup` joins the process
group (NCCL on GPUs, Gloo on CPUs) and the trainer wraps the model in
``DistributedDataParallel``. Each process reads its share of every global batch
(``deeprnn.data.batching``); gradients are averaged by DDP. Each process scores its share of
an evaluation split and the totals are summed (:func:`sum_across`), so all of them take the
same decisions (early stopping, halving); only process 0 writes the run folder. Resuming reads
``checkpoints/last.pt`` on every process, so the run folder must be on storage they all see.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def from_environment() -> World:
    """The process's place in a ``torchrun`` launch (one process when not launched by it)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as error:
        raise ValueError(f"WORLD_SIZE, RANK and LOCAL_RANK must be integers: {error}") from None
    return World(rank, size, local_rank)


def setup(world: World, device: torch.device) -> torch.device:
    """Join the process group; on GPUs each process takes the GPU ``LOCAL_RANK``."""
    if not world.distributed:
        return device
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK {world.local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
                "start at most that many processes per node (torchrun --nproc_per_node)"
            )
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def leave_process_group(finished: bool) -> None:
    """At the end of a command (runs and tables in one process group), leave the group.

    A command that ``finished`` first waits for the other processes, so none tears down its
    connections while another still uses them; one that failed leaves at once (the others may
    never come). A finished run lingers in reference cycles, holding the DDP wrapper and with it
    the group: it is collected here, before the group is destroyed, rather than at some later
    collection or at interpreter exit.
    """
    if dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
        gc.collect()
        dist.destroy_process_group()


def wait_for_all(world: World) -> None:
    """Hold every process here until all have come (nothing in one process): what the main
    process wrote before is then on disk for the others, which would otherwise look for a
    finished run's results.json before it exists and take the run for an interrupted one."""
    if world.distributed:
        dist.barrier()


def sum_across(values: list[float], world: World, device: torch.device) -> list[float]:
    """Element-wise sums over the processes (the values themselves in one process)."""
    if not world.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def gather(obj: object, world: World) -> list:
    """Every process's ``obj`` (CPU tensors and plain values), in rank order."""
    if not world.distributed:
        return [obj]
    out: list = [None] * world.size
    dist.all_gather_object(out, obj)
    return out
