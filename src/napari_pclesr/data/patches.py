"""Paired training data: (HR, LR) sequences, normalisation and patch extraction.

Pre-processing (seed 000, §3.3, made robust; see ``docs/training.md``):

1. **Per-frame intensity map.** Every frame is mapped by the affine map that sends the 1st and
   99th percentiles of its *LR* pixels inside the field of view (FoV) to 0 and 1. The HR target
   of a pair is mapped with the map of its LR frame, so input and target share one scale and
   the inverse map returns the network output to the input's units exactly: a network that
   learned the identity gives back its input. The seed's per-set z-score followed by a
   per-frame min-max is an affine map of each frame too, so it is absorbed by this step; the
   seed's min-max itself is :meth:`Normalisation.seed000` (each frame by its own minimum and
   maximum), which is what format-1 checkpoints use.
2. **Outside the FoV**, each pixel takes the value of the nearest FoV pixel, so a network sees
   no artificial edge at the rim of the circular image. Outputs are 0 outside the FoV.
3. **Patches** (64 × 64 by default) on a grid centred in the frame.

Everything here is NumPy; the torch side (batches, augmentation) lives in
:mod:`napari_pclesr.train.batches`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from napari_pclesr._validation import as_grey_float
from napari_pclesr.data.splits import DEFAULT_FRACTIONS, split_sequences

__all__ = [
    "Degradation",
    "Normalisation",
    "PairedSequences",
    "extract_patches",
    "fill_outside_fov",
    "fov_from_frames",
    "patch_corners",
]

_TIFF_SUFFIXES = (".tif", ".tiff")
_TARGET_RANGES = ("input", "own")


# -- normalisation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Normalisation:
    """How frames are mapped into the network's units and back.

    Parameters
    ----------
    percentiles : (float, float)
        The percentiles of a frame's FoV pixels that are mapped to 0 and 1. ``(0, 100)`` is a
        min-max; the default ``(1, 99)`` ignores the few extreme pixels that fibre noise
        creates, which would otherwise set the scale.
    target_range : {"input", "own"}
        How an HR training target is mapped: ``"input"`` with the map of its LR frame (so the
        network's input and output share units), ``"own"`` by its own percentiles (seed 000).
    fill_outside : bool
        Give pixels outside the FoV the value of the nearest FoV pixel before the network sees
        them (``False``: 0, as the reconstructed image has there).

    Examples
    --------
    >>> norm = Normalisation()
    >>> frame = np.arange(100, dtype=np.float32).reshape(10, 10)
    >>> scaled, low, high = norm.normalise(frame)
    >>> np.allclose(norm.denormalise(scaled, low, high), frame)
    True
    """

    percentiles: tuple[float, float] = (1.0, 99.0)
    target_range: str = "input"
    fill_outside: bool = True

    def __post_init__(self):
        try:
            low, high = (float(p) for p in self.percentiles)
        except (TypeError, ValueError):
            raise ValueError(
                f"percentiles must be two numbers, got {self.percentiles!r}."
            ) from None
        if not 0 <= low < high <= 100:
            raise ValueError(
                f"percentiles must satisfy 0 <= low < high <= 100, got ({low}, {high})."
            )
        if self.target_range not in _TARGET_RANGES:
            raise ValueError(f"target_range must be 'input' or 'own', got {self.target_range!r}.")
        object.__setattr__(self, "percentiles", (low, high))
        object.__setattr__(self, "fill_outside", bool(self.fill_outside))

    @classmethod
    def seed000(cls) -> Normalisation:
        """Seed 000's per-frame min-max of LR and HR alike, 0 outside the FoV (format 1)."""
        return cls(percentiles=(0.0, 100.0), target_range="own", fill_outside=False)

    def to_dict(self) -> dict:
        """A JSON-friendly dict; :meth:`from_dict` reverses it."""
        return {
            "percentiles": list(self.percentiles),
            "target_range": self.target_range,
            "fill_outside": self.fill_outside,
        }

    @classmethod
    def from_dict(cls, values) -> Normalisation:
        """Inverse of :meth:`to_dict`.

        A dict of training-set statistics (``lr_mean``, ``lr_std``, ...), as format-1
        checkpoints hold, is :meth:`seed000`: their z-score followed by a per-frame min-max
        is exactly a per-frame min-max.
        """
        if not isinstance(values, dict):
            raise ValueError(f"normalisation must be a dict, got {type(values).__name__}.")
        if "percentiles" not in values and "lr_mean" in values:
            return cls.seed000()
        unknown = sorted(set(values) - {"percentiles", "target_range", "fill_outside"})
        if unknown or "percentiles" not in values:
            raise ValueError(f"normalisation settings are incomplete or unknown: {sorted(values)}.")
        return cls(**values)

    def ranges(self, frames, mask=None) -> tuple[np.ndarray, np.ndarray]:
        """The values mapped to 0 and 1 for each frame: its percentiles inside the FoV.

        Returns
        -------
        low, high : numpy.ndarray, float64, shape (T,) (scalars for one frame)
            ``high`` is ``low + 1`` for a frame that is constant inside the FoV.
        """
        array = as_grey_float(frames, name="frames")
        stack = array.reshape(-1, *array.shape[-2:])
        inside = _full_mask(mask, stack.shape[-2:])
        values = stack[:, inside].astype(np.float64)
        low, high = np.percentile(values, self.percentiles, axis=1)
        high = np.where(high > low, high, low + 1.0)
        return (low[0], high[0]) if array.ndim == 2 else (low, high)

    def normalise(self, frames, mask=None, low=None, high=None):
        """Map frames to the network's units.

        Parameters
        ----------
        frames : array_like, (H, W) or (T, H, W)
        mask : bool array (H, W), optional
            The FoV; all pixels when omitted.
        low, high : array_like, optional
            The values to map to 0 and 1 (one per frame), e.g. those of the LR frames when
            ``frames`` are their HR targets. By default :meth:`ranges` of ``frames``.

        Returns
        -------
        normalised : numpy.ndarray, float32, same shape as ``frames``
        low, high : numpy.ndarray (T,) or scalars
            What :meth:`denormalise` needs.
        """
        array = as_grey_float(frames, name="frames")
        stack = array.reshape(-1, *array.shape[-2:])
        inside = _full_mask(mask, stack.shape[-2:])
        if low is None or high is None:
            low, high = self.ranges(stack, inside)
        low_per_frame = _per_frame(low, len(stack), "low")
        span = _per_frame(high, len(stack), "high") - low_per_frame
        if np.any(span <= 0):
            raise ValueError("high must exceed low for every frame.")
        scaled = (stack - low_per_frame[:, None, None]) / span[:, None, None]
        if self.fill_outside:
            scaled = fill_outside_fov(scaled, inside)
        else:
            scaled = np.where(inside, scaled, 0.0)
        normalised = scaled.astype(np.float32).reshape(array.shape)
        if array.ndim == 2:
            return normalised, float(low_per_frame[0]), float(low_per_frame[0] + span[0])
        return normalised, low_per_frame, low_per_frame + span

    def denormalise(self, normalised, low, high, mask=None) -> np.ndarray:
        """Exact inverse of :meth:`normalise` inside the FoV: ``n · (high − low) + low``.

        ``normalised`` may be ``scale`` times larger than the frames ``low`` and ``high`` come
        from (super-resolved output); ``mask`` is then the input's FoV and is enlarged to
        match. Pixels outside the FoV are 0. Returns float32.
        """
        array = as_grey_float(normalised, name="normalised")
        stack = array.reshape(-1, *array.shape[-2:]).astype(np.float64)
        low = _per_frame(low, len(stack), "low")
        span = _per_frame(high, len(stack), "high") - low
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            mask = upscale_mask(mask, stack.shape[-1] // mask.shape[-1])
        inside = _full_mask(mask, stack.shape[-2:])
        values = stack * span[:, None, None] + low[:, None, None]
        values = np.where(inside, values, 0.0)
        return values.astype(np.float32).reshape(array.shape)


def _per_frame(values, count: int, name: str) -> np.ndarray:
    values = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if values.shape != (count,):
        raise ValueError(f"{name} needs one value per frame ({count}), got shape {values.shape}.")
    return values


def fill_outside_fov(frames, mask) -> np.ndarray:
    """Give every pixel outside the FoV the value of the nearest pixel inside it.

    Parameters
    ----------
    frames : numpy.ndarray, (H, W) or (T, H, W)
    mask : bool array (H, W)
        The FoV; must hold at least one pixel.

    Returns
    -------
    numpy.ndarray
        A new array of the same shape and type; pixels inside the FoV are unchanged.
    """
    mask = np.asarray(mask, dtype=bool)
    rows, cols = _nearest_fov_pixels(mask.tobytes(), mask.shape)
    return np.asarray(frames)[..., rows, cols]


@functools.lru_cache(maxsize=8)
def _nearest_fov_pixels(mask_bytes: bytes, shape: tuple[int, int]):
    """Row and column of the nearest FoV pixel of every pixel (cached: one EDT per mask)."""
    mask = np.frombuffer(mask_bytes, dtype=bool).reshape(shape)
    if not mask.any():
        raise ValueError("the FoV mask is empty; no pixel lies inside the field of view.")
    _, (rows, cols) = ndimage.distance_transform_edt(~mask, return_indices=True)
    return rows, cols


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


def patch_corners(mask, patch_size: int, min_inside: float = 1.0) -> np.ndarray:
    """Top-left corners (row, col) of the non-overlapping patches that lie in the FoV.

    The patch grid is centred in the frame; a patch is kept when at least ``min_inside`` of
    its pixels are inside ``mask`` (1: entirely inside; less admits patches at the rim of the
    circular field of view, whose outside pixels then must not count in the loss).

    Raises
    ------
    ValueError
        If the patch is larger than the frame, or ``min_inside`` is not in (0, 1].
    """
    mask = np.asarray(mask, dtype=bool)
    patch_size = int(patch_size)
    height, width = mask.shape
    if patch_size < 1 or patch_size > min(height, width):
        raise ValueError(
            f"patch size {patch_size} does not fit the {height}x{width} frames; use a patch "
            f"size between 1 and {min(height, width)}."
        )
    if not 0 < min_inside <= 1:
        raise ValueError(f"min_inside must be in (0, 1], got {min_inside}.")
    n_rows, n_cols = height // patch_size, width // patch_size
    top, left = (height - n_rows * patch_size) // 2, (width - n_cols * patch_size) // 2
    grid = mask[top : top + n_rows * patch_size, left : left + n_cols * patch_size]
    share = grid.reshape(n_rows, patch_size, n_cols, patch_size).mean(axis=(1, 3))
    rows, cols = np.nonzero(share >= min_inside - 1e-12)
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


@dataclass(frozen=True)
class Degradation:
    """How the simulated LR of one sequence is made: its fibre bundle and its noise.

    Training on several bundles and noise levels keeps a model from learning one bundle's
    fibre pattern or one noise level, which real recordings do not share.

    Parameters
    ----------
    bundle_seed : int
        Seed of the synthetic bundle (its jitter, warp and orientation).
    density : float
        Fibres relative to the Cellvizio density of :func:`~napari_pclesr.fibre.fibre_count_for`.
    noise_scale : (float, float)
        Factors on the run's ``sigma_mult`` and ``sigma_add``.
    """

    bundle_seed: int = 0
    density: float = 1.0
    noise_scale: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self):
        if not np.isfinite(self.density) or self.density <= 0:
            raise ValueError(f"density must be a finite number > 0, got {self.density}.")
        scales = tuple(float(value) for value in self.noise_scale)
        if len(scales) != 2 or not all(np.isfinite(v) and v >= 0 for v in scales):
            raise ValueError(f"noise_scale must be two numbers >= 0, got {self.noise_scale}.")
        object.__setattr__(self, "noise_scale", scales)
        object.__setattr__(self, "bundle_seed", int(self.bundle_seed))
        object.__setattr__(self, "density", float(self.density))


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
    degradations : sequence of Degradation, optional
        One per sequence, for simulated LR: its own synthetic bundle and noise factors. By
        default every sequence goes through the same bundle (``layout``, or a synthetic one of
        seed 0) with the run's noise.
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
        degradations: Sequence[Degradation] | None = None,
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
        if degradations is not None:
            degradations = tuple(degradations)
            if len(degradations) != count or lr is not None or layout is not None:
                raise ValueError(
                    "degradations need one Degradation per sequence, simulated LR (no lr) and "
                    "no fixed layout."
                )
        self._degradations = degradations
        self._simulators: dict[tuple, object] = {}
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
    def mixed(
        cls,
        n_sequences: int = 48,
        n_frames: int = 4,
        shape: tuple[int, int] = (256, 256),
        seed: int = 0,
        *,
        natural_share: float = 0.5,
        blurred_share: float = 0.25,
        bundles: int = 4,
        densities: Sequence[float] = (0.8, 1.0, 1.25),
        noise_scales: tuple[float, float] = (0.5, 1.5),
        scale: int = 1,
    ) -> PairedSequences:
        """Phantoms and natural images through several bundles and noise levels.

        The training data of the shipped models (``docs/models.md``): tissue phantoms of every
        kind, and scikit-image's natural images that are not held out for evaluation
        (:data:`~napari_pclesr.data.natural.TRAINING_IMAGES`), each seen by a probe moving over
        it with a random zoom and a random intensity transform (gain, offset, gamma), each
        sequence through one of ``bundles`` synthetic bundles of a random density among
        ``densities``, with noise factors drawn uniformly from ``noise_scales``. A
        ``blurred_share`` of the sequences has its HR blurred (Gaussian σ in [0.8, 2] px) before
        the bundle sees it: band-limited tissue, like a real pCLE frame taken as HR, teaches the
        network to leave detail it cannot recover alone instead of inventing it. Everything is
        drawn from ``seed``.
        """
        from napari_pclesr.data.natural import TRAINING_IMAGES, natural_image
        from napari_pclesr.data.phantoms import PHANTOM_KINDS, image_sequence, phantom_sequence

        for name, share in (("natural_share", natural_share), ("blurred_share", blurred_share)):
            if not 0 <= share <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {share}.")
        if int(bundles) < 1 or int(n_sequences) < 1:
            raise ValueError("n_sequences and bundles must be at least 1.")
        n_natural = round(int(n_sequences) * natural_share)
        images = {}
        hr, names, degradations = [], [], []
        for index in range(int(n_sequences)):
            rng = np.random.default_rng([int(seed), index])
            if index < int(n_sequences) - n_natural:
                kind = PHANTOM_KINDS[index % len(PHANTOM_KINDS)]
                frames = phantom_sequence(n_frames, shape, seed=int(rng.integers(2**31)), kind=kind)
                names.append(f"{kind}{index:03d}")
            else:
                name = TRAINING_IMAGES[index % len(TRAINING_IMAGES)]
                if name not in images:
                    images[name] = natural_image(name)
                frames = image_sequence(
                    _zoomed_to_fit(images[name], shape, rng),
                    n_frames,
                    shape,
                    seed=int(rng.integers(2**31)),
                )
                names.append(f"{name}{index:03d}")
            frames = frames.frames
            if rng.random() < blurred_share:
                frames = ndimage.gaussian_filter(frames, (0, *[rng.uniform(0.8, 2.0)] * 2))
            hr.append(_intensity_jitter(frames, rng))
            degradations.append(
                Degradation(
                    bundle_seed=int(rng.integers(int(bundles))),
                    density=float(rng.choice(np.asarray(densities, dtype=float))),
                    noise_scale=tuple(rng.uniform(*noise_scales, size=2)),
                )
            )
        return cls(hr, scale=scale, names=names, degradations=degradations)

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
        return self._simulator(self._hr[index].shape[-2:], self.degradation(index)).layout

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
        degradation = self.degradation(index)
        simulator = self._simulator(hr.shape[-2:], degradation)
        lr = simulator.simulate(
            hr,
            sigma_mult=sigma_mult * degradation.noise_scale[0],
            sigma_add=sigma_add * degradation.noise_scale[1],
            seed=self.noise_seed(index, seed, epoch),
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
        part._degradations = (
            None if self._degradations is None else tuple(self._degradations[i] for i in indices)
        )
        part._simulators = self._simulators
        return part

    def split(self, fractions=DEFAULT_FRACTIONS, seed: int = 0):
        """Split by sequence into (train, val, test) collections; see :func:`split_sequences`."""
        parts = split_sequences(len(self), fractions, seed)
        return tuple(self.subset(part) for part in (parts.train, parts.val, parts.test))

    # -- pre-processing -------------------------------------------------------------------------

    def patch_corners(self, index: int, patch_size: int, min_inside: float = 1.0) -> np.ndarray:
        """LR-grid corners of the FoV patches of a sequence; see :func:`patch_corners`."""
        return patch_corners(self._masks[index], patch_size, min_inside)

    def count_patches(self, patch_size: int, min_inside: float = 1.0) -> int:
        """How many patches the whole collection yields at this patch size."""
        return sum(
            len(self.patch_corners(i, patch_size, min_inside)) * len(self._hr[i])
            for i in range(len(self))
        )

    def patches(
        self,
        normalisation: Normalisation,
        patch_size: int,
        min_inside: float = 1.0,
        **lr_options,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Normalised, aligned LR and HR patches of every frame, and the HR-grid FoV of each.

        Parameters
        ----------
        normalisation : Normalisation
        patch_size : int
            Side of the LR patches; HR patches are ``scale`` times larger.
        min_inside : float
            Keep the grid patches with at least this share of pixels inside the FoV.
        **lr_options
            Passed to :meth:`lr` (seed, epoch and noise of a simulated LR).

        Returns
        -------
        lr : numpy.ndarray, float32, (N, p, p)
        hr : numpy.ndarray, float32, (N, s·p, s·p)
        fov : numpy.ndarray, bool, (N, s·p, s·p)
            True where a target pixel lies inside the FoV (the pixels a loss should count).
        """
        lr_chunks, hr_chunks, fov_chunks = [], [], []
        hr_size = patch_size * self.scale
        for index in range(len(self)):
            mask = self._masks[index]
            hr_mask = upscale_mask(mask, self.scale)
            lr, low, high = normalisation.normalise(self.lr(index, **lr_options), mask)
            if normalisation.target_range == "own":
                low = high = None
            hr, _, _ = normalisation.normalise(self._hr[index], hr_mask, low, high)
            corners = self.patch_corners(index, patch_size, min_inside)
            lr_chunks.append(extract_patches(lr, corners, patch_size))
            hr_chunks.append(extract_patches(hr, corners * self.scale, hr_size))
            fov = extract_patches(hr_mask[None], corners * self.scale, hr_size)
            fov_chunks.append(np.tile(fov, (len(lr), 1, 1)))
        return (
            _concatenate(lr_chunks, patch_size),
            _concatenate(hr_chunks, hr_size),
            _concatenate(fov_chunks, hr_size).astype(bool),
        )

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
            fov = self._simulator(self._hr[index].shape[-2:], self.degradation(index)).fov_mask
            return _downscale_mask(fov, self.scale)
        hr_fov = _downscale_mask(fov_from_frames(self._hr[index]), self.scale)
        return fov_from_frames(self._lr[index]) & hr_fov

    def degradation(self, index: int) -> Degradation:
        """The :class:`Degradation` of a sequence's simulated LR."""
        if self._degradations is None:
            return Degradation()
        return self._degradations[index]

    def _simulator(self, shape: tuple[int, int], degradation: Degradation):
        from napari_pclesr import FibreLayout, Simulator
        from napari_pclesr.fibre import fibre_count_for

        shape = tuple(int(side) for side in shape)
        key = (shape, degradation.bundle_seed, degradation.density)
        if key not in self._simulators:
            layout = self._layout
            if layout is None:
                n_fibres = max(3, round(fibre_count_for(shape) * degradation.density))
                layout = FibreLayout.synthetic(shape, n_fibres, seed=degradation.bundle_seed)
            elif tuple(layout.shape) != shape:
                raise ValueError(
                    f"the fibre layout is for {tuple(layout.shape)} frames but the HR frames are "
                    f"{shape}; give a layout for this grid or let a synthetic one be made."
                )
            self._simulators[key] = Simulator(layout)
        return self._simulators[key]


def _zoomed_to_fit(image: np.ndarray, shape, rng: np.random.Generator) -> np.ndarray:
    """``image`` resized by a random zoom in [0.7, 1.3], enlarged further if it must hold a
    frame of ``shape`` and a probe path (about 64 pixels).

    A reduction is low-pass filtered first (anti-aliasing): an aliased HR would teach a
    network to invent the jagged detail of the aliasing, which measurably over-sharpened
    natural and real images.
    """
    from skimage.transform import rescale

    needed = (max(shape) + 64) / min(image.shape)
    zoom = max(rng.uniform(0.7, 1.3), needed)
    # σ = 0.5/zoom input pixels damps the detail finer than the new grid can hold (a pattern
    # at the input's Nyquist frequency to 8 %); skimage's default σ is too weak for that.
    sigma = 0.5 / zoom if zoom < 1 else 0.0
    zoomed = rescale(
        image, zoom, order=3, anti_aliasing=zoom < 1, anti_aliasing_sigma=sigma, mode="reflect"
    )
    return np.clip(zoomed, 0, 1).astype(np.float32)


def _intensity_jitter(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random gamma in [0.6, 1.6], gain in [0.5, 1] and offset in [0, 0.2] for a sequence,
    so that a model meets many contrasts and brightnesses."""
    gamma = np.exp(rng.uniform(np.log(0.6), np.log(1.6)))
    gain, offset = rng.uniform(0.5, 1.0), rng.uniform(0.0, 0.2)
    return (np.clip(frames, 0, 1) ** gamma * gain + offset).astype(np.float32)


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
    return as_grey_float(frames[:], name=str(path), ndims=(3,))
