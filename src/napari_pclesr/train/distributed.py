"""DistributedDataParallel set-up for runs launched by ``torchrun``.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``
in each process. When they say there is more than one process, :func:`setup` joins the process
group (NCCL on CUDA, one GPU per process chosen by ``LOCAL_RANK``; gloo on the CPU). Outside
``torchrun`` everything here is a no-op on one process.

Variables left over in a shell (``WORLD_SIZE=2 RANK=0`` without the other process) would make
torch wait 30 minutes for processes that never come. Joining is therefore bounded by
``PCLESR_RENDEZVOUS_TIMEOUT`` seconds (default :data:`RENDEZVOUS_TIMEOUT_S`); the collective
operations of the run keep torch's own, longer timeout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from napari_pclesr.devices import select_device

__all__ = ["RENDEZVOUS_TIMEOUT_S", "DistributedContext", "setup", "teardown"]

#: Seconds to wait for all processes to join (``PCLESR_RENDEZVOUS_TIMEOUT`` overrides it).
RENDEZVOUS_TIMEOUT_S = 30.0


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
    store, rank, world = _rendezvous()
    dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world)
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local, True), device


def _rendezvous():
    """Meet the other processes through ``MASTER_ADDR:MASTER_PORT``, within the timeout.

    Returns the store, this process's rank and the world size, for ``init_process_group``.

    Raises
    ------
    ValueError
        If a variable is missing or the timeout is not a positive number.
    TimeoutError
        If not all processes joined in time.
    """
    from torch.distributed.constants import default_pg_timeout

    world, rank = os.environ["WORLD_SIZE"], os.environ["RANK"]
    fix = (
        "Start multi-process training with torchrun (e.g. torchrun --standalone "
        f"--nproc_per_node={world} $(which pclesr) train ...), or unset WORLD_SIZE and RANK to "
        "train in one process."
    )
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={world} and RANK={rank} are set, as for one of {world} processes, but "
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not. {fix}"
        )
    timeout = _rendezvous_timeout()
    address = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    try:
        store, rank_number, world_size = next(
            dist.rendezvous("env://", timeout=timedelta(seconds=timeout))
        )
    except (RuntimeError, OSError) as exc:  # DistStoreError (a RuntimeError), refused, ...
        raise TimeoutError(
            f"WORLD_SIZE={world} and RANK={rank} are set, but the {world} processes did not all "
            f"meet at {address} within {timeout:g} s ({str(exc).splitlines()[0]}). {fix}"
        ) from exc
    store.set_timeout(default_pg_timeout)  # the run's own operations may take longer
    return store, rank_number, world_size


def _rendezvous_timeout() -> float:
    text = os.environ.get("PCLESR_RENDEZVOUS_TIMEOUT", str(RENDEZVOUS_TIMEOUT_S))
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:
        raise ValueError(
            f"PCLESR_RENDEZVOUS_TIMEOUT must be a number of seconds > 0, got {text!r}."
        )
    return seconds


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
