"""A no-reference noise level: Immerkær's fast noise variance estimate (1996)."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from napari_pclesr.metrics._inputs import (
    as_mask_stack,
    as_unit_stack,
    frame_chunks,
    mask_chunk,
    per_frame_result,
)

#: The 3×3 mask N = [1, −2, 1]ᵀ·[1, −2, 1], the difference of two Laplacian estimates.
#: It cancels every image term that is at most linear along rows or along columns, so smooth
#: structure barely reaches its output, while white noise of std σ gives std 6σ (ΣN² = 36).
IMMERKAER_MASK = np.outer([1.0, -2.0, 1.0], [1.0, -2.0, 1.0])
#: σ = √(π/2)/6 · mean|I ∗ N|: for zero-mean Gaussian X, E|X| = std(X)·√(2/π).
IMMERKAER_SCALE = math.sqrt(math.pi / 2.0) / 6.0


def noise_sigma(image, mask=None, spacing: int = 1):
    """Estimate the standard deviation of white noise in a frame, without a reference.

    Immerkær's method (J. Immerkær, "Fast noise variance estimation", *Computer Vision and
    Image Understanding* 64(2), 1996): the image is filtered with the 3×3 mask
    ``N = [[1, −2, 1], [−2, 4, −2], [1, −2, 1]]`` and
    ``σ = √(π/2) · mean(|I ∗ N|) / 6``, the mean running over the pixels whose whole 3×3
    window lies in the image (and inside ``mask``). For Gaussian noise of std σ on a flat or
    smooth image the estimate is σ; fine texture and sharp edges also pass the filter, so on
    real images it is an upper bound that rises with high-frequency content of any origin.

    Parameters
    ----------
    image : array_like
        Grey frame (H, W) or stack (T, H, W), at least 3 × 3. Floats are used as they are
        (intensities in [0, 1] for the metrics); uint8 is divided by 255 and bool read as 0/1;
        other integer types are refused.
    mask : array_like of bool, optional
        Field of view, (H, W) or (T, H, W): only pixels whose 3×3 window is entirely inside
        it count, so the rim of a pCLE field of view and the dark outside are left out.
    spacing : int
        Pixels between the mask's taps (1: Immerkær's mask as published). Noise that is
        independent from sample to sample only on a coarser grid (pCLE: one sample per fibre,
        interpolated over ~3 pixels) is estimated on that grid by setting ``spacing`` to its
        pitch; the result is then σ of the noise of those samples, and for white pixel noise
        it is σ at any spacing.

    Returns
    -------
    float or numpy.ndarray
        σ of a frame, or a (T,) array for a stack, in the image's intensity units.

    Raises
    ------
    ValueError
        If ``spacing`` is not a positive integer, a frame is smaller than the mask
        (``2·spacing + 1`` pixels across), or the mask leaves no whole window.
    """
    if int(spacing) != spacing or spacing < 1:
        raise ValueError(f"spacing must be a positive whole number of pixels, got {spacing}.")
    spacing = int(spacing)
    stack, single = as_unit_stack(image, "image")
    height, width = stack.shape[1:]
    side = 2 * spacing + 1
    if height < side or width < side:
        raise ValueError(
            f"the noise estimate at spacing {spacing} needs frames of at least {side}×{side}, "
            f"got {height}×{width}."
        )
    masks = as_mask_stack(mask, stack.shape)
    windows = None if masks is None else _whole_windows(masks, spacing)
    if windows is not None and not windows.reshape(len(windows), -1).any(axis=1).all():
        raise ValueError(
            f"the mask leaves no pixel whose whole {side}×{side} neighbourhood is inside it; "
            "the noise estimate needs a larger field of view."
        )
    sigmas = np.empty(len(stack))
    for chunk in frame_chunks(stack.shape):
        rows = _second_difference(stack[chunk], 1, spacing)
        response = np.abs(_second_difference(rows, 2, spacing))
        inside = mask_chunk(windows, chunk)
        if inside is None:
            sigmas[chunk] = response.mean(axis=(1, 2))
        else:
            counts = inside.sum(axis=(1, 2))
            sigmas[chunk] = (response * inside).sum(axis=(1, 2)) / counts
    return per_frame_result(IMMERKAER_SCALE * sigmas, single)


def _second_difference(stack: np.ndarray, axis: int, spacing: int) -> np.ndarray:
    """``x[i−s] − 2·x[i] + x[i+s]`` along ``axis`` (s = ``spacing``), for interior samples."""
    length = stack.shape[axis] - 2 * spacing

    def shifted(step: int) -> np.ndarray:
        index = [slice(None)] * stack.ndim
        index[axis] = slice(step * spacing, step * spacing + length)
        return stack[tuple(index)]

    return shifted(0) - 2.0 * shifted(1) + shifted(2)


def _whole_windows(masks: np.ndarray, spacing: int) -> np.ndarray:
    """Interior pixels whose nine mask taps all lie inside the mask, per mask frame."""
    taps = np.zeros((1, 2 * spacing + 1, 2 * spacing + 1), bool)
    taps[:, ::spacing, ::spacing] = True
    eroded = ndi.binary_erosion(masks, structure=taps, border_value=0)
    return eroded[:, spacing:-spacing, spacing:-spacing]
