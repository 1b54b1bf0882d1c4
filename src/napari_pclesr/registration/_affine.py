"""Affine refinement of each frame against the mosaic (``model="affine"``).

A translation explains most of a pCLE probe's motion, but the scanning makes frames of a
moving probe slightly sheared and scaled, and the probe may rotate a little. After the
translation mosaic is built, every kept frame is registered to it by Gauss–Newton on the six
parameters of an affine map (Lucas–Kanade again, on the smoothed half-resolution frame against
the mosaic smoothed by the same amount), then the mosaic is rebuilt; this repeats a few times.
A frame whose map would deform it by more than ``MAX_DEFORMATION`` keeps its previous map.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator

import numpy as np
from scipy import ndimage

from napari_pclesr.registration._frames import BATCH_FRAMES, FrameSource
from napari_pclesr.registration._register import Progress, drain
from napari_pclesr.registration._result import Registration

#: Gauss–Newton steps per frame and round.
AFFINE_STEPS = 6
#: Largest accepted |A - I| entry (shear, scale change or rotation of ~9 degrees).
MAX_DEFORMATION = 0.15
#: Standard deviation (full-resolution pixels) added by halving with the [1, 3, 3, 1] kernel,
#: so that the mosaic is smoothed as much as the half-resolution frames are.
HALVING_SIGMA = float(np.sqrt(0.75))


def refine_affine(
    frames,
    registration: Registration,
    mask=None,
    *,
    rounds: int = 2,
    device="auto",
    batch_frames: int = BATCH_FRAMES,
) -> Registration:
    """Refine every kept frame's placement to an affine map against its segment's mosaic.

    Parameters
    ----------
    frames : array_like or lazy stack
        The registered (T, H, W) frames.
    registration : Registration
        A translation (or earlier affine) registration of them.
    mask : array_like of bool, optional
        The FoV; by default the registration's.
    rounds : int
        Mosaic-then-refine rounds.
    device : str or torch.device
    batch_frames : int

    Returns
    -------
    Registration
        The same frames, segments and checks, with ``transforms`` (T, 2, 3) set and
        ``offsets`` the displacement of each frame's centre.
    """
    return drain(
        iter_refine_affine(
            frames, registration, mask, rounds=rounds, device=device, batch_frames=batch_frames
        )
    )


def iter_refine_affine(
    frames,
    registration: Registration,
    mask=None,
    *,
    rounds=2,
    device="auto",
    batch_frames=BATCH_FRAMES,
) -> Generator[Progress, None, Registration]:
    """:func:`refine_affine`, yielding :class:`Progress` events (stage "affine")."""
    from napari_pclesr.devices import select_device
    from napari_pclesr.registration._mosaic import iter_mosaics
    from napari_pclesr.registration._pairwise import PairwiseRegistrar

    source = FrameSource(frames)
    mask = registration.fov_mask if mask is None else source.fov_mask(mask)
    if int(rounds) < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}.")
    torch_device = select_device(device)
    smoothing = float(registration.parameters.get("smoothing", 2.0))
    registrar = PairwiseRegistrar(
        mask, smoothing=smoothing, min_overlap=0.25, refine="lk", device=torch_device
    )
    sigma = float(np.hypot(smoothing, HALVING_SIGMA))
    maps = registration.frame_maps().copy()
    kept = registration.kept
    segment_of = registration.segment_of
    window = registrar.weight.reshape(-1).cpu().double().numpy()
    half_shape = registrar.weight.shape
    # Full-resolution position of every half-resolution pixel, relative to the frame centre.
    rows, cols = np.mgrid[: half_shape[0], : half_shape[1]]
    centre = (np.array(registration.frame_shape) - 1) / 2
    positions = np.stack([2 * rows + 0.5, 2 * cols + 0.5]).reshape(2, -1)
    current = registration
    total = int(rounds) * 2 * len(kept)
    done = 0
    for _ in range(int(rounds)):
        mosaics = yield from _counted(
            iter_mosaics(source.frames, current, mask, batch_frames=batch_frames), done, total
        )
        done += len(kept)
        canvases = {m.segment: _canvas_planes(m, sigma, torch_device) for m in mosaics}
        for indices, batch in source.batches(kept, batch_frames):
            smooth = registrar.smoothed(batch)[1].reshape(len(batch), -1).cpu().double().numpy()
            for position, index in enumerate(indices):
                planes, origin = canvases[int(segment_of[index])]
                maps[index] = _fit_affine(
                    planes, origin, smooth[position], window, positions, centre, maps[index]
                )
            done += len(indices)
            yield Progress("affine", done, total)
        displacement = np.einsum("tij,j->ti", maps[:, :, :2], centre) + maps[:, :, 2] - centre
        current = dataclasses.replace(
            registration,
            transforms=maps.copy(),
            offsets=np.where(np.isnan(registration.offsets), np.nan, displacement),
            parameters={**registration.parameters, "model": "affine", "affine_rounds": int(rounds)},
        )
    return current


def _counted(generator, done: int, total: int):
    """Re-yield a stage's progress as part of the whole refinement."""
    while True:
        try:
            event = next(generator)
        except StopIteration as stop:
            return stop.value
        yield Progress("affine", done + event.done, total)


