"""What every training objective provides to the loop, and the machinery they share."""

from __future__ import annotations

from collections.abc import Generator
from contextlib import nullcontext

import torch

from napari_pclesr.train.config import TrainConfig
from napari_pclesr.train.events import TrainingPreparing

__all__ = ["Objective", "make_scheduler"]


class Objective:
    """A training objective: its data, networks, optimisers, step, validation and state.

    The loop (:mod:`napari_pclesr.train.loop`) drives an objective through these calls, in
    this order: :meth:`prepare` (a generator of :class:`TrainingPreparing` events: loading,
    simulating and cutting the data), :meth:`build` (with the generator network), then
    :meth:`load_state_dict` / :meth:`load_rank_state` when resuming, then :meth:`step` once
    per iteration and :meth:`validate` every ``val_every`` iterations; :meth:`state_dict` and
    :meth:`rank_state` go into every checkpoint. The loop keeps the iteration count, events,
    checkpoints, stop requests, resume, early stopping and the DDP process group.

    Subclasses set the class attributes and implement the methods that raise
    ``NotImplementedError``. ``self.data`` is their training-data object: it has
    ``prepare``, ``next_batch``, ``epoch``, ``state_dict``/``load_state_dict``,
    ``normalisation``, ``n_train_patches``, ``n_val_patches`` and ``split_names``.

    Attributes
    ----------
    name : str
        The ``TrainConfig.objective`` value.
    terms : tuple of str
        The names (:data:`~napari_pclesr.train.events.TERMS`) of the terms :meth:`step`
        reports, in a fixed order (DDP reduces them in this order).
    primary : str
        The term reported as ``IterationDone.loss`` and ``history.train_loss``.
    """

    name = ""
    terms: tuple[str, ...] = ()
    primary = "loss"

    def __init__(self, config: TrainConfig, context, device: torch.device, amp_dtype):
        self.config = config
        self.context = context
        self.device = device
        self.amp_dtype = amp_dtype
        self.data = None
        self.generator: torch.nn.Module | None = None

    # -- set-up ---------------------------------------------------------------------------------

    def prepare(self, data, checkpoint: dict | None) -> Generator[TrainingPreparing, None, None]:
        """Load, split, normalise and cut the data (``checkpoint``: the resumed one, or None)."""
        yield from self.data.prepare(data, checkpoint)

    def build(self, generator: torch.nn.Module) -> None:
        """Move ``generator`` to the device, wrap it for DDP, make the optimiser(s)."""
        raise NotImplementedError

    @property
    def score_name(self) -> str:
        """What ``ValidationDone.val_loss`` (the score that picks ``best.pt``) measures."""
        raise NotImplementedError

    # -- the loop -------------------------------------------------------------------------------

    def step(self, iteration: int) -> dict[str, torch.Tensor]:
        """One training iteration (``iteration`` counted from 0): one or more optimiser steps.

        Returns the detached scalar tensors of the terms it computed (names from
        :attr:`terms`; absent ones were not computed in this iteration).
        """
        raise NotImplementedError

    def validate(self) -> tuple[float, float, dict[str, float]]:
        """(score, SSIM or NaN, every score by name) on this process's validation data; the
        sums are reduced over processes."""
        raise NotImplementedError

    @property
    def lr(self) -> float:
        """The generator's current learning rate."""
        return self.optimizer.param_groups[0]["lr"]

    def take_data_wait(self) -> float:
        """Seconds spent fetching batches since the last call."""
        wait, self.data.wait = self.data.wait, 0.0
        return wait

    # -- checkpoints ----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The objective's share of ``checkpoint["resume"]``: optimiser, schedule and scaler of
        the generator (the keys of the original supervised format) and anything else it owns."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (the generator's weights are restored by the loop)."""
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def rank_state(self) -> dict:
        """This process's own state (batch order; per-process random generators)."""
        return self.data.rank_state()

    def load_rank_state(self, state: dict) -> None:
        """Restore :meth:`rank_state`."""
        self.data.load_rank_state(state)

    def checkpoint_extras(self) -> dict:
        """Extra top-level checkpoint entries (plain values only)."""
        return {}

    # -- shared machinery -----------------------------------------------------------------------

    def _place(self, network: torch.nn.Module) -> torch.nn.Module:
        """Move a network to the device; return the module to call (DDP-wrapped under DDP)."""
        network.to(self.device)
        if self.device.type == "cuda":
            network.to(memory_format=torch.channels_last)
        if not self.context.enabled:
            return network
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(network, device_ids=ids)

    def _adam(self, network: torch.nn.Module, lr: float) -> torch.optim.Adam:
        config = self.config
        return torch.optim.Adam(network.parameters(), lr=lr, betas=config.betas, eps=config.eps)

    def _scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @staticmethod
    def _optimise(loss: torch.Tensor, optimizer, scaler, scheduler) -> None:
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()


def make_scheduler(optimizer, config: TrainConfig, steps: int):
    """The learning-rate schedule of ``config`` over ``steps`` optimiser steps (or None)."""
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
    if config.schedule == "step":
        step = config.step_size or max(1, steps // 3)
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=config.gamma)
    return None
