"""Typed progress events of a training run, and its result.

:func:`~napari_pclesr.train.iter_train` yields these; :func:`~napari_pclesr.train.train` passes
them to a callback. They hold plain values only, so a GUI can show them from another thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "TERMS",
    "CheckpointSaved",
    "IterationDone",
    "TrainResult",
    "TrainingEvent",
    "TrainingFinished",
    "TrainingHistory",
    "TrainingPreparing",
    "TrainingStarted",
    "ValidationDone",
]

#: The logged terms a run may report, by name: (label, group). Groups: ``"G"`` (generator or
#: supervised losses), ``"D"`` (discriminator loss) and ``"accuracy"`` (D's accuracy, in [0, 1]).
#: Objectives report a subset (``TrainingStarted.terms`` lists it, in order).
TERMS = {
    "loss": ("training loss", "G"),
    "g_loss": ("generator loss (total)", "G"),
    "content": ("content loss", "G"),
    "vec": ("l_Vec (fibre vectors)", "G"),
    "reg": ("l_Reg (row/column means)", "G"),
    "adv": ("adversarial loss", "G"),
    "d_loss": ("discriminator loss", "D"),
    "d_real_acc": ("D accuracy on real", "accuracy"),
    "d_fake_acc": ("D accuracy on fake", "accuracy"),
}


@dataclass
class TrainingHistory:
    """The loss curves: training loss and terms per report, validation scores per validation.

    ``terms[name][i]`` is the mean of term ``name`` over the report at ``iteration[i]`` (NaN
    where the term was not computed, e.g. the discriminator terms during pre-training);
    ``val_scores[name][j]`` the validation score ``name`` at ``val_iteration[j]``.
    """

    iteration: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_iteration: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_ssim: list[float] = field(default_factory=list)
    terms: dict[str, list[float]] = field(default_factory=dict)
    val_scores: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """A JSON-friendly copy."""
        return {
            name: (
                {key: list(values) for key, values in value.items()}
                if isinstance(value, dict)
                else list(value)
            )
            for name, value in ((name, getattr(self, name)) for name in self.__dataclass_fields__)
        }

    @classmethod
    def from_dict(cls, values: dict) -> TrainingHistory:
        """Inverse of :meth:`to_dict` (histories written before the terms existed load too)."""
        history = cls()
        for name in cls.__dataclass_fields__:
            value = values.get(name)
            if isinstance(value, dict):
                setattr(history, name, {key: list(items) for key, items in value.items()})
            elif value is not None:
                setattr(history, name, list(value))
        return history

    def add_report(self, iteration: int, loss: float, terms: dict[str, float]) -> None:
        """Append a training report (terms missing from it are recorded as NaN)."""
        self.iteration.append(iteration)
        self.train_loss.append(loss)
        _append_row(self.terms, terms, len(self.iteration))

    def add_validation(self, iteration: int, loss: float, ssim: float, scores: dict) -> None:
        """Append a validation."""
        self.val_iteration.append(iteration)
        self.val_loss.append(loss)
        self.val_ssim.append(ssim)
        _append_row(self.val_scores, scores, len(self.val_iteration))


def _append_row(columns: dict[str, list[float]], row: dict[str, float], length: int) -> None:
    for name in row.keys() - columns.keys():
        columns[name] = [float("nan")] * (length - 1)
    for name, values in columns.items():
        values.append(float(row.get(name, float("nan"))))


@dataclass(frozen=True)
class TrainingPreparing:
    """Set-up progress, before :class:`TrainingStarted`: the first event of every run.

    ``stage`` names the step ("loading data", "simulating LR", "cutting patches", "fibre
    layout", …); ``done`` of ``total`` units of it are finished (``total`` 0 when unknown);
    ``detail`` is an optional sentence for the user (e.g. how a fibre layout was chosen).
    """

    stage: str
    done: int
    total: int
    detail: str = ""


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
    objective: str = "supervised"
    terms: tuple[str, ...] = ("loss",)
    score: str = "validation loss"


@dataclass(frozen=True)
class IterationDone:
    """A training report, every ``log_every`` iterations.

    ``loss`` is the mean training loss since the previous report (over all processes under
    DDP): the supervised loss, or the generator's total loss for the adversarial objectives;
    ``terms`` the means of every term the objective logs (names in :data:`TERMS`; a term not
    computed since the last report, e.g. D's during pre-training, is absent);
    ``data_wait_share`` the share of that time spent fetching batches; ``memory_mb`` the peak
    device memory (CUDA/MPS) or the peak resident memory of the process (CPU), or None where
    unknown.
    """

    iteration: int
    iterations: int
    loss: float
    lr: float
    eta_s: float
    iterations_per_s: float
    memory_mb: float | None
    data_wait_share: float
    terms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ValidationDone:
    """Scores on the validation data.

    ``val_loss`` is the score that selects ``best.pt`` (lower is better; what it is depends on
    the objective, see ``TrainingStarted.score``); ``val_ssim`` the mean SSIM against HR (data
    range 1; NaN without HR); ``scores`` every validation score by name (e.g. ``"vec"``,
    ``"reg"``, ``"gcf"``, ``"delta_gcf"``, ``"ssim"``, ``"content"``).
    """

    iteration: int
    val_loss: float
    val_ssim: float
    is_best: bool
    best_val_loss: float
    best_iteration: int
    scores: dict[str, float] = field(default_factory=dict)


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
    TrainingPreparing
    | TrainingStarted
    | IterationDone
    | ValidationDone
    | CheckpointSaved
    | TrainingFinished
)
