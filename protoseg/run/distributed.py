"""Dataset-scale ``run`` and ``eval`` on torch.distributed: ``torchrun --nproc-per-node N -m protoseg run|eval``.

Each process takes every N-th image (rank, rank + N, ...), so the union is the whole list in order and no image
is done twice; ``eval`` sums the processes' confusion matrices (an all-reduce), so N processes give exactly the
mIoU of one. The backend is gloo on CPU and NCCL on CUDA; outside torchrun (no ``WORLD_SIZE`` > 1) everything
runs in the one process and torch.distributed is never touched.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Sequence, TypeVar

import numpy as np
import torch

from protoseg.errors import ProtosegError

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This process's share of ``items``: every ``size``-th, starting at ``rank``."""
        return list(items[self.rank::self.size])

    def sum(self, array: np.ndarray) -> np.ndarray:
        """The element-wise sum of an integer ``array`` over all processes (every process gets it)."""
        return self._reduce(array, "SUM")

    def max(self, array: np.ndarray) -> np.ndarray:
        """The element-wise maximum of an integer ``array`` over all processes."""
        return self._reduce(array, "MAX")

    def _reduce(self, array: np.ndarray, op: str) -> np.ndarray:
        if self.size == 1:
            return array
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))
        if torch.distributed.get_backend() == "nccl":
            tensor = tensor.cuda()
        torch.distributed.all_reduce(tensor, getattr(torch.distributed.ReduceOp, op))
        return tensor.cpu().numpy()


def world(device: str = "cpu") -> World:
    """The process group torchrun set up through its environment, joined once; a World of one otherwise."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    import torch.distributed as dist

    if not dist.is_initialized():
        cuda = torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        try:
            dist.init_process_group("nccl" if cuda else "gloo")
        except (RuntimeError, ValueError) as e:
            raise ProtosegError(f"cannot join the torchrun process group ({e}); start with torchrun "
                                "--nproc-per-node N -m protoseg ...") from None
        atexit.register(_leave)
    return World(dist.get_rank(), dist.get_world_size())


def _leave() -> None:
    """Leave the process group before the interpreter ends: gloo's threads still running at teardown abort the
    process ("terminate called without an active exception") after its work is done."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
