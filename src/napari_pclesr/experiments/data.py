"""The data of an experiment: paired sequences built from a :class:`DataSpec` and a scale.

* ``phantoms`` / ``syn``: phantom sequences, LR simulated through the training bundle with
  seed 000's noise (:class:`~napari_pclesr.data.PairedSequences` with one
  :class:`~napari_pclesr.data.patches.Degradation` per sequence).
* ``phantoms`` / ``org``: the stand-in for original data. The LR goes through *another*
  degradation than training's (another bundle seed and density, noise ``noise_scale`` times
  stronger, a Gaussian fibre PSF of ``psf_sigma`` pixels before the fibres sample), and the
  target is HR-hat from :mod:`napari_pclesr.registration` (registration, mosaic, mapped back)
  with its residual misalignment, as in seed 000 — not the phantom itself.
* ``recording``: a real recording's frames as LR and their HR-hat from mosaicking.
* For a ``downsampled`` task (seed 002) the HR is a reconstructed pCLE frame (a phantom through
  the training bundle), cut to the largest square inside the field of view and mapped to
  [0, 1], and the LR is its antialiased bicubic downsampling, as the seed made its patches.

Roles draw disjoint seeds, so test sequences are never seen in training.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from napari_pclesr.experiments.config import DataSpec, ScaleSpec

__all__ = ["ROLE_SEEDS", "TestSequence", "build_pairs", "org_layout", "test_sequences"]

#: Seed offsets of the roles: the sequences of each role come from their own seeds.
ROLE_SEEDS = {"train": 0, "val": 10_000, "test": 20_000}
#: Seed 000's noise (σ_m, σ_a).
SIGMA_MULT, SIGMA_ADD = 0.05, 0.01


@dataclass(frozen=True)
class TestSequence:
    """One scored sequence: LR input, HR (or HR-hat) reference and the field of view."""

    name: str
    lr: np.ndarray
    hr: np.ndarray
    mask: np.ndarray


def build_pairs(spec: DataSpec, scale: ScaleSpec, role: str, seed: int, factor: int = 1):
    """The (HR, LR) sequences of a data source for a role (``train``, ``val`` or ``test``).

    Parameters
    ----------
    spec : DataSpec
    scale : ScaleSpec
        Frame size, frames per sequence and sequence counts.
    role : {"train", "val", "test"}
    seed : int
        The experiment's seed.
    factor : int
        SR factor of a ``downsampled`` task (LR = bicubic downsampling by it); 1 otherwise.

    Returns
    -------
    napari_pclesr.data.PairedSequences
        Simulated LR for ``syn`` at factor 1 (drawn with the training seed), recorded LR
        otherwise.
    """
    from napari_pclesr.data import PairedSequences
    from napari_pclesr.data.patches import Degradation

    count = getattr(scale, f"{role}_sequences")
    base = seed + spec.seed + ROLE_SEEDS[role]
    if spec.kind == "recording":
        return _recording_pairs(spec, scale, role)
    if factor > 1:
        return _downsampled_pairs(spec, scale, count, base, factor)
    shape = (scale.frame_size, scale.frame_size)
    hr = [_phantom_frames(scale.frames, shape, base + index) for index in range(count)]
    names = [f"{spec.name}-{role}{index:02d}" for index in range(count)]
    if spec.degradation == "syn":
        return PairedSequences(hr, names=names, degradations=[Degradation()] * count)
    lr, hr_hat, masks, kept_names = [], [], [], []
    for index, frames in enumerate(hr):
        try:
            low, target, mask = org_pair(frames, spec, base + index)
        except ValueError as exc:
            # As with real recordings, a sequence that cannot be mosaicked has no HR-hat.
            warnings.warn(f"{names[index]} left out: {exc}", stacklevel=2)
            continue
        lr.append(low)
        hr_hat.append(target)
        masks.append(mask)
        kept_names.append(names[index])
    if not lr:
        raise ValueError(
            f"data source {spec.name!r}: no {role} sequence could be mosaicked into HR-hat; "
            "use larger frames or more frames per sequence (scales.*.frame_size, frames)."
        )
    return PairedSequences(hr_hat, lr, names=kept_names, fov_masks=masks)


def test_sequences(pairs, seed: int) -> list[TestSequence]:
    """The scored sequences of a collection: LR (a simulation drawn with ``seed`` for
    simulated LR), the reference, 0 outside the FoV, and the FoV on the LR grid."""
    from napari_pclesr.data.patches import upscale_mask

    sequences = []
    for index in range(len(pairs)):
        mask = pairs.fov_mask(index)
        lr = pairs.lr(index, seed=seed, sigma_mult=SIGMA_MULT, sigma_add=SIGMA_ADD)
        hr = pairs.hr(index) * upscale_mask(mask, pairs.scale)
        sequences.append(TestSequence(pairs.names[index], lr, hr.astype(np.float32), mask))
    return sequences


def org_layout(spec: DataSpec, shape: tuple[int, int]):
    """The fibre layout of the ``org`` degradation for frames of ``shape``."""
    from napari_pclesr import FibreLayout
    from napari_pclesr.fibre import fibre_count_for

    count = max(3, round(fibre_count_for(shape) * spec.density))
    return FibreLayout.synthetic(shape, count, seed=spec.bundle_seed)


def org_pair(hr: np.ndarray, spec: DataSpec, seed: int):
    """LR through the ``org`` degradation and HR-hat by mosaicking it; frames whose
    registration failed are dropped.

    Returns
    -------
    lr, hr_hat : numpy.ndarray (T', H, W)
    mask : bool array (H, W)
    """
    from scipy import ndimage

    simulator = _cached_simulator(spec, hr.shape[-2:])
    blurred = ndimage.gaussian_filter(hr, (0, spec.psf_sigma, spec.psf_sigma))
    lr = simulator.simulate(
        blurred,
        sigma_mult=SIGMA_MULT * spec.noise_scale,
        sigma_add=SIGMA_ADD * spec.noise_scale,
        seed=seed,
    )
    mask = simulator.fov_mask
    hr_hat = _hr_hat(lr, mask)
    kept = np.isfinite(hr_hat).all(axis=(1, 2))
    if kept.sum() < 2:
        raise ValueError(
            f"mosaicking kept {kept.sum()} of its {len(lr)} frames (too little overlap)"
        )
    return lr[kept], np.where(mask, hr_hat[kept], 0.0).astype(np.float32), mask


_SIMULATORS: dict = {}


def _cached_simulator(spec: DataSpec, shape):
    from napari_pclesr import Simulator

    key = (spec.bundle_seed, spec.density, tuple(shape))
    if key not in _SIMULATORS:
        _SIMULATORS[key] = Simulator(org_layout(spec, tuple(shape)))
    return _SIMULATORS[key]


def _hr_hat(lr: np.ndarray, mask) -> np.ndarray:
    from napari_pclesr.registration import iter_mosaic

    steps = iter_mosaic(lr, mask, device="cpu")
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result = done.value
            break
    return np.asarray(result.hr_hat.read(np.arange(len(lr))), dtype=np.float32)


def _phantom_frames(n_frames: int, shape, seed: int) -> np.ndarray:
    from napari_pclesr.data import phantom_sequence
    from napari_pclesr.data.phantoms import PHANTOM_KINDS

    kind = PHANTOM_KINDS[seed % len(PHANTOM_KINDS)]
    return phantom_sequence(n_frames, shape, seed=seed, kind=kind).frames


def _recording_pairs(spec: DataSpec, scale: ScaleSpec, role: str):
    """Consecutive blocks of a recording: train first, then validation, then test frames.

    Integer frames are scaled to [0, 1] by their type (the metrics need that range); the FoV is
    estimated once from the chosen frames, since video compression leaves the dark surround
    slightly above 0.
    """
    from napari_pclesr.data import PairedSequences
    from napari_pclesr.io import read_sequence
    from napari_pclesr.io.fov import estimate_fov

    frames, _info = read_sequence(spec.path)
    dtype = np.dtype(frames.dtype)
    if dtype.kind not in "uif":
        raise ValueError(f"{spec.path}: frames of type {dtype} are not grey levels.")
    peak = float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0
    step = spec.frame_step
    total = len(frames) if spec.frames is None else min(len(frames), spec.frames * step)
    chosen = np.arange(0, total, step)
    counts = [scale.train_sequences, scale.val_sequences, scale.test_sequences]
    blocks = np.array_split(chosen, sum(counts))
    if min(len(block) for block in blocks) < 2:
        raise ValueError(
            f"{spec.path}: too few frames for {sum(counts)} sequences; lower the sequence "
            "counts or raise data.*.frames."
        )
    mask = estimate_fov(np.asarray(frames[chosen[:: max(1, len(chosen) // 16)]])).mask
    start = {"train": 0, "val": counts[0], "test": counts[0] + counts[1]}[role]
    lr, hr_hat, masks, names = [], [], [], []
    for index in range(start, start + counts[["train", "val", "test"].index(role)]):
        block = np.where(mask, np.asarray(frames[blocks[index]], dtype=np.float32) / peak, 0.0)
        target = _hr_hat(block, mask)
        kept = np.isfinite(target).all(axis=(1, 2))
        if kept.sum() < 2:
            warnings.warn(
                f"{spec.path.stem} block {index} left out: mosaicking kept {kept.sum()} of "
                f"its {len(block)} frames",
                stacklevel=2,
            )
            continue
        lr.append(block[kept])
        hr_hat.append(np.where(mask, target[kept], 0.0).astype(np.float32))
        masks.append(mask)
        names.append(f"{spec.path.stem}-{role}{index:02d}")
    if not lr:
        raise ValueError(f"{spec.path}: no {role} block could be mosaicked into HR-hat.")
    return PairedSequences(hr_hat, lr, names=names, fov_masks=masks)


def _downsampled_pairs(spec: DataSpec, scale: ScaleSpec, count: int, base: int, factor: int):
    import torch
    import torch.nn.functional as F

    from napari_pclesr import FibreLayout, Simulator
    from napari_pclesr.data import PairedSequences
    from napari_pclesr.fibre import fibre_count_for

    shape = (scale.frame_size, scale.frame_size)
    # The training bundle of the pcle tasks (synthetic, seed 0, Cellvizio density).
    simulator = Simulator(FibreLayout.synthetic(shape, fibre_count_for(shape), seed=0))
    side = _inner_square(simulator.fov_mask, multiple=8)
    hr, lr = [], []
    for index in range(count):
        frames = simulator.simulate(
            _phantom_frames(scale.frames, shape, base + index),
            sigma_mult=SIGMA_MULT,
            sigma_add=SIGMA_ADD,
            seed=base + index,
        )
        top = (shape[0] - side) // 2
        crop = frames[:, top : top + side, top : top + side]
        low, high = crop.min(axis=(1, 2), keepdims=True), crop.max(axis=(1, 2), keepdims=True)
        crop = ((crop - low) / np.maximum(high - low, 1e-6)).astype(np.float32)
        small = F.interpolate(
            torch.from_numpy(crop)[:, None],
            scale_factor=1 / factor,
            mode="bicubic",
            antialias=True,
            align_corners=False,
        )
        hr.append(crop)
        lr.append(small[:, 0].clamp_(0, 1).numpy())
    names = [f"{spec.name}-x{factor}-{index:02d}" for index in range(count)]
    masks = [np.ones(stack.shape[-2:], dtype=bool) for stack in lr]
    return PairedSequences(hr, lr, scale=factor, names=names, fov_masks=masks)


def _inner_square(mask: np.ndarray, multiple: int) -> int:
    """Side of the largest centred square inside ``mask``, a multiple of ``multiple``."""
    height, width = mask.shape
    side = min(height, width) // multiple * multiple
    while side > multiple:
        top, left = (height - side) // 2, (width - side) // 2
        if mask[top : top + side, left : left + side].all():
            return side
        side -= multiple
    raise ValueError(f"the field of view of a {height}x{width} frame holds no square to cut.")
