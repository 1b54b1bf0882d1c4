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

__all__ = ["PatchSampler", "TensorBatches", "dihedral_augment"]

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


class TensorBatches:
    """Endless seeded batches of aligned per-sample tensors from this process's shard.

    With ``world_size`` processes, the samples are permuted with a seed shared by all
    processes and process ``rank`` takes every ``world_size``-th one, so the shards are
    disjoint and equally large (a remainder of fewer than ``world_size`` samples is left out).
    An *epoch* is one pass over the shard in a new random order (batches never straddle
    epochs; a shard smaller than a batch is repeated within the epoch).

    Parameters
    ----------
    tensors : sequence of torch.Tensor
        Aligned per-sample tensors on the CPU, all with the same first dimension N: images
        (N, C, H, W) or (N, H, W), or vectors (N, K).
    batch_size : int
    device : torch.device
        Where batches are delivered.
    seed : int
    rank, world_size : int
    flips, rot90 : bool
        Augmentation of the tensors marked in ``augment`` (see :func:`dihedral_augment`); they
        must be square images.
    augment : sequence of bool, optional
        Which tensors are images to augment together; all of them by default.
    """

    def __init__(
        self,
        tensors,
        batch_size: int,
        device: torch.device,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        flips: bool = False,
        rot90: bool = False,
        augment=None,
    ):
        tensors = tuple(tensors)
        total = tensors[0].shape[0]
        if any(tensor.shape[0] != total for tensor in tensors):
            raise ValueError("the tensors of a sampler must have the same number of samples.")
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
        self._augment = tuple(augment) if augment is not None else (True,) * len(tensors)
        self.iterations_per_epoch = max(1, len(self.shard) // self.batch_size)
        self._order_generator = torch.Generator().manual_seed(seed * 1000 + rank + 1)
        self._augment_generator = torch.Generator().manual_seed(seed * 1000 + rank + 500_001)
        self._order = torch.empty(0, dtype=torch.long)
        self._position = self.iterations_per_epoch  # no epoch started yet
        self.epoch = -1
        self._shapes = [tuple(tensor.shape[1:]) for tensor in tensors]
        self.tensors: list[torch.Tensor] = [torch.empty(0)] * len(tensors)
        self.set_tensors(dict(enumerate(tensors)))

    # -- samples --------------------------------------------------------------------------------

    @property
    def on_device(self) -> bool:
        """Whether the samples live on the training device (no host-to-device copy)."""
        return self.tensors[0].device == self.device

    def set_tensors(self, replacements: dict[int, torch.Tensor]) -> None:
        """Replace some tensors (by position), e.g. LR patches with a fresh noise draw."""
        for index, tensor in replacements.items():
            if tuple(tensor.shape[1:]) != self._shapes[index]:
                raise ValueError("the samples changed shape; rebuild the sampler instead.")
        chosen = {index: t.index_select(0, self.shard) for index, t in replacements.items()}
        if self.device.type != "cuda":
            for index, tensor in chosen.items():
                self.tensors[index] = tensor.to(self.device)
            return
        kept = sum(t.nbytes for i, t in enumerate(self.tensors) if i not in chosen)
        size = kept + sum(t.nbytes for t in chosen.values())
        free, _ = torch.cuda.mem_get_info(self.device)
        if size < _DEVICE_MEMORY_SHARE * free or (
            len(chosen) < len(self.tensors) and self.on_device
        ):
            for index, tensor in chosen.items():
                self.tensors[index] = tensor.to(self.device)
        else:
            for index, tensor in chosen.items():
                self.tensors[index] = tensor.pin_memory()
            self._staging = [self._pinned_buffers() for _ in range(2)]
            self._copied = [torch.cuda.Event() for _ in range(2)]
            self._turn = 0

    def _pinned_buffers(self) -> list[torch.Tensor]:
        return [
            torch.empty((self.batch_size, *tensor.shape[1:]), dtype=tensor.dtype, pin_memory=True)
            for tensor in self.tensors
        ]

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

    def next_batch(self) -> tuple[torch.Tensor, ...]:
        """The next batch of every tensor, on the device, augmented; starts an epoch when
        needed."""
        if self.epoch_done:
            self.start_epoch()
        start = self._position * self.batch_size
        indices = self._order[start : start + self.batch_size]
        self._position += 1
        if self.on_device:
            indices = indices.to(self.device)
            batch = [tensor.index_select(0, indices) for tensor in self.tensors]
        else:
            batch = self._gather_and_copy(indices)
        images = [b for b, augment in zip(batch, self._augment, strict=True) if augment]
        augmented = iter(
            dihedral_augment(
                tuple(images), self._augment_generator, flips=self.flips, rot90=self.rot90
            )
        )
        return tuple(
            next(augmented) if augment else b
            for b, augment in zip(batch, self._augment, strict=True)
        )

    def _gather_and_copy(self, indices: torch.Tensor) -> list[torch.Tensor]:
        if self.device.type != "cuda":
            return [tensor.index_select(0, indices) for tensor in self.tensors]
        turn = self._turn
        self._turn = 1 - turn
        self._copied[turn].synchronize()  # the copy that last used these buffers has finished
        batch = []
        for tensor, buffer in zip(self.tensors, self._staging[turn], strict=True):
            torch.index_select(tensor, 0, indices, out=buffer)
            batch.append(buffer.to(self.device, non_blocking=True))
        self._copied[turn].record()
        return batch

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


class PatchSampler(TensorBatches):
    """Endless seeded (LR, HR) batches of paired patches; see :class:`TensorBatches`.

    Parameters
    ----------
    lr, hr : torch.Tensor (N, 1, p, p) and (N, 1, s·p, s·p)
        All training patches, on the CPU.
    batch_size : int
    device : torch.device
    seed : int
    rank, world_size : int
    flips, rot90 : bool
        Augmentation, see :func:`dihedral_augment`, applied identically to LR and HR.
    """

    def __init__(self, lr: torch.Tensor, hr: torch.Tensor, batch_size: int, device, **options):
        super().__init__((lr, hr), batch_size, device, **options)

    @property
    def lr(self) -> torch.Tensor:
        """This process's LR patches (on the device or in pinned memory)."""
        return self.tensors[0]

    @property
    def hr(self) -> torch.Tensor:
        """This process's HR patches."""
        return self.tensors[1]

    def set_patches(self, lr: torch.Tensor, hr: torch.Tensor | None = None) -> None:
        """Replace the patches (e.g. LR with a fresh noise draw); ``hr`` None keeps the HR."""
        self.set_tensors({0: lr} if hr is None else {0: lr, 1: hr})
