"""Training: configuration, objectives, the loop (DDP under ``torchrun``), events, checkpoints.

>>> from napari_pclesr.train import TrainConfig, train  # doctest: +SKIP
>>> result = train(TrainConfig(model="fsrcnn", loss="l1", iterations=200, out_dir="run"))
>>> gan = train(TrainConfig(objective="cycle", model="srgan", lr_data="rec.mkt", out_dir="gan"))
"""

from napari_pclesr.train.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from napari_pclesr.train.config import OBJECTIVES, TARGET_DOMAINS, TrainConfig
from napari_pclesr.train.events import (
    TERMS,
    CheckpointSaved,
    IterationDone,
    TrainingEvent,
    TrainingFinished,
    TrainingHistory,
    TrainingPreparing,
    TrainingStarted,
    TrainResult,
    ValidationDone,
)
from napari_pclesr.train.loop import TrainingDivergedError, iter_train, load_training_data, train

__all__ = [
    "FORMAT_VERSION",
    "OBJECTIVES",
    "TARGET_DOMAINS",
    "TERMS",
    "CheckpointError",
    "CheckpointSaved",
    "IterationDone",
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",
    "TrainingEvent",
    "TrainingFinished",
    "TrainingHistory",
    "TrainingPreparing",
    "TrainingStarted",
    "ValidationDone",
    "iter_train",
    "load_checkpoint",
    "load_model",
    "load_training_data",
    "save_checkpoint",
    "train",
]
