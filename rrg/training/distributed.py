"""Where `rrg train` runs: one process on a laptop or one GPU, or one rank of many under `torchrun`.

torch.distributed does the work (`torchrun --nproc_per_node N [--nnodes M ...] -m rrg train ...`):
torchrun starts the ranks and sets RANK, WORLD_SIZE and LOCAL_RANK; `Ranks.from_environment` joins the
process group (NCCL on CUDA, gloo on the CPU) and picks the rank's device. The training loop shards
each global batch over the ranks (`shard`), wraps the trainable modules in DistributedDataParallel
(`rrg.training.loop`), and only rank 0 writes files (`main`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

BARRIER_TIMEOUT = timedelta(hours=6)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`training.device` as a torch device: auto is cuda when present, else cpu; under torchrun a
    rank's cuda is cuda:LOCAL_RANK unless the config names an index."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"training.device is {name!r} but torch sees no CUDA device; use auto or cpu")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    return torch.device("cpu")


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes checkpoints, logs and the bundle, and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @classmethod
    def from_environment(cls, device: str) -> Ranks:
        """Join torchrun's process group when WORLD_SIZE > 1 (once per process); else a single process."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(device=resolve_device(device))
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        where = resolve_device(device, local_rank)
        if where.type == "cuda":
            torch.cuda.set_device(where)
        if not dist.is_initialized():
            # Rank 0 alone builds the image cache and the drafting setup while the others wait at a barrier:
            # hours for MIMIC-CXR's image cache on few cores, far past the default 10-minute timeout.
            dist.init_process_group("nccl" if where.type == "cuda" else "gloo", timeout=BARRIER_TIMEOUT)
        return cls(rank, world, local_rank, local_world, where)

    def shard(self, batch: np.ndarray) -> np.ndarray:
        """This rank's part of a global batch: the ranks' parts are disjoint, in order, and cover it."""
        if len(batch) < self.world:
            raise ValueError(f"a global batch of {len(batch)} cannot be shared by {self.world} ranks")
        return np.array_split(batch, self.world)[self.rank]

    def barrier(self) -> None:
        """Wait for every rank (after rank 0 wrote what the others read next)."""
        if self.distributed:
            dist.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of `values` over the ranks (the values themselves in one process)."""
        if not self.distributed or not values:
            return values
        total = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return total.cpu().tolist()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()
