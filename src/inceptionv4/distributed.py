"""torchrun-launched DDP: read the environment torchrun sets, NCCL on GPU, gloo on CPU."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """Where this process stands in a run: its rank of ``size`` processes and its device; the
    defaults are one process on the CPU."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")  # noqa: RUF009 (immutable)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launch_rank() -> int:
    """This process's rank as torchrun set it (0 when not launched by torchrun), readable before the
    group is joined: how the command line and logging decide that only rank 0 speaks."""
    return int(os.environ.get("RANK", "0"))


def init_distributed(device: str | None = None) -> World:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR...).

    Without those variables this is a single process. Multi-node runs need nothing more than
    torchrun's own rendezvous flags (``--nnodes``, ``--node-rank``, ``--rdzv-endpoint``).
    ``device``: None (a GPU if PyTorch sees one, else the CPU), "cpu", "cuda" or "cuda:N" (alone;
    under torchrun each process takes the GPU of its LOCAL_RANK), "mps"; already checked
    (:func:`~inceptionv4.devices.resolve_device`).
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = launch_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    use_cuda = dev.type == "cuda"
    if use_cuda and (size > 1 or dev.index is None):  # under torchrun the GPU of LOCAL_RANK; alone, the one asked
        dev = torch.device("cuda", local_rank)
    if use_cuda:
        torch.cuda.set_device(dev)
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return World(rank, local_rank, size, dev)


def all_reduce_sum(values: list[float], world: World) -> list[float]:
    """The element-wise sum of ``values`` over every process (float64), in every process."""
    if not world.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(t)
    return t.tolist()


def gather_objects(obj: object, world: World) -> list:
    """Every process's ``obj`` (picklable), in rank order, on every process."""
    if not world.distributed:
        return [obj]
    out: list = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def broadcast_flag(flag: bool, world: World) -> bool:
    """True on every rank if it is True on any (a SIGTERM seen by one process stops all)."""
    if not world.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=world.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def cleanup(world: World) -> None:
    """Leave the process group, if this process joined one."""
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
