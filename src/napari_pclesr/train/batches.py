"""Batches from precomputed patch tensors: sharding, seeded order, augmentation, transfer.

All training patches are normalised and cut once (see :mod:`napari_pclesr.data.patches`) and
held as tensors, so a step only indexes them; no worker processes are needed to keep a GPU busy.
On CUDA the patches live on the GPU when they take less than a quarter of its free memory;
otherwise they stay in pinned host memory and each batch is gathered into one of two pinned
buffers and copied with ``non_blocking=True``, overlapping the copy with computation.
"""

from __future__ import annotations

import math

import torch

__all__ = ["PatchSampler", "dihedral_augment"]

# Fraction of the free GPU memory the training patches may take before they stay on the host.
_DEVICE_MEMORY_SHARE = 0.25


def dihedral_augment(
    batches: tuple[torch.Tensor, ...],
    generator: torch.Generator,
    *,
    flips: bool,
    rot90: bool,
) -> tuple[torch.Tensor, ...]:
    """Apply the same random flips / 90° rotations to each sample of aligned batches.

    Each sample gets its own transform: a horizontal and a vertical flip with probability 1/2
    each (``flips``) and a rotation by a uniform multiple of 90° (``rot90``); with both, the
    eight symmetries of the square are equally likely. The random numbers come from
    ``generator`` (on the CPU) so that the draws are reproducible and resumable.

    Parameters
    ----------
    batches : tuple of tensors (B, C, H, W)
        Aligned batches (e.g. LR and HR patches; square, sizes may differ).
    generator : torch.Generator
    flips, rot90 : bool
    """
    if not (flips or rot90):
        return batches
    count = batches[0].shape[0]
    codes = torch.randint(0, 16, (count,), generator=generator)
    if not flips:
        codes &= 0b1100
    if not rot90:
        codes &= 0b0011
    results = [batch.clone() for batch in batches]
    # One pass per distinct transform over the samples that drew it (at most 16 small groups).
    for code in torch.unique(codes).tolist():
        if code == 0:
            continue
        chosen = torch.nonzero(codes == code).squeeze(1).to(batches[0].device)
        for batch, result in zip(batches, results, strict=True):
            result[chosen] = _transform(batch.index_select(0, chosen), code)
    return tuple(results)


def _transform(batch: torch.Tensor, code: int) -> torch.Tensor:
    """Bit 0: flip left-right; bit 1: flip up-down; bits 2-3: quarter turns."""
    if code & 1:
        batch = batch.flip(-1)
    if code & 2:
        batch = batch.flip(-2)
    return torch.rot90(batch, code >> 2, (-2, -1)) if code >> 2 else batch


