"""Paired training data: (HR, LR) sequences, normalisation and patch extraction.

Pre-processing follows seed 000, §3.3:

1. **z-score** with the mean and standard deviation of the training set, computed separately
   for LR and HR over the pixels inside the field of view (FoV);
2. **per-frame min-max** to [0, 1], over the FoV pixels of each frame (0 outside the FoV);
3. **non-overlapping patches** (64 × 64 by default) on a grid centred in the frame, keeping
   only the patches whose pixels all lie inside the FoV.

Because step 2 is an affine map of each frame, it absorbs step 1: the normalised values equal
those of a per-frame min-max alone, up to rounding. The statistics are still computed and
stored in checkpoints, as the seed prescribes, and inference uses them to go back and forth.
The exact inverse of the normalisation of an input frame ``x`` is, with ``lo`` and ``hi`` the
frame's minimum and maximum of ``z = (x − mean) / std`` over the FoV,
``x = (n · (hi − lo) + lo) · std + mean``. Inference applies it to the network output with
the input frame's ``lo``, ``hi`` and the LR statistics, so the result is in the input's
intensity range.

Everything here is NumPy; the torch side (batches, augmentation) lives in
:mod:`napari_pclesr.train.batches`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_pclesr._validation import as_grey_float
from napari_pclesr.data.splits import DEFAULT_FRACTIONS, split_sequences

__all__ = [
    "Normalisation",
    "PairedSequences",
    "denormalise_frames",
    "extract_patches",
    "fov_from_frames",
    "normalise_frames",
    "patch_corners",
]

_TIFF_SUFFIXES = (".tif", ".tiff")


# -- normalisation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Normalisation:
    """Training-set intensity statistics used for the z-score, separately for LR and HR."""

    lr_mean: float
    lr_std: float
    hr_mean: float
    hr_std: float

    def __post_init__(self):
        for name in ("lr_mean", "lr_std", "hr_mean", "hr_std"):
            value = float(getattr(self, name))
            if not np.isfinite(value) or (name.endswith("std") and value <= 0):
                raise ValueError(
                    f"normalisation {name} must be finite{' and > 0' if 'std' in name else ''}, "
                    f"got {value}."
                )
            object.__setattr__(self, name, value)

    @classmethod
    def identity(cls) -> Normalisation:
        """Mean 0 and std 1: the z-score does nothing (used for models without statistics)."""
        return cls(0.0, 1.0, 0.0, 1.0)

    @classmethod
    def fit(cls, hr_stacks, lr_stacks, lr_masks) -> Normalisation:
        """Compute the statistics over the FoV pixels of every frame of the given stacks.

        Parameters
        ----------
        hr_stacks, lr_stacks : sequence of arrays (T, H, W)
            Aligned HR and LR stacks; HR may be ``scale`` times larger than LR.
        lr_masks : sequence of bool arrays (h, w)
            FoV of each LR stack; the HR FoV is its nearest-neighbour enlargement.
        """
        lr_moments = _Moments()
        hr_moments = _Moments()
        for hr, lr, mask in zip(hr_stacks, lr_stacks, lr_masks, strict=True):
            lr_moments.add(lr[:, mask])
            hr_moments.add(hr[:, upscale_mask(mask, hr.shape[-1] // lr.shape[-1])])
        lr_mean, lr_std = lr_moments.mean_std("LR")
        hr_mean, hr_std = hr_moments.mean_std("HR")
        return cls(lr_mean, lr_std, hr_mean, hr_std)

    def to_dict(self) -> dict[str, float]:
        """The statistics as a JSON-friendly dict."""
        return {
            "lr_mean": self.lr_mean,
            "lr_std": self.lr_std,
            "hr_mean": self.hr_mean,
            "hr_std": self.hr_std,
        }

    @classmethod
    def from_dict(cls, values) -> Normalisation:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` for missing or bad values."""
        try:
            return cls(**{key: float(values[key]) for key in cls.__dataclass_fields__})
        except (KeyError, TypeError) as exc:
            raise ValueError(f"normalisation statistics are incomplete: {exc!r}.") from None


