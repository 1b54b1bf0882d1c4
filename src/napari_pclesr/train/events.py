"""Typed progress events of a training run, and its result.

:func:`~napari_pclesr.train.iter_train` yields these; :func:`~napari_pclesr.train.train` passes
them to a callback. They hold plain values only, so a GUI can show them from another thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CheckpointSaved",
    "IterationDone",
    "TrainResult",
    "TrainingEvent",
    "TrainingFinished",
    "TrainingHistory",
    "TrainingStarted",
    "ValidationDone",
]


@dataclass
class TrainingHistory:
    """The loss curve: training loss per report, validation scores per validation."""

    iteration: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_iteration: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_ssim: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, list]:
        """A JSON-friendly copy."""
        return {name: list(getattr(self, name)) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, values: dict) -> TrainingHistory:
        """Inverse of :meth:`to_dict`."""
        return cls(**{name: list(values.get(name, [])) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class TrainingStarted:
    """Set-up is done; the first (or, when resuming, the next) iteration is about to run."""

    device: str
    world_size: int
    model: str | None
    n_parameters: int
    n_train_patches: int
    n_val_patches: int
    start_iteration: int
    iterations: int
    amp_dtype: str | None


@dataclass(frozen=True)
class IterationDone:
    """A training report, every ``log_every`` iterations.

    ``loss`` is the mean training loss since the previous report (over all processes under
    DDP); ``data_wait_share`` the share of that time spent fetching batches; ``memory_mb`` the
    peak device memory (CUDA/MPS) or the peak resident memory of the process (CPU), or None
    where unknown.
    """

    iteration: int
    iterations: int
    loss: float
    lr: float
    eta_s: float
    iterations_per_s: float
    memory_mb: float | None
    data_wait_share: float


@dataclass(frozen=True)
class ValidationDone:
    """Scores on the validation patches (mean loss and mean SSIM, data range 1)."""

    iteration: int
    val_loss: float
    val_ssim: float
    is_best: bool
    best_val_loss: float
    best_iteration: int


@dataclass(frozen=True)
class CheckpointSaved:
    """A checkpoint was written; ``kind`` is ``"best"`` or ``"last"``."""

    path: Path
    kind: str
    iteration: int


@dataclass
class TrainResult:
    """What a finished (or stopped) training run leaves.

    Attributes
    ----------
    model : torch.nn.Module
        The trained network (the last weights, not the best; load ``best_checkpoint`` for
        those).
    iterations : int
        The iteration count reached.
    best_checkpoint, last_checkpoint : Path or None
        The files written (None without ``out_dir``, or before the first validation for best).
    best_val_loss, best_iteration : float or None, int or None
    stopped_early : bool
        Early stopping ended the run.
    stopped_by_request : bool
        A stop request ended the run before ``iterations``.
    history : TrainingHistory
    normalisation : napari_pclesr.data.patches.Normalisation
    device : str
    elapsed_s : float
        Wall time of this session's iterations (validations included).
    data_wait_share : float
        Share of the training-step time spent fetching batches, over the whole session.
    """

    model: object
    iterations: int
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    best_val_loss: float | None
    best_iteration: int | None
    stopped_early: bool
    stopped_by_request: bool
    history: TrainingHistory
    normalisation: object
    device: str
    elapsed_s: float
    data_wait_share: float


@dataclass(frozen=True)
class TrainingFinished:
    """The last event of a run."""

    result: TrainResult


TrainingEvent = (
    TrainingStarted | IterationDone | ValidationDone | CheckpointSaved | TrainingFinished
)