class PatchSampler:
    """Endless seeded batches from this process's shard of the training patches.

    With ``world_size`` processes, the patches are permuted with a seed shared by all
    processes and process ``rank`` takes every ``world_size``-th one, so the shards are
    disjoint and equally large (a remainder of fewer than ``world_size`` patches is left out).
    An *epoch* is one pass over the shard in a new random order (batches never straddle
    epochs; a shard smaller than a batch is repeated within the epoch).

    Parameters
    ----------
    lr, hr : torch.Tensor (N, 1, p, p) and (N, 1, s·p, s·p)
        All training patches, on the CPU.
    batch_size : int
    device : torch.device
        Where batches are delivered.
    seed : int
    rank, world_size : int
    flips, rot90 : bool
        Augmentation, see :func:`dihedral_augment`.
    """

    def __init__(
        self,
        lr: torch.Tensor,
        hr: torch.Tensor,
        batch_size: int,
        device: torch.device,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        flips: bool = False,
        rot90: bool = False,
    ):
        total = lr.shape[0]
        if total < world_size:
            raise ValueError(
                f"{total} training patches cannot be shared by {world_size} processes; use "
                "more data, a smaller patch size, or fewer processes."
            )
        shuffle = torch.Generator().manual_seed(seed)
        self.shard = torch.randperm(total, generator=shuffle)[rank::world_size][
            : total // world_size
        ]
        self.batch_size = int(batch_size)
        self.device = device
        self.flips, self.rot90 = flips, rot90
        self.iterations_per_epoch = max(1, len(self.shard) // self.batch_size)
        self._order_generator = torch.Generator().manual_seed(seed * 1000 + rank + 1)
        self._augment_generator = torch.Generator().manual_seed(seed * 1000 + rank + 500_001)
        self._order = torch.empty(0, dtype=torch.long)
        self._position = self.iterations_per_epoch  # no epoch started yet
        self.epoch = -1
        self._hr_shape = tuple(hr.shape[1:])
        self.set_patches(lr, hr)

    # -- patches --------------------------------------------------------------------------------

    @property
    def on_device(self) -> bool:
        """Whether the patches live on the training device (no host-to-device copy)."""
        return self.lr.device == self.device

    def set_patches(self, lr: torch.Tensor, hr: torch.Tensor | None = None) -> None:
        """Replace the patches (e.g. LR with a fresh noise draw); ``hr`` None keeps the HR."""
        if hr is not None and tuple(hr.shape[1:]) != self._hr_shape:
            raise ValueError("the HR patches changed size; rebuild the sampler instead.")
        lr = lr.index_select(0, self.shard)
        hr = None if hr is None else hr.index_select(0, self.shard)
        if self.device.type != "cuda":
            self.lr = lr.to(self.device)
            self.hr = hr.to(self.device) if hr is not None else self.hr
            return
        size = lr.nbytes + (hr.nbytes if hr is not None else self.hr.nbytes)
        free, _ = torch.cuda.mem_get_info(self.device)
        if size < _DEVICE_MEMORY_SHARE * free or (hr is None and self.on_device):
            self.lr = lr.to(self.device)
            self.hr = hr.to(self.device) if hr is not None else self.hr
        else:
            self.lr = lr.pin_memory()
            self.hr = hr.pin_memory() if hr is not None else self.hr
            self._staging = [self._pinned_pair() for _ in range(2)]
            self._copied = [torch.cuda.Event() for _ in range(2)]
            self._turn = 0

    def _pinned_pair(self) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (self.batch_size,)
        return (
            torch.empty(shape + tuple(self.lr.shape[1:]), pin_memory=True),
            torch.empty(shape + tuple(self.hr.shape[1:]), pin_memory=True),
        )

    # -- batches --------------------------------------------------------------------------------

    @property
    def epoch_done(self) -> bool:
        """Whether the current epoch has no batch left (also true before the first epoch)."""
        return self._position >= self.iterations_per_epoch

    def start_epoch(self) -> None:
        """Draw the order of the next epoch."""
        needed = self.iterations_per_epoch * self.batch_size
        repeats = math.ceil(needed / len(self.shard))
        orders = [torch.randperm(len(self.shard), generator=self._order_generator)]
        orders += [
            torch.randperm(len(self.shard), generator=self._order_generator)
            for _ in range(repeats - 1)
        ]
        self._order = torch.cat(orders)[:needed]
        self._position = 0
        self.epoch += 1

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (LR, HR) batch on the device, augmented; starts an epoch when needed."""
        if self.epoch_done:
            self.start_epoch()
        start = self._position * self.batch_size
        indices = self._order[start : start + self.batch_size]
        self._position += 1
        if self.on_device:
            indices = indices.to(self.device)
            lr, hr = self.lr.index_select(0, indices), self.hr.index_select(0, indices)
        else:
            lr, hr = self._gather_and_copy(indices)
        return dihedral_augment(
            (lr, hr), self._augment_generator, flips=self.flips, rot90=self.rot90
        )

    def _gather_and_copy(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.device.type != "cuda":
            return self.lr.index_select(0, indices), self.hr.index_select(0, indices)
        turn = self._turn
        self._turn = 1 - turn
        self._copied[turn].synchronize()  # the copy that last used this buffer has finished
        lr_buffer, hr_buffer = self._staging[turn]
        torch.index_select(self.lr, 0, indices, out=lr_buffer)
        torch.index_select(self.hr, 0, indices, out=hr_buffer)
        lr = lr_buffer.to(self.device, non_blocking=True)
        hr = hr_buffer.to(self.device, non_blocking=True)
        self._copied[turn].record()
        return lr, hr

    # -- resume ---------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Order, position and generator states, so that a resumed run draws the same batches."""
        return {
            "epoch": self.epoch,
            "position": self._position,
            "order": self._order.clone(),
            "order_generator": self._order_generator.get_state(),
            "augment_generator": self._augment_generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (from a run with the same data, seed and processes)."""
        self.epoch = int(state["epoch"])
        self._position = int(state["position"])
        self._order = state["order"].clone()
        self._order_generator.set_state(state["order_generator"])
        self._augment_generator.set_state(state["augment_generator"])