class _Moments:
    """Running count, sum and sum of squares in float64 (exact enough for image statistics)."""

    def __init__(self):
        self.count = 0
        self.total = 0.0
        self.squares = 0.0

    def add(self, values: np.ndarray) -> None:
        values = values.astype(np.float64, copy=False)
        self.count += values.size
        self.total += float(values.sum())
        self.squares += float(np.square(values).sum())

    def mean_std(self, what: str) -> tuple[float, float]:
        if self.count == 0:
            raise ValueError(f"the training {what} frames have no pixel inside the FoV.")
        mean = self.total / self.count
        std = float(np.sqrt(max(self.squares / self.count - mean * mean, 0.0)))
        if not std > 1e-12 * max(abs(mean), 1.0):
            raise ValueError(
                f"the training {what} frames are constant (std 0) inside the FoV; they cannot "
                "be z-scored. Check that the images are not blank."
            )
        return mean, std


def normalise_frames(frames, mean: float, std: float, mask=None):
    """z-score, then min-max each frame to [0, 1] over the FoV pixels.

    Parameters
    ----------
    frames : array_like, (H, W) or (T, H, W)
    mean, std : float
        Statistics of the z-score.
    mask : bool array (H, W), optional
        The FoV; all pixels when omitted. Pixels outside it are set to 0.

    Returns
    -------
    normalised : numpy.ndarray, float32, same shape as ``frames``
    low, high : numpy.ndarray, float64, shape (T,) (or scalars for one frame)
        Minimum and maximum of the z-scored frame over the FoV; :func:`denormalise_frames`
        needs them. A frame that is constant inside the FoV normalises to 0.
    """
    array = as_grey_float(frames, name="frames")
    stack = array.reshape(-1, *array.shape[-2:])
    inside = _full_mask(mask, stack.shape[-2:])
    scored = (stack.astype(np.float64) - mean) / std
    low = np.where(inside, scored, np.inf).min(axis=(1, 2))
    high = np.where(inside, scored, -np.inf).max(axis=(1, 2))
    span = _safe_span(low, high)
    normalised = np.where(inside, (scored - low[:, None, None]) / span[:, None, None], 0.0)
    normalised = normalised.astype(np.float32).reshape(array.shape)
    if array.ndim == 2:
        return normalised, low[0], high[0]
    return normalised, low, high


