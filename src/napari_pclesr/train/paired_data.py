"""Training data of the supervised and adversarial objectives: normalised (LR, HR) patch pairs."""

from __future__ import annotations

import inspect
import time
from collections.abc import Generator

import numpy as np
import torch

from napari_pclesr.data.patches import Normalisation, PairedSequences
from napari_pclesr.train.batches import PatchSampler
from napari_pclesr.train.config import TrainConfig
from napari_pclesr.train.events import TrainingPreparing

__all__ = [
    "GENERATED_DATA",
    "PairedTrainingData",
    "TrainingData",
    "generated_data",
    "generated_data_options",
    "load_training_data",
    "split_data",
]


#: ``TrainConfig.data`` values that name generated data rather than a folder.
GENERATED_DATA = ("sample", "mixed")
# Set by the run itself (seed, scale) or fixed by the patch pipeline (shape), not options.
_NOT_OPTIONS = ("cls", "seed", "scale", "shape")


def generated_data_options() -> dict[str, tuple[str, ...]]:
    """The options (``TrainConfig.data_options``) of each generated data set: the keyword
    parameters of its :class:`PairedSequences` builder."""
    return {
        name: tuple(
            parameter
            for parameter in inspect.signature(getattr(PairedSequences, name)).parameters
            if parameter not in _NOT_OPTIONS
        )
        for name in GENERATED_DATA
    }


def load_training_data(config: TrainConfig) -> PairedSequences:
    """The data named by ``config.data``: ``"sample"`` phantoms, ``"mixed"`` phantoms and
    natural images, or a folder of TIFF stacks."""
    layout = None
    if config.layout is not None:
        from napari_pclesr import FibreLayout

        layout = FibreLayout.from_file(config.layout)
    if config.data in GENERATED_DATA:
        if layout is not None:
            raise ValueError(
                f"--layout applies to folder data; the {config.data} data use synthetic bundles."
            )
        return generated_data(config)
    return PairedSequences.from_folder(config.data, layout=layout, scale=config.scale)


def generated_data(config: TrainConfig) -> PairedSequences:
    """The generated data named by ``config.data`` (one of :data:`GENERATED_DATA`), built with
    ``config.data_options``."""
    generate = getattr(PairedSequences, config.data)
    try:
        return generate(seed=config.seed, scale=config.scale, **config.data_options)
    except (TypeError, ValueError) as exc:
        if not config.data_options:
            raise
        options = ", ".join(f"{k}={v!r}" for k, v in config.data_options.items())
        raise ValueError(
            f"the {config.data} data cannot be built with the options {options}: {exc}"
        ) from exc


def split_data(data, config: TrainConfig, kinds: tuple[type, ...] = (PairedSequences,)):
    """(train, val, test) of a collection (split by ``config.split``) or of a given tuple."""
    if isinstance(data, kinds):
        train_data, val_data, test_data = data.split(config.split, seed=config.seed)
    elif isinstance(data, tuple | list) and len(data) in (2, 3):
        train_data, val_data = data[0], data[1]
        test_data = data[2] if len(data) == 3 else None
    else:
        names = " or ".join(kind.__name__ for kind in kinds)
        raise ValueError(
            f"data must be a {names} collection or a (train, val[, test]) tuple of them, "
            f"got {type(data).__name__}."
        )
    if val_data is None or len(val_data) == 0:
        raise ValueError(
            "the validation part has no sequence; give more sequences or a larger validation "
            "fraction in config.split."
        )
    return train_data, val_data, test_data


def check_patch_size(size: int, parts: dict, min_inside: float = 1.0) -> None:
    """Raise ``ValueError`` when a patch does not fit the frames or the FoV of a part (a patch
    fits the FoV with at least ``min_inside`` of its pixels inside)."""
    for part, collection in parts.items():
        for index in range(len(collection)):
            height, width = collection.lr_shape(index)
            if size > min(height, width):
                raise ValueError(
                    f"patch size {size} is bigger than the {height}x{width} LR frames of "
                    f"sequence {collection.names[index]}; use a patch size <= "
                    f"{min(height, width)}."
                )
        if collection.count_patches(size, min_inside) == 0:
            where = "entirely" if min_inside == 1 else f"with {min_inside:.0%} of its pixels"
            raise ValueError(
                f"no {size}x{size} patch of the {part} sequences lies {where} inside the "
                "field of view; use a smaller patch size or larger frames."
            )


