"""Training data of the cycle objective: LR patches with their fibre vectors and slot maps.

For every sequence the data need a fibre layout. It comes from the simulator for simulated LR
(exact), otherwise from ``config.layout``: a layout file (``.csv``, ``.npy``, ``.npz``), a raw
bundle frame whose cores are detected (any image ``read_sequence`` opens), or ``"auto"`` (the
default for recordings): a synthetic bundle whose pitch is measured from the recording
(:func:`napari_pclesr.fibre.auto.layout_for_recording`).

Per patch the sampler delivers:

- the normalised LR patch (B, 1, p, p), as the supervised data;
- its slot map (B, s·p, s·p): the patch's fibres on the SR grid
  (:meth:`napari_pclesr.simulate.VoronoiPooling.slot_maps`), flipped and rotated with the patch;
- V(I_LR) (B, K): the fibre values of the normalised LR frame, read with
  :class:`~napari_pclesr.simulate.FibreSignalReader` (exact for simulated LR, a least-squares
  approximation for real recordings), in slot order and zero padded to K, the most fibres any
  patch of any sequence holds;
- the aligned HR patch when the data have HR (phantoms, HR-hat).

Fibres that the LR frames do not determine (no FoV pixel near them) are left out of the slot
maps, so they count as padding.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from napari_pclesr.data.patches import (
    Normalisation,
    PairedSequences,
    extract_patches,
    patch_corners,
    upscale_mask,
)
from napari_pclesr.data.recordings import LRRecordings
from napari_pclesr.data.splits import split_sequences
from napari_pclesr.fibre import FibreLayout
from napari_pclesr.train.batches import TensorBatches
from napari_pclesr.train.config import TrainConfig
from napari_pclesr.train.events import TrainingPreparing
from napari_pclesr.train.paired_data import (
    GENERATED_DATA,
    TrainingData,
    check_patch_size,
    generated_data,
    split_data,
)

__all__ = ["FibreTrainingData", "layout_on_grid", "load_cycle_data"]

_LAYOUT_SUFFIXES = (".csv", ".npy", ".npz")
# Frames of a recording the pitch is measured from (spread over it).
_PITCH_FRAMES = 32


def load_cycle_data(config: TrainConfig):
    """The data of a cycle run: ``config.lr_data`` recordings, else ``config.data``.

    ``config.layout`` is used to *simulate* LR here only when it names a layout file and the
    data are an HR folder without ``lr/``; otherwise it describes the LR's own fibres.
    """
    if config.lr_data is not None:
        return LRRecordings.open(config.lr_data, frame_step=config.frame_step)
    if config.data in GENERATED_DATA:
        return generated_data(config)
    layout = None
    if config.layout is not None and Path(config.layout).suffix.lower() in _LAYOUT_SUFFIXES:
        layout = FibreLayout.from_file(config.layout)
    return PairedSequences.from_folder(config.data, layout=layout, scale=config.scale)


def layout_on_grid(layout: FibreLayout, factor: float) -> FibreLayout:
    """The same fibres on a grid ``factor`` times finer (or coarser, for factor < 1).

    Pixel centres sit at integer coordinates, so LR pixel ``i`` is centred on fine coordinate
    ``s·i + (s − 1)/2`` for a grid s times finer.
    """
    if factor == 1:
        return layout
    shape = tuple(round(side * factor) for side in layout.shape)
    positions = layout.positions * factor + (factor - 1) / 2
    return FibreLayout(np.clip(positions, -0.5, np.array(shape) - 0.5), shape)


@dataclass
class _Geometry:
    """What a (layout, FoV) pair needs: the fibre reader, the SR-grid pooling and K."""

    reader: object
    pooling: object
    k: int


class FibreTrainingData(TrainingData):
    """LR patches with fibre vectors and slot maps, target-domain patches, validation tensors.

    Attributes (after :meth:`prepare`)
    ----------------------------------
    k : int
        Length of the fibre vectors.
    has_hr : bool
        Whether the data have HR (validation then also reports SSIM).
    layout_notes : list of dict
        For each sequence: its name, how its layout was chosen, its fibre count and median
        nearest-neighbour spacing.
    """

    def __init__(self, config: TrainConfig, context, device: torch.device):
        super().__init__(config, context, device)
        self._geometries: dict[tuple, _Geometry] = {}
        self._fixed_layout: FibreLayout | None = None
        self._rescaled_sources: list[tuple[np.ndarray, np.ndarray]] = []
        self.layout_notes: list[dict] = []

    # -- set-up ---------------------------------------------------------------------------------

    def prepare(self, data, checkpoint: dict | None) -> Generator[TrainingPreparing, None, None]:
        """Load, split, choose layouts, normalise, read fibre values, cut all patches."""
        config = self.config
        yield TrainingPreparing("loading data", 0, 1)
        given = data is not None
        collection = load_cycle_data(config) if data is None else data
        yield TrainingPreparing("loading data", 1, 1)
        parts, layouts = yield from self._split(collection, given)
        self.train_data, self.val_data, self.test_data = parts
        self.train_layouts, self.val_layouts = layouts
        check_patch_size(
            config.patch_size, {"training": self.train_data, "validation": self.val_data}
        )
        self.has_hr = self.train_data.hr(0) is not None and self.val_data.hr(0) is not None
        if config.target_domain == "paired" and not self.has_hr:
            raise ValueError(
                "target_domain 'paired' needs HR aligned with the LR; these data have none. "
                "Use 'natural', 'unpaired' or 'rescaled'."
            )
        if checkpoint is not None:
            self.normalisation = Normalisation.from_dict(checkpoint["normalisation"])
        else:
            self.normalisation = Normalisation()
        masks = [
            part.fov_mask(i) for part in (self.train_data, self.val_data) for i in range(len(part))
        ]
        layouts = [*self.train_layouts, *self.val_layouts]
        for done, (layout, mask) in enumerate(zip(layouts, masks, strict=True)):
            yield TrainingPreparing("fibre geometry", done, len(layouts))
            self._geometry(layout, mask)
        yield TrainingPreparing("fibre geometry", len(layouts), len(layouts))
        self.k = max(geometry.k for geometry in self._geometries.values())
        if self.k == 0:
            raise ValueError(
                f"no fibre's Voronoi cell fits inside a {config.patch_size}x{config.patch_size} "
                "patch; use a larger patch size."
            )
        epoch = 0
        if checkpoint is not None and config.fresh_noise_per_epoch:
            epoch = max(0, int(checkpoint["resume"]["epoch"]))
        keep = self._rescaled_sources if config.target_domain == "rescaled" else None
        train = yield from self._patches(
            self.train_data, self.train_layouts, epoch, "training", keep
        )
        self.n_train_patches = len(train[0])
        augment = (True, True, False, True)[: len(train)]
        options = {
            "seed": config.seed,
            "rank": self.context.rank,
            "world_size": self.context.world_size,
            "flips": config.augment_flips,
            "rot90": config.augment_rot90,
        }
        self.sampler = TensorBatches(
            train, config.batch_size, self.device, augment=augment, **options
        )
        val = yield from self._patches(self.val_data, self.val_layouts, 0, "validation")
        self.n_val_patches = len(val[0])
        rank, world = self.context.rank, self.context.world_size
        self.val = [tensor[rank::world] for tensor in val]
        self.target_sampler = None
        if config.target_domain != "paired":
            yield TrainingPreparing("target-domain patches", 0, 1, config.target_domain)
            target = torch.from_numpy(self._target_patches())[:, None]
            yield TrainingPreparing("target-domain patches", 1, 1, f"{len(target)} patches")
            self.target_sampler = TensorBatches(
                (target,), config.batch_size, self.device, **{**options, "seed": config.seed + 1}
            )

    def _split(self, collection, given: bool):
        """(train, val, test) and the layouts of the train and val sequences."""
        config = self.config
        if given and isinstance(collection, tuple | list):
            parts = split_data(collection, config, (PairedSequences, LRRecordings))
            layouts = []
            for part in parts[:2]:
                layouts.append((yield from self._layouts(part, range(len(part)))))
            return parts, layouts
        if not isinstance(collection, PairedSequences | LRRecordings):
            raise ValueError(
                "cycle data must be LRRecordings, PairedSequences or a (train, val[, test]) "
                f"tuple of them, got {type(collection).__name__}."
            )
        full = yield from self._layouts(collection, range(len(collection)))
        if isinstance(collection, LRRecordings):
            parts = collection.split(config.split, seed=config.seed)
            sources = [part.sources if part is not None else () for part in parts]
        else:
            indices = split_sequences(len(collection), config.split, config.seed)
            sources = [indices.train, indices.val, indices.test]
            parts = tuple(collection.subset(part) for part in sources)
        parts = split_data(tuple(parts), config, (PairedSequences, LRRecordings))
        return parts, [[full[i] for i in sources[0]], [full[i] for i in sources[1]]]

    def _layouts(self, collection, indices) -> Generator[TrainingPreparing, None, list]:
        """The fibre layout (on the LR grid) of each sequence, with a progress event each."""
        indices = list(indices)
        layouts = []
        for done, index in enumerate(indices):
            yield TrainingPreparing("fibre layout", done, len(indices))
            layout, message = self._layout(collection, index)
            self.layout_notes.append(
                {
                    "sequence": collection.names[index],
                    "source": message,
                    "n_fibres": layout.n_fibres,
                    "median_spacing": float(np.median(layout.nearest_neighbour_distances())),
                }
            )
            yield TrainingPreparing(
                "fibre layout", done + 1, len(indices), f"{collection.names[index]}: {message}"
            )
            layouts.append(layout)
        return layouts

    def _layout(self, collection, index: int) -> tuple[FibreLayout, str]:
        config = self.config
        simulated = collection.fibre_layout(index)
        if simulated is not None:
            layout = layout_on_grid(simulated, 1 / config.scale)
            return layout, f"the simulator's {simulated.n_fibres:,} fibres (exact)"
        shape = tuple(collection.lr_shape(index))
        spec = config.layout
        if spec is None or spec == "auto":
            from napari_pclesr.fibre.auto import layout_for_recording

            frames = collection.lr(index)
            chosen = np.unique(np.linspace(0, len(frames) - 1, _PITCH_FRAMES).astype(int))
            circle = collection.fov_circle(index) if isinstance(collection, LRRecordings) else None
            choice = layout_for_recording(
                frames[chosen],
                collection.fov_mask(index),
                circle,
                n_fibres=config.fibres,
                seed=config.seed,
            )
            return choice.layout, f"layout auto: {choice.message}"
        if self._fixed_layout is None:
            self._fixed_layout, self._fixed_message = _layout_from(spec, shape)
        if tuple(self._fixed_layout.shape) != shape:
            raise ValueError(
                f"the fibre layout {spec} is for {self._fixed_layout.shape[0]}x"
                f"{self._fixed_layout.shape[1]} frames but {collection.names[index]} has "
                f"{shape[0]}x{shape[1]} frames; give a layout on the recording's grid."
            )
        return self._fixed_layout, self._fixed_message

    def _geometry(self, layout: FibreLayout, mask: np.ndarray) -> _Geometry:
        from napari_pclesr.simulate import FibreSignalReader, VoronoiPooling

        key = (id(layout), hash(mask.tobytes()))
        if key not in self._geometries:
            scale = self.config.scale
            pooling = VoronoiPooling(layout_on_grid(layout, scale))
            self._geometries[key] = _Geometry(
                FibreSignalReader(layout, mask),
                pooling,
                pooling.max_fibres_per_patch(scale * self.config.patch_size),
            )
        return self._geometries[key]

    def _patches(self, collection, layouts, epoch: int, part: str, keep: list | None = None):
        """(LR, slot maps, V(I_LR)[, HR]) tensors of a collection, one sequence at a time;
        ``keep`` collects each sequence's (normalised frames, FoV)."""
        stage = f"{'simulating LR and ' if collection.simulated else ''}reading fibre signals"
        stage = f"{stage} ({part})"
        chunks = []
        for index, layout in enumerate(layouts):
            yield TrainingPreparing(stage, index, len(layouts))
            chunks.append(self._sequence_patches(collection, index, layout, epoch, keep))
        yield TrainingPreparing(stage, len(layouts), len(layouts))
        tensors = [torch.from_numpy(np.concatenate(column)) for column in zip(*chunks, strict=True)]
        tensors[0] = tensors[0][:, None]
        if len(tensors) == 4:
            tensors[3] = tensors[3][:, None]
        return tensors

    def _sequence_patches(
        self, collection, index: int, layout, epoch: int, keep: list | None = None
    ) -> list[np.ndarray]:
        scale, size = self.config.scale, self.config.patch_size
        mask = collection.fov_mask(index)
        geometry = self._geometry(layout, mask)
        normalised, low, high = self.normalisation.normalise(
            collection.lr(index, epoch=epoch, **self.lr_options), mask
        )
        values = geometry.reader.read(normalised)
        corners = patch_corners(mask, size)
        fibres = geometry.pooling.patch_fibres(corners * scale, scale * size)
        slots = geometry.pooling.slot_maps(corners * scale, scale * size).astype(np.int64)
        # This sequence's "no fibre" slot (its own K) and its unresolved fibres become padding
        # (slot self.k, the K of all sequences).
        unresolved = (fibres < 0) | ~geometry.reader.resolved[np.maximum(fibres, 0)]
        lookup = np.where(unresolved, self.k, np.arange(fibres.shape[1]))
        lookup = np.append(lookup, np.full((len(fibres), 1), self.k), axis=1)
        slots = np.take_along_axis(lookup, slots.reshape(len(slots), -1), 1).reshape(slots.shape)
        vectors = np.zeros((len(normalised), len(corners), self.k), dtype=np.float32)
        vectors[..., : fibres.shape[1]] = np.where(unresolved, 0.0, values[:, fibres])
        dtype = np.int16 if self.k < np.iinfo(np.int16).max else np.int32
        arrays = [
            extract_patches(normalised, corners, size),
            np.tile(slots.astype(dtype), (len(normalised), 1, 1)),
            vectors.reshape(-1, self.k),
        ]
        hr = collection.hr(index)
        if hr is not None:
            if self.normalisation.target_range == "own":
                low = high = None
            hr_normalised, _, _ = self.normalisation.normalise(
                hr, upscale_mask(mask, scale), low, high
            )
            arrays.append(extract_patches(hr_normalised, corners * scale, scale * size))
        if keep is not None:
            keep.append((normalised, mask))
        return arrays

    def _target_patches(self) -> np.ndarray:
        from napari_pclesr.data import target_domains

        config = self.config
        size = config.scale * config.patch_size
        if config.target_domain == "natural":
            return target_domains.natural_patches(size, config.target_data)
        if config.target_domain == "unpaired":
            return target_domains.unpaired_patches(size, config.target_data)
        frames, masks = zip(*self._rescaled_sources, strict=True)
        return target_domains.rescaled_patches(list(frames), list(masks), size)

    # -- batches --------------------------------------------------------------------------------

    def next_batch(self) -> tuple[torch.Tensor, ...]:
        """(LR, slot maps, V(I_LR)[, HR]); a new epoch draws fresh simulated noise when
        configured."""
        start = time.perf_counter()
        if self.sampler.epoch_done:
            next_epoch = self.sampler.epoch + 1
            if self.config.fresh_noise_per_epoch and self.train_data.simulated and next_epoch > 0:
                chunks = [
                    self._sequence_patches(self.train_data, index, layout, next_epoch)
                    for index, layout in enumerate(self.train_layouts)
                ]
                lr = torch.from_numpy(np.concatenate([c[0] for c in chunks]))[:, None]
                vectors = torch.from_numpy(np.concatenate([c[2] for c in chunks]))
                self.sampler.set_tensors({0: lr, 2: vectors})
            self.sampler.start_epoch()
        batch = self.sampler.next_batch()
        self.wait += time.perf_counter() - start
        return batch

    def next_target(self) -> torch.Tensor:
        """A batch of target-domain patches (B, 1, s·p, s·p)."""
        start = time.perf_counter()
        (batch,) = self.target_sampler.next_batch()
        self.wait += time.perf_counter() - start
        return batch

    def validation_batches(self, size: int):
        """Chunks of this process's validation tensors (LR, slots, V(I_LR)[, HR]) on the
        device."""
        for start in range(0, len(self.val[0]), size):
            yield tuple(
                tensor[start : start + size].to(self.device, non_blocking=True)
                for tensor in self.val
            )

    # -- checkpoints ----------------------------------------------------------------------------

    def rank_state(self) -> dict:
        """This process's batch orders (training and target-domain patches)."""
        target = None if self.target_sampler is None else self.target_sampler.state_dict()
        return {"sampler": self.sampler.state_dict(), "target_sampler": target}

    def load_rank_state(self, state: dict) -> None:
        """Restore :meth:`rank_state`."""
        self.sampler.load_state_dict(state["sampler"])
        if self.target_sampler is not None:
            self.target_sampler.load_state_dict(state["target_sampler"])


def _layout_from(spec: str, shape: tuple[int, int]) -> tuple[FibreLayout, str]:
    """A layout file, or the cores detected in a raw bundle frame, with a message."""
    path = Path(spec)
    if path.suffix.lower() in _LAYOUT_SUFFIXES:
        layout = FibreLayout.from_file(path, shape=shape if path.suffix.lower() == ".npy" else None)
        return layout, f"{layout.n_fibres:,} fibres from {path}"
    from napari_pclesr.io import read_sequence

    frames, _ = read_sequence(path)
    layout = FibreLayout.detect(np.asarray(frames[0]))
    return layout, f"{layout.n_fibres:,} fibre cores detected in the raw bundle frame {path}"