def denormalise_frames(normalised, mean: float, std: float, low, high, mask=None) -> np.ndarray:
    """Exact inverse of :func:`normalise_frames`: ``(n · (high − low) + low) · std + mean``.

    ``normalised`` may be ``scale`` times larger than the frames ``low`` and ``high`` come from
    (super-resolved output); ``mask`` is then the input's FoV and is enlarged to match. Pixels
    outside the FoV are 0. Returns float32.
    """
    array = as_grey_float(normalised, name="normalised")
    stack = array.reshape(-1, *array.shape[-2:]).astype(np.float64)
    low = np.atleast_1d(np.asarray(low, dtype=np.float64))
    high = np.atleast_1d(np.asarray(high, dtype=np.float64))
    if low.shape != (len(stack),) or high.shape != (len(stack),):
        raise ValueError(
            f"low and high need one value per frame ({len(stack)}), got shapes {low.shape} and "
            f"{high.shape}."
        )
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        mask = upscale_mask(mask, stack.shape[-1] // mask.shape[-1])
    inside = _full_mask(mask, stack.shape[-2:])
    span = _safe_span(low, high)
    values = (stack * span[:, None, None] + low[:, None, None]) * std + mean
    values = np.where(inside, values, 0.0)
    return values.astype(np.float32).reshape(array.shape)


def _safe_span(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    span = high - low
    return np.where(span > 0, span, 1.0)


def _full_mask(mask, shape) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != tuple(shape):
        raise ValueError(f"the FoV mask has shape {mask.shape} but the frames are {tuple(shape)}.")
    if not mask.any():
        raise ValueError("the FoV mask is empty; no pixel lies inside the field of view.")
    return mask


def fov_from_frames(frames) -> np.ndarray:
    """FoV of a stack when none is known: the pixels that are nonzero in at least one frame.

    pCLE images are 0 outside the circular field of view (the interpolation has no data
    there), so this recovers it; a frame that is nonzero everywhere gives a full mask.
    """
    array = as_grey_float(frames, name="frames")
    return np.any(array.reshape(-1, *array.shape[-2:]) != 0, axis=0)


def upscale_mask(mask: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement of a mask by an integer factor."""
    if scale == 1:
        return mask
    return np.repeat(np.repeat(mask, scale, axis=0), scale, axis=1)


def _downscale_mask(mask: np.ndarray, scale: int) -> np.ndarray:
    """A coarse pixel is inside when all the fine pixels of its block are."""
    if scale == 1:
        return mask
    height, width = mask.shape
    return mask.reshape(height // scale, scale, width // scale, scale).all(axis=(1, 3))


def _block_mean(stack: np.ndarray, scale: int) -> np.ndarray:
    if scale == 1:
        return stack
    frames, height, width = stack.shape
    blocks = stack.reshape(frames, height // scale, scale, width // scale, scale)
    return blocks.mean(axis=(2, 4), dtype=np.float64).astype(np.float32)


# -- patches ------------------------------------------------------------------------------------


def patch_corners(mask, patch_size: int) -> np.ndarray:
    """Top-left corners (row, col) of the non-overlapping patches that lie inside the FoV.

    The patch grid is centred in the frame; a patch is kept when every one of its pixels is
    inside ``mask``.

    Raises
    ------
    ValueError
        If the patch is larger than the frame.
    """
    mask = np.asarray(mask, dtype=bool)
    patch_size = int(patch_size)
    height, width = mask.shape
    if patch_size < 1 or patch_size > min(height, width):
        raise ValueError(
            f"patch size {patch_size} does not fit the {height}x{width} frames; use a patch "
            f"size between 1 and {min(height, width)}."
        )
    n_rows, n_cols = height // patch_size, width // patch_size
    top, left = (height - n_rows * patch_size) // 2, (width - n_cols * patch_size) // 2
    grid = mask[top : top + n_rows * patch_size, left : left + n_cols * patch_size]
    inside = grid.reshape(n_rows, patch_size, n_cols, patch_size).all(axis=(1, 3))
    rows, cols = np.nonzero(inside)
    return np.stack([top + rows * patch_size, left + cols * patch_size], axis=1)


def extract_patches(frames, corners, patch_size: int) -> np.ndarray:
    """Cut square patches at ``corners`` from every frame of a stack.

    Parameters
    ----------
    frames : array (T, H, W)
    corners : int array (N, 2)
        Top-left corners (row, col).
    patch_size : int

    Returns
    -------
    numpy.ndarray, shape (T · N, patch_size, patch_size)
        Frame-major: the N patches of frame 0, then those of frame 1, ...
    """
    stack = np.asarray(frames)
    corners = np.asarray(corners, dtype=np.intp).reshape(-1, 2)
    offsets = np.arange(patch_size)
    rows = corners[:, 0, None] + offsets
    cols = corners[:, 1, None] + offsets
    patches = stack[:, rows[:, :, None], cols[:, None, :]]
    return patches.reshape(-1, patch_size, patch_size)


# -- paired sequences ---------------------------------------------------------------------------


class PairedSequences:
    """Aligned (HR, LR) sequences for supervised training.

    Each sequence is an HR stack (T, H, W) (e.g. HR-hat from mosaicking) and either its
    recorded LR stack (LR_org) or nothing, in which case the LR (LR_syn) is simulated on demand
    by the fibre-bundle :class:`~napari_pclesr.Simulator`, with a new noise draw for every seed.

    Parameters
    ----------
    hr : sequence of arrays (T, H, W) (or (H, W) for one frame)
    lr : sequence of arrays or None, optional
        Recorded LR stacks, ``scale`` times smaller than the HR ones; ``None`` simulates them.
    layout : FibreLayout, optional
        Layout of the simulated LR, on the HR grid. By default a synthetic bundle of
        Cellvizio-like density is made for each frame shape (``n_fibres`` ≈ 30,000 per
        576 × 576 pixels, seed 0).
    scale : int
        HR size / LR size. A simulated LR at ``scale`` > 1 is the simulation on the HR grid,
        averaged over ``scale`` × ``scale`` blocks.
    fov_masks : sequence of bool arrays (h, w), optional
        FoV of each sequence on the LR grid. By default the simulator's FoV for simulated LR,
        and for recorded LR the pixels that are nonzero in some LR frame and in some HR frame.
    names : sequence of str, optional
        Names of the sequences (file stems); ``"seq000"``, ... by default.
    """

    def __init__(
        self,
        hr: Sequence,
        lr: Sequence | None = None,
        *,
        layout=None,
        scale: int = 1,
        fov_masks: Sequence | None = None,
        names: Sequence[str] | None = None,
    ):
        self.scale = int(scale)
        if self.scale < 1:
            raise ValueError(f"scale must be an integer >= 1, got {scale}.")
        self._hr = [_as_stack(stack, f"HR sequence {i}") for i, stack in enumerate(hr)]
        if not self._hr:
            raise ValueError("give at least one HR sequence.")
        count = len(self._hr)
        self.names = (
            tuple(names) if names is not None else tuple(f"seq{i:03d}" for i in range(count))
        )
        if len(self.names) != count:
            raise ValueError(f"{len(self.names)} names were given for {count} sequences.")
        if lr is not None and len(lr) != count:
            raise ValueError(f"{len(lr)} LR sequences were given for {count} HR sequences.")
        self._lr = (
            None
            if lr is None
            else [_as_stack(s, f"LR {n}") for s, n in zip(lr, self.names, strict=True)]
        )
        self._layout = layout
        self._simulators: dict[tuple[int, int], object] = {}
        self._ids = tuple(range(count))
        self._check_shapes()
        if fov_masks is None:
            self._masks = [self._default_mask(i) for i in range(count)]
        else:
            self._masks = [np.asarray(mask, dtype=bool) for mask in fov_masks]
            for index, mask in enumerate(self._masks):
                if mask.shape != self.lr_shape(index):
                    raise ValueError(
                        f"FoV mask {index} has shape {mask.shape}, expected "
                        f"{self.lr_shape(index)} (the LR frame shape)."
                    )

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def sample(
        cls,
        n_sequences: int = 6,
        n_frames: int = 8,
        shape: tuple[int, int] = (256, 256),
        seed: int = 0,
        scale: int = 1,
    ) -> PairedSequences:
        """Phantom sequences with simulated LR: a complete data set that needs no files.

        Each sequence is :func:`napari_pclesr.data.phantom_sequence` with its own seed
        (``seed + index``); the LR is simulated through a synthetic bundle.
        """
        from napari_pclesr.data.phantoms import phantom_sequence

        hr = [phantom_sequence(n_frames, shape, seed=seed + i).frames for i in range(n_sequences)]
        return cls(hr, scale=scale, names=[f"phantom{seed + i:03d}" for i in range(n_sequences)])

    @classmethod
    def from_folder(cls, folder, *, layout=None, scale: int = 1) -> PairedSequences:
        """Read aligned stacks from ``folder/hr/*.tif`` and, if present, ``folder/lr/*.tif``.

        One TIFF stack per sequence; an LR file must have the same name as its HR file. Without
        an ``lr/`` folder the LR is simulated (with ``layout`` or a synthetic bundle).

        Raises
        ------
        FileNotFoundError
            If the folder or its ``hr/`` sub-folder is missing, or an LR file is missing.
        ValueError
            If there is no TIFF in ``hr/`` or stacks do not match.
        """
        folder = Path(folder)
        hr_dir = folder / "hr"
        if not hr_dir.is_dir():
            raise FileNotFoundError(
                f"{folder} has no 'hr' sub-folder; a training folder holds hr/ (and optionally "
                "lr/) with one TIFF stack per sequence, or use --data sample."
            )
        hr_files = sorted(p for p in hr_dir.iterdir() if p.suffix.lower() in _TIFF_SUFFIXES)
        if not hr_files:
            raise ValueError(f"{hr_dir} holds no .tif/.tiff file.")
        lr_dir = folder / "lr"
        lr = None
        if lr_dir.is_dir():
            lr_by_stem = {p.stem: p for p in lr_dir.iterdir() if p.suffix.lower() in _TIFF_SUFFIXES}
            missing = [p.name for p in hr_files if p.stem not in lr_by_stem]
            if missing:
                raise FileNotFoundError(
                    f"{lr_dir} lacks the LR stacks of {', '.join(missing)}; every hr/ file needs "
                    "an lr/ file of the same name (or remove lr/ to simulate the LR)."
                )
            lr = [_read_stack(lr_by_stem[p.stem]) for p in hr_files]
        hr = [_read_stack(p) for p in hr_files]
        return cls(hr, lr, layout=layout, scale=scale, names=[p.stem for p in hr_files])

    # -- access ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._hr)

    def __repr__(self) -> str:
        source = "simulated LR" if self.simulated else "recorded LR"
        frames = sum(len(stack) for stack in self._hr)
        return f"PairedSequences({len(self)} sequences, {frames} frames, {source}, ×{self.scale})"

    @property
    def simulated(self) -> bool:
        """Whether the LR is simulated (and so can be redrawn with new noise)."""
        return self._lr is None

    def hr(self, index: int) -> np.ndarray:
        """The HR stack of a sequence, (T, H, W) float32."""
        return self._hr[index]

    def fov_mask(self, index: int) -> np.ndarray:
        """The FoV of a sequence on the LR grid, (h, w) bool."""
        return self._masks[index]

    def fibre_layout(self, index: int):
        """The fibre layout the simulated LR of a sequence comes through (on the HR grid), or
        None for recorded LR."""
        if self._lr is not None:
            return None
        return self._simulator(self._hr[index].shape[-2:]).layout

    def lr_shape(self, index: int) -> tuple[int, int]:
        """The (h, w) of the LR frames of a sequence."""
        height, width = self._hr[index].shape[-2:]
        return height // self.scale, width // self.scale

    def noise_seed(self, index: int, seed: int, epoch: int) -> int:
        """Seed of the simulated noise of a sequence for a base seed and an epoch.

        It depends on the sequence's position in the original collection, not in a subset, so a
        sequence gets the same noise whichever split it is in.
        """
        entropy = [int(seed) & 0xFFFFFFFF, int(epoch), self._ids[index]]
        return int(np.random.SeedSequence(entropy).generate_state(1)[0])

    def lr(
        self,
        index: int,
        *,
        seed: int = 0,
        epoch: int = 0,
        sigma_mult: float = 0.05,
        sigma_add: float = 0.01,
    ) -> np.ndarray:
        """The LR stack of a sequence: the recorded one, or a simulation.

        A simulation draws its noise from :meth:`noise_seed` (``seed``, ``epoch``), so the same
        arguments give the same LR, and another epoch gives a fresh noise draw.
        """
        if self._lr is not None:
            return self._lr[index]
        hr = self._hr[index]
        simulator = self._simulator(hr.shape[-2:])
        lr = simulator.simulate(
            hr, sigma_mult=sigma_mult, sigma_add=sigma_add, seed=self.noise_seed(index, seed, epoch)
        )
        return _block_mean(lr, self.scale)

    def subset(self, indices) -> PairedSequences:
        """The sequences at ``indices``, sharing this collection's simulators."""
        indices = [int(i) for i in indices]
        part = object.__new__(PairedSequences)
        part.scale = self.scale
        part._hr = [self._hr[i] for i in indices]
        part._lr = None if self._lr is None else [self._lr[i] for i in indices]
        part.names = tuple(self.names[i] for i in indices)
        part._masks = [self._masks[i] for i in indices]
        part._ids = tuple(self._ids[i] for i in indices)
        part._layout = self._layout
        part._simulators = self._simulators
        return part

    def split(self, fractions=DEFAULT_FRACTIONS, seed: int = 0):
        """Split by sequence into (train, val, test) collections; see :func:`split_sequences`."""
        parts = split_sequences(len(self), fractions, seed)
        return tuple(self.subset(part) for part in (parts.train, parts.val, parts.test))

    # -- pre-processing -------------------------------------------------------------------------

    def fit_normalisation(self, **lr_options) -> Normalisation:
        """Training-set statistics over the FoV (LR drawn with ``lr_options``, epoch 0)."""
        lr = [self.lr(i, **lr_options) for i in range(len(self))]
        return Normalisation.fit(self._hr, lr, self._masks)

    def patch_corners(self, index: int, patch_size: int) -> np.ndarray:
        """LR-grid corners of the FoV patches of a sequence; see :func:`patch_corners`."""
        return patch_corners(self._masks[index], patch_size)

    def count_patches(self, patch_size: int) -> int:
        """How many patches the whole collection yields at this patch size."""
        return sum(
            len(self.patch_corners(i, patch_size)) * len(self._hr[i]) for i in range(len(self))
        )

    def hr_patches(self, normalisation: Normalisation, patch_size: int) -> np.ndarray:
        """Normalised HR patches (N, s·p, s·p), in the order of :meth:`lr_patches`."""
        chunks = []
        for index in range(len(self)):
            mask = upscale_mask(self._masks[index], self.scale)
            normalised, _, _ = normalise_frames(
                self._hr[index], normalisation.hr_mean, normalisation.hr_std, mask
            )
            corners = self.patch_corners(index, patch_size) * self.scale
            chunks.append(extract_patches(normalised, corners, patch_size * self.scale))
        return _concatenate(chunks, patch_size * self.scale)

    def lr_patches(self, normalisation: Normalisation, patch_size: int, **lr_options) -> np.ndarray:
        """Normalised LR patches (N, p, p) of every frame; ``lr_options`` go to :meth:`lr`."""
        chunks = []
        for index in range(len(self)):
            normalised, _, _ = normalise_frames(
                self.lr(index, **lr_options),
                normalisation.lr_mean,
                normalisation.lr_std,
                self._masks[index],
            )
            chunks.append(
                extract_patches(normalised, self.patch_corners(index, patch_size), patch_size)
            )
        return _concatenate(chunks, patch_size)

    # -- internals ------------------------------------------------------------------------------

    def _check_shapes(self) -> None:
        for index, hr in enumerate(self._hr):
            name = self.names[index]
            height, width = hr.shape[-2:]
            if height % self.scale or width % self.scale:
                raise ValueError(
                    f"HR frames of {name} are {height}x{width}, not divisible by the scale "
                    f"{self.scale}; crop them to a multiple of the scale."
                )
            if self._lr is None:
                continue
            lr = self._lr[index]
            if len(lr) != len(hr):
                raise ValueError(
                    f"sequence {name} has {len(hr)} HR frames but {len(lr)} LR frames; the "
                    "stacks must be aligned frame by frame."
                )
            if lr.shape[-2:] != self.lr_shape(index):
                raise ValueError(
                    f"sequence {name}: LR frames are {lr.shape[-2:]} but HR frames are "
                    f"{hr.shape[-2:]}; at scale {self.scale} the LR must be {self.lr_shape(index)}."
                )

    def _default_mask(self, index: int) -> np.ndarray:
        if self._lr is None:
            fov = self._simulator(self._hr[index].shape[-2:]).fov_mask
            return _downscale_mask(fov, self.scale)
        hr_fov = _downscale_mask(fov_from_frames(self._hr[index]), self.scale)
        return fov_from_frames(self._lr[index]) & hr_fov

    def _simulator(self, shape: tuple[int, int]):
        from napari_pclesr import FibreLayout, Simulator
        from napari_pclesr.fibre import fibre_count_for

        shape = tuple(int(side) for side in shape)
        if shape not in self._simulators:
            layout = self._layout
            if layout is None:
                layout = FibreLayout.synthetic(shape, fibre_count_for(shape), seed=0)
            elif tuple(layout.shape) != shape:
                raise ValueError(
                    f"the fibre layout is for {tuple(layout.shape)} frames but the HR frames are "
                    f"{shape}; give a layout for this grid or let a synthetic one be made."
                )
            self._simulators[shape] = Simulator(layout)
        return self._simulators[shape]


def _as_stack(array, name: str) -> np.ndarray:
    stack = as_grey_float(array, name=name)
    return stack[None] if stack.ndim == 2 else stack


def _concatenate(chunks: list[np.ndarray], patch_size: int) -> np.ndarray:
    if not chunks:
        return np.empty((0, patch_size, patch_size), dtype=np.float32)
    return np.concatenate(chunks, axis=0)


def _read_stack(path: Path) -> np.ndarray:
    from napari_pclesr.io import read_sequence

    frames, _ = read_sequence(path)
    return np.asarray(frames[:])