class TrainingData:
    """What the training-data objects of the objectives share.

    After ``prepare`` they have ``train_data``, ``val_data`` and ``test_data`` (collections),
    ``normalisation``, ``n_train_patches``, ``n_val_patches`` and ``sampler``; ``wait`` sums the
    seconds spent fetching batches.
    """

    def __init__(self, config: TrainConfig, context, device: torch.device):
        self.config = config
        self.context = context
        self.device = device
        self.wait = 0.0
        self.lr_options = {
            "seed": config.seed,
            "sigma_mult": config.sigma_mult,
            "sigma_add": config.sigma_add,
        }

    @property
    def epoch(self) -> int:
        """The training sampler's epoch."""
        return self.sampler.epoch

    def split_names(self) -> dict[str, list[str]]:
        """Names of the train/val/test sequences."""
        return {
            "train": list(self.train_data.names),
            "val": list(self.val_data.names),
            "test": list(self.test_data.names) if self.test_data is not None else [],
        }


class PairedTrainingData(TrainingData):
    """Normalised (LR, HR) patches: a seeded sampler for training, tensors for validation."""

    def prepare(self, data, checkpoint: dict | None) -> Generator[TrainingPreparing, None, None]:
        """Load and split the data, fit the normalisation (or take the checkpoint's), cut."""
        config = self.config
        yield TrainingPreparing("loading data", 0, 1)
        self.train_data, self.val_data, self.test_data = split_data(
            load_training_data(config) if data is None else data, config
        )
        yield TrainingPreparing("loading data", 1, 1)
        check_patch_size(
            config.patch_size,
            {"training": self.train_data, "validation": self.val_data},
            config.min_inside,
        )
        if checkpoint is not None:
            self.normalisation = Normalisation.from_dict(checkpoint["normalisation"])
        else:
            self.normalisation = Normalisation()
        epoch = 0
        if checkpoint is not None and config.fresh_noise_per_epoch:
            epoch = max(0, int(checkpoint["resume"]["epoch"]))
        lr, hr, fov = yield from self._patches(self.train_data, epoch, "training")
        self.sampler = PatchSampler(
            lr,
            hr,
            fov,
            config.batch_size,
            self.device,
            seed=config.seed,
            rank=self.context.rank,
            world_size=self.context.world_size,
            flips=config.augment_flips,
            rot90=config.augment_rot90,
        )
        self.n_train_patches = len(lr)
        rank, world = self.context.rank, self.context.world_size
        val_lr, val_hr, val_fov = yield from self._patches(self.val_data, 0, "validation")
        self.n_val_patches = len(val_lr)
        self.val_lr = val_lr[rank::world]
        self.val_hr = val_hr[rank::world]
        self.val_fov = val_fov[rank::world]

    def _patches(self, collection, epoch: int, part: str):
        """Normalised (LR, HR) patches (N, 1, p, p), (N, 1, s·p, s·p) of a collection and the
        HR-grid FoV of each (bool, like HR), one sequence at a time (simulating its LR when it
        has none), with a progress event each."""
        stage = f"{'simulating LR and ' if collection.simulated else ''}cutting {part} patches"
        chunks = []
        for index in range(len(collection)):
            yield TrainingPreparing(stage, index, len(collection))
            chunks.append(self._sequence_patches(collection.subset([index]), epoch))
        yield TrainingPreparing(stage, len(collection), len(collection))
        return tuple(
            torch.from_numpy(np.concatenate(c))[:, None] for c in zip(*chunks, strict=True)
        )

    def _sequence_patches(self, collection, epoch: int) -> tuple[np.ndarray, ...]:
        return collection.patches(
            self.normalisation,
            self.config.patch_size,
            self.config.min_inside,
            epoch=epoch,
            **self.lr_options,
        )

    # -- batches --------------------------------------------------------------------------------

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The next (LR, HR, FoV) batch; a new epoch draws fresh simulated noise when
        configured. The FoV (bool, like HR) says which target pixels the loss counts."""
        start = time.perf_counter()
        if self.sampler.epoch_done:
            next_epoch = self.sampler.epoch + 1
            if self.config.fresh_noise_per_epoch and self.train_data.simulated and next_epoch > 0:
                # The HR targets follow the map of their (new) LR frames, so both change.
                lr, hr, _ = self._sequence_patches(self.train_data, next_epoch)
                self.sampler.set_patches(
                    torch.from_numpy(lr)[:, None], torch.from_numpy(hr)[:, None]
                )
            self.sampler.start_epoch()
        batch = self.sampler.next_batch()
        self.wait += time.perf_counter() - start
        return batch

    def validation_batches(self, size: int):
        """(LR, HR, FoV) chunks of this process's validation patches, on the device."""
        for start in range(0, len(self.val_lr), size):
            yield tuple(
                part[start : start + size].to(self.device, non_blocking=True)
                for part in (self.val_lr, self.val_hr, self.val_fov)
            )

    # -- checkpoints ----------------------------------------------------------------------------

    def rank_state(self) -> dict:
        """This process's batch order."""
        return {"sampler": self.sampler.state_dict()}

    def load_rank_state(self, state: dict) -> None:
        """Restore :meth:`rank_state`."""
        self.sampler.load_state_dict(state["sampler"])
