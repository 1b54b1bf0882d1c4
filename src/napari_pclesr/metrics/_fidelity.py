"""Full-reference fidelity metrics: SSIM (Wang et al. 2004) and PSNR.

The SSIM follows ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False)`` exactly; ``docs/metrics.md`` spells the definition out.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_pclesr.metrics._inputs import (
    as_mask_stack,
    as_stack,
    check_same_shape,
    frame_chunks,
    mask_chunk,
    per_frame_result,
)

WINDOW_SIGMA = 1.5
WINDOW_TRUNCATE = 3.5
WINDOW_RADIUS = int(WINDOW_TRUNCATE * WINDOW_SIGMA + 0.5)  # 5: the radius scipy.ndimage uses
K1 = 0.01
K2 = 0.03


def gaussian_window_1d() -> np.ndarray:
    """The normalised 1-D Gaussian of the SSIM window (11 taps, σ = 1.5), as scipy builds it.

    The 2-D window is its outer product with itself.
    """
    offsets = np.arange(-WINDOW_RADIUS, WINDOW_RADIUS + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (offsets / WINDOW_SIGMA) ** 2)
    return weights / weights.sum()


_WINDOW = gaussian_window_1d()


def ssim(image, reference, data_range: float = 1.0, mask=None):
    """Structural similarity of ``image`` to ``reference`` (Wang et al. 2004).

    An 11×11 Gaussian window (σ = 1.5, truncated at 3.5 σ), population (co)variances and
    K1 = 0.01, K2 = 0.03, as ``skimage.metrics.structural_similarity(gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=data_range)``, which it equals to
    better than 1e-6.

    Parameters
    ----------
    image, reference : array_like
        Grey frames (H, W) or stacks (T, H, W) of one shape, with H, W >= 11. Integers are not
        rescaled: give ``data_range=255`` for uint8.
    data_range : float
        The dynamic range of the intensities (1 for images in [0, 1]).
    mask : array_like of bool, optional
        The field of view, (H, W) for all frames or (T, H, W). The SSIM map is averaged over
        the pixels whose whole 11×11 window lies inside the mask (the mask eroded by the
        window radius of 5 pixels, the image border counting as outside).

    Returns
    -------
    float or numpy.ndarray
        The mean SSIM of a frame, or a (T,) array with one value per frame of a stack.

    Raises
    ------
    ValueError
        For mismatched shapes, frames smaller than the window, a non-positive ``data_range``,
        or a mask that leaves no pixel with its whole window inside.
    """
    stack, ref, masks, single = _prepare_pair(image, reference, data_range, mask)
    means = np.empty(stack.shape[0])
    eroded = None if masks is None else _erode_by_window(masks)
    for chunk in frame_chunks(stack.shape):
        ssim_map = _ssim_map(stack[chunk], ref[chunk], data_range)
        means[chunk] = _masked_frame_means(ssim_map, mask_chunk(eroded, chunk))
    return per_frame_result(means, single)


def psnr(image, reference, data_range: float = 1.0, mask=None):
    """Peak signal-to-noise ratio ``10·log10(data_range² / MSE)`` in dB.

    Parameters
    ----------
    image, reference : array_like
        Grey frames (H, W) or stacks (T, H, W) of one shape.
    data_range : float
        The dynamic range of the intensities (1 for images in [0, 1]).
    mask : array_like of bool, optional
        The field of view, (H, W) or (T, H, W); the MSE is the mean over the pixels inside.

    Returns
    -------
    float or numpy.ndarray
        PSNR of a frame, or a (T,) array for a stack. Identical frames give ``inf``.
    """
    stack, ref, masks, single = _prepare_pair(image, reference, data_range, mask, min_size=1)
    squared_error = (stack - ref) ** 2
    mse = _masked_frame_means(squared_error, masks)
    with np.errstate(divide="ignore"):
        values = 10.0 * np.log10(data_range**2 / mse)
    return per_frame_result(values, single)


def _ssim_map(image: np.ndarray, reference: np.ndarray, data_range: float) -> np.ndarray:
    """The SSIM map of float64 (T, H, W) stacks, cropped by the window radius on each side."""
    # vx + vy = F(x² + y²) − ux² − uy², so four filtered maps suffice instead of five.
    moments = np.empty((4, *image.shape))
    moments[0] = image
    moments[1] = reference
    np.multiply(image, image, out=moments[2])
    moments[2] += reference * reference
    np.multiply(image, reference, out=moments[3])
    # Row pass, then column pass, into the other buffer each time (no aliasing). Only the
    # pixels at least one radius from the border are kept; their windows never reach the
    # padding, so the boundary mode ('reflect', as skimage) does not change the result.
    row_filtered = ndi.correlate1d(moments, _WINDOW, axis=-1, mode="reflect")
    ndi.correlate1d(row_filtered, _WINDOW, axis=-2, mode="reflect", output=moments)
    radius = WINDOW_RADIUS
    mean_x, mean_y, second_sum, second_cross = moments[..., radius:-radius, radius:-radius]
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    mean_product = mean_x * mean_y
    mean_squares = mean_x * mean_x
    mean_squares += mean_y * mean_y
    # (2·ux·uy + C1)(2·vxy + C2) / ((ux² + uy² + C1)(vx + vy + C2)), reusing the buffers.
    second_cross -= mean_product
    second_cross *= 2.0
    second_cross += c2
    mean_product *= 2.0
    mean_product += c1
    numerator = np.multiply(mean_product, second_cross, out=mean_product)
    second_sum -= mean_squares
    second_sum += c2
    mean_squares += c1
    denominator = np.multiply(second_sum, mean_squares, out=mean_squares)
    return np.divide(numerator, denominator, out=numerator)


def _erode_by_window(masks: np.ndarray) -> np.ndarray:
    """Pixels whose whole (2r+1)² window is inside the mask, cropped like the SSIM map."""
    size = 2 * WINDOW_RADIUS + 1
    # A square erosion is separable: a minimum along rows, then along columns; outside the
    # image counts as outside the mask.
    eroded = ndi.minimum_filter1d(masks.view(np.uint8), size, axis=-2, mode="constant", cval=0)
    eroded = ndi.minimum_filter1d(eroded, size, axis=-1, mode="constant", cval=0)
    radius = WINDOW_RADIUS
    eroded = eroded[:, radius:-radius, radius:-radius].astype(bool)
    empty = ~eroded.any(axis=(-2, -1))
    if empty.any():
        raise ValueError(
            f"the mask leaves no pixel whose whole {size}×{size} SSIM window is inside it "
            f"(frame {int(np.argmax(empty))}); use a larger field of view or no mask."
        )
    return eroded


def _masked_frame_means(values: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
    """Per-frame means of (T, H, W) ``values``, over the mask when one is given."""
    if masks is None:
        return values.mean(axis=(-2, -1))
    masks = np.broadcast_to(masks, values.shape)
    counts = masks.sum(axis=(-2, -1))
    if (counts == 0).any():
        raise ValueError("the mask is empty in at least one frame; nothing to average.")
    return np.where(masks, values, 0.0).sum(axis=(-2, -1)) / counts


def _prepare_pair(image, reference, data_range, mask, min_size=2 * WINDOW_RADIUS + 1):
    data_range = float(data_range)
    if not np.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"data_range must be a finite number > 0, got {data_range}.")
    stack, single = as_stack(image, "image")
    ref, _ = as_stack(reference, "reference")
    shape = check_same_shape({"image": stack, "reference": ref})
    if min(shape[1:]) < min_size:
        raise ValueError(
            f"the frames are {shape[1]}×{shape[2]} pixels, but SSIM needs at least "
            f"{min_size}×{min_size} (the Gaussian window)."
        )
    return stack, ref, as_mask_stack(mask, shape), single
