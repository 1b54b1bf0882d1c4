"""DistributedDataParallel set-up for runs launched by ``torchrun``.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``
in each process. When they say there is more than one process, :func:`setup` joins the process
group (NCCL on CUDA, one GPU per process chosen by ``LOCAL_RANK``; gloo on the CPU). Outside
``torchrun`` everything here is a no-op on one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from napari_pclesr.devices import select_device

__all__ = ["DistributedContext", "setup", "teardown"]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        """More than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """This process writes checkpoints and reports (rank 0)."""
        return self.rank == 0

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the processes in place (nothing to do on one process)."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` is true on at least one process (so that all stop together)."""
        if not self.enabled:
            return flag
        value = torch.tensor([float(flag)], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def gather_objects(self, value) -> list:
        """Every process's ``value``, in rank order (a list of one on a single process)."""
        if not self.enabled:
            return [value]
        values = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        """Wait for every process."""
        if self.enabled:
            dist.barrier()


def launched_by_torchrun() -> bool:
    """Whether the environment describes a multi-process run (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def setup(device_request: str = "auto") -> tuple[DistributedContext, torch.device]:
    """Join the process group if launched by ``torchrun``, and choose this process's device.

    Under ``torchrun`` with ``device_request`` "auto" or "cuda", each process takes the GPU
    ``cuda:LOCAL_RANK`` (NCCL); with "cpu", or without CUDA, processes run on the CPU (gloo).
    A process group that is already initialised is used as it is (and not torn down).

    Returns
    -------
    context : DistributedContext
    device : torch.device
    """
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        return DistributedContext(rank, world, local, False), _process_device(device_request, local)
    if not launched_by_torchrun():
        return DistributedContext(), select_device(device_request)
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; run a single process.")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = _process_device(device_request, local)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local, True), device


def teardown(context: DistributedContext) -> None:
    """Leave the process group if :func:`setup` created it."""
    if context.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def _process_device(request: str, local_rank: int) -> torch.device:
    request = str(request).strip().lower()
    if request in ("auto", "cuda") and torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"process with LOCAL_RANK {local_rank} has no GPU: this machine has "
                f"{torch.cuda.device_count()}; start at most that many processes per node."
            )
        return torch.device("cuda", local_rank)
    if request == "auto":
        return torch.device("cpu")  # MPS has no multi-process backend
    return select_device(request)
