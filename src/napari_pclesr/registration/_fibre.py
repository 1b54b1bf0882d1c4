"""Multi-frame reconstruction at the fibre level: pool the fibre samples of registered frames.

When the fibre positions are known (simulated data, raw bundle frames), every frame is a set of
point samples of the tissue at those positions. After registration, the samples of all frames
of a segment lie at different places of the tissue, much denser together than one frame's
fibres. Instead of averaging interpolated frames (each already blurred by its own Delaunay
interpolation), the samples are pooled into one point set on the canvas and interpolated once,
by normalised convolution (Knutsson & Westin 1993): each sample is spread bilinearly onto the
canvas, values and counts are both smoothed by a small Gaussian, and their ratio is the image.
The Gaussian is as narrow as the pooled density allows (a few samples under the kernel), so it
fills the gaps between samples without blurring more than needed.
"""

from __future__ import annotations

import math
from collections.abc import Generator

import numpy as np
from scipy import ndimage

from napari_pclesr.registration._register import Progress
from napari_pclesr.registration._result import Registration

#: Samples wanted under the interpolation kernel (its equivalent area is 4 pi sigma²).
SAMPLES_PER_KERNEL = 6.0
#: Narrowest kernel (pixels), so that no canvas pixel between samples is left empty.
MIN_FIBRE_SIGMA = 0.3
#: Variance (pixels², per axis) that bilinear spreading already adds.
BILINEAR_VARIANCE = 1.0 / 6.0


def iter_fibre_mosaics(
    source, registration: Registration, mask, segments, layout, signals, batch_frames
) -> Generator[Progress, None, list]:
    """Fibre-level mosaics of ``segments`` (see :func:`~napari_pclesr.registration.build_mosaic`
    with ``method="fibre"``)."""
    from napari_pclesr.fibre import FibreLayout
    from napari_pclesr.registration._mosaic import Mosaic, canvas_geometry

    if not isinstance(layout, FibreLayout):
        raise ValueError(
            "method='fibre' needs the fibre layout of the frames (layout=FibreLayout ...); "
            "without one, use method='mosaic'."
        )
    if tuple(layout.shape) != source.frame_shape:
        raise ValueError(
            f"the fibre layout is for {tuple(layout.shape)} frames but the frames are "
            f"{source.frame_shape}."
        )
    positions = np.asarray(layout.positions, dtype=np.float64)
    if signals is not None:
        signals = np.asarray(signals)
        if signals.shape != (registration.n_frames, layout.n_fibres):
            raise ValueError(
                f"signals must have shape (T, N) = ({registration.n_frames}, "
                f"{layout.n_fibres}), got {signals.shape}."
            )
    maps = registration.frame_maps()
    geometry = {s: canvas_geometry(registration, s) for s in segments}
    values = {s: np.zeros(shape[0] * shape[1]) for s, (_, shape) in geometry.items()}
    counts = {s: np.zeros(shape[0] * shape[1]) for s, (_, shape) in geometry.items()}
    segment_of = registration.segment_of
    wanted = np.sort(np.concatenate([registration.kept_in(s) for s in segments]))
    done = 0
    for indices, batch in source.batches(wanted, batch_frames):
        for index, frame in zip(indices, batch, strict=True):
            if signals is None:
                samples = ndimage.map_coordinates(frame, positions.T, order=1, mode="nearest")
            else:
                samples = signals[index].astype(np.float64)
            segment = int(segment_of[index])
            origin, shape = geometry[segment]
            placed = positions @ maps[index][:, :2].T + maps[index][:, 2] - origin
            _spread(values[segment], counts[segment], placed, samples, shape)
        done += len(indices)
        yield Progress("mosaic", done, len(wanted))
    fibre_density = layout.n_fibres / max(float(mask.sum()), 1.0)
    mosaics = []
    for segment in segments:
        origin, shape = geometry[segment]
        count = counts[segment].reshape(shape)
        sigma = _kernel_sigma(count)
        smooth_count = ndimage.gaussian_filter(count, sigma, mode="constant")
        smooth_values = ndimage.gaussian_filter(
            values[segment].reshape(shape), sigma, mode="constant"
        )
        filled = smooth_count > 1e-3 * max(float(smooth_count.max()), 1e-30)
        with np.errstate(invalid="ignore", divide="ignore"):
            image = np.where(filled, smooth_values / smooth_count, 0.0)
        weight = smooth_count / fibre_density  # samples per pixel -> frames per pixel
        mosaics.append(Mosaic(image.astype(np.float32), weight.astype(np.float32), origin, segment))
    return mosaics


def _spread(values, counts, placed, samples, shape) -> None:
    """Add each sample bilinearly to the four canvas pixels around its position."""
    whole = np.floor(placed).astype(np.int64)
    fraction = placed - whole
    for d_row, d_col in ((0, 0), (0, 1), (1, 0), (1, 1)):
        rows, cols = whole[:, 0] + d_row, whole[:, 1] + d_col
        share = (fraction[:, 0] if d_row else 1 - fraction[:, 0]) * (
            fraction[:, 1] if d_col else 1 - fraction[:, 1]
        )
        inside = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
        flat = rows[inside] * shape[1] + cols[inside]
        values += np.bincount(flat, share[inside] * samples[inside], minlength=values.size)
        counts += np.bincount(flat, share[inside], minlength=counts.size)


def _kernel_sigma(count: np.ndarray) -> float:
    """Gaussian sigma that puts about SAMPLES_PER_KERNEL pooled samples under the kernel."""
    local = ndimage.uniform_filter(count, 9)
    covered = local[local > 0.1 * max(float(local.max()), 1e-30)]
    density = float(np.median(covered)) if covered.size else 1.0
    variance = SAMPLES_PER_KERNEL / (4 * math.pi * max(density, 1e-6)) - BILINEAR_VARIANCE
    return max(MIN_FIBRE_SIGMA, math.sqrt(max(variance, 0.0)))