def _canvas_planes(mosaic, sigma: float, device):
    """The mosaic smoothed like the frames, its gradients and coverage, as a (4, H, W) tensor."""
    import torch

    covered = (mosaic.weight > 0.5).astype(np.float32)
    # Normalised smoothing, so that the empty canvas around the frames does not darken edges.
    smooth_weight = ndimage.gaussian_filter(covered, sigma)
    with np.errstate(invalid="ignore", divide="ignore"):
        smooth = np.where(
            smooth_weight > 1e-3,
            ndimage.gaussian_filter(mosaic.image * covered, sigma) / smooth_weight,
            0.0,
        )
    grad_rows, grad_cols = np.gradient(smooth)
    planes = np.stack([smooth, grad_rows, grad_cols, covered]).astype(np.float32)
    return torch.as_tensor(planes, device=device)[None], mosaic.origin


def _fit_affine(planes, origin, frame, window, positions, centre, frame_map):
    """Gauss–Newton on ``mosaic(A x + b) = frame(x)`` over the frame's window.

    The mosaic is sampled by torch (on the registration's device); the 6 × 6 normal equations
    are summed with NumPy, element by element: a matrix product would call a multi-threaded
    BLAS, which stalls on a busy CPU for longer than the whole sum takes.
    """
    import torch
    import torch.nn.functional as F

    height, width = planes.shape[-2:]
    offsets = positions - centre[:, None]
    start = frame_map.copy()
    current = frame_map.copy()
    for _ in range(AFFINE_STEPS):
        placed = current[:, :2] @ positions + current[:, 2:3] - origin[:, None]
        grid = torch.as_tensor(
            np.stack([2 * placed[1] / (width - 1) - 1, 2 * placed[0] / (height - 1) - 1], -1),
            dtype=torch.float32,
            device=planes.device,
        )[None, None]
        sampled = F.grid_sample(planes, grid, mode="bilinear", align_corners=True)[0, :, 0]
        image, grad_rows, grad_cols, covered = sampled.cpu().numpy().astype(np.float64)
        weight = window * (covered > 0.999)
        if weight.sum() < 0.25 * window.sum():
            return start  # too little of the frame lies on the mosaic to fit six parameters
        jacobian = (
            grad_rows * offsets[0],
            grad_rows * offsets[1],
            grad_cols * offsets[0],
            grad_cols * offsets[1],
            grad_rows,
            grad_cols,
        )
        weighted = [weight * column for column in jacobian]
        hessian = np.array([[(w * column).sum() for column in jacobian] for w in weighted])
        gradient = np.array([(w * (image - frame)).sum() for w in weighted])
        try:
            step = -np.linalg.solve(hessian, gradient)
        except np.linalg.LinAlgError:
            return start
        change = step[:4].reshape(2, 2)
        current[:, :2] += change
        current[:, 2] += step[4:] - change @ centre
        if np.abs(step).max() < 1e-4:
            break
    if (
        not np.all(np.isfinite(current))
        or np.abs(current[:, :2] - np.eye(2)).max() > MAX_DEFORMATION
    ):
        return start
    return current
