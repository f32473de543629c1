"""Training on several processes or machines with torch.distributed (DistributedDataParallel).

Started by `torchrun` (which sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), e.g.

    torchrun --standalone --nproc_per_node 2 -m tangshi train --data ... --out runs/ddp

Each global batch (the same batches, in the same order, as one process with that --batch-size) is
dealt out across the ranks, poem i of the batch going to rank i mod world. Every rank's loss is its
sum of per-token losses divided by the global batch's token count times the world size, so that
DDP's gradient average is exactly the one-process gradient. gloo on CPU, nccl on CUDA (one GPU a
rank, chosen by LOCAL_RANK). Rank 0 alone writes checkpoints, metrics and the loss curve.
"""

from __future__ import annotations

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
    def active(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def sum(self, *values: float) -> list[float]:
        """Element-wise sum over the ranks (the values themselves on one process)."""
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
        dist.all_reduce(t)
        return t.tolist()

    def from_main(self, value: str) -> str:
        """Rank 0's value of a short string, on every rank."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return str(box[0])


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def world_from_env() -> World:
    """The World described by torchrun's environment; one process when WORLD_SIZE is unset or 1."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))


def init(device_type: str) -> World:
    """Join the process group torchrun describes (gloo for CPU, nccl for CUDA)."""
    world = world_from_env()
    if world.active and not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return world


def shutdown(world: World) -> None:
    if world.active and dist.is_initialized():
        dist.destroy_process_group()
