"""torch.distributed for the trainer: one process per device, started by ``torchrun`` (or alone).

``torchrun`` sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous variables; without them the run is a
single process. NCCL on CUDA, gloo on CPU (so the multi-process path is tested on CPU in CI).

A rank that dies (killed, out of memory, an error of its own) closes its connections; the collective each
other rank is in, or enters next, then fails, and that failure is raised as a ``ConnectionError`` naming
this rank and the collective, so every rank stops with a reason instead of waiting (gloo notices at
once; NCCL within its watchdog timeout).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist

__all__ = ["World", "init_world", "all_reduce_sum", "barrier", "broadcast_object", "gather_lists", "shutdown"]


@dataclass(frozen=True)
class World:
    """rank, world_size, local_rank and the device this process trains on."""
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_world(device: str = "auto") -> World:
    """Join the process group when launched by torchrun; pick this process's device.

    ``device``: "auto" (CUDA when available), "cpu" or "cuda" (ValueError when CUDA is not available).
    """
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("run.device=cuda, but " + ("this torch is a CPU build" if torch.version.cuda is None
                                                    else "no CUDA device is visible"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", device_id=dev if use_cuda else None)
    return World(rank, world_size, local_rank, dev)


@contextmanager
def _peers(world: World, what: str) -> Iterator[None]:
    """Run a collective; a failure of the process group becomes a ConnectionError naming this rank."""
    try:
        yield
    except RuntimeError as exc:  # gloo/NCCL raise RuntimeError (DistBackendError) when a peer is gone
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConnectionError(f"rank {world.rank} of {world.world_size} stopped: {what} failed because another "
                              f"rank is gone (it died or was killed: see its log; torchrun names it and its exit "
                              f"code) [{detail[:200]}]") from exc


def all_reduce_sum(t: torch.Tensor, world: World, what: str = "an all-reduce") -> torch.Tensor:
    """Sum ``t`` over ranks in place (no-op for one process); returns ``t``."""
    if world.distributed:
        with _peers(world, what):
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(world: World, what: str = "a barrier") -> None:
    if world.distributed:
        with _peers(world, what):
            dist.barrier()


def broadcast_object(obj, world: World, what: str = "a broadcast from rank 0"):
    """Rank 0's ``obj`` on every rank."""
    if not world.distributed:
        return obj
    box = [obj]
    with _peers(world, what):
        dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_lists(items: list, world: World, what: str = "a gather") -> list:
    """Every rank's ``items`` concatenated in rank order (on every rank)."""
    if not world.distributed:
        return list(items)
    boxes = [None] * world.world_size
    with _peers(world, what):
        dist.all_gather_object(boxes, list(items))
    return [x for box in boxes for x in box]


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
