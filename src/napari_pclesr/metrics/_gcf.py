"""Global Contrast Factor (Matkovic et al. 2005), a reference-free measure of contrast."""

from __future__ import annotations

import numpy as np

from napari_pclesr.metrics._inputs import (
    as_mask_stack,
    as_unit_stack,
    frame_chunks,
    mask_chunk,
    per_frame_result,
)

GAMMA = 2.2
LEVELS = 9
# Float input this far outside [0, 1] is evidently on another scale (e.g. 0-255) and refused;
# smaller overshoots, common in SR outputs, are clipped like a display would.
RANGE_TOLERANCE = 0.5


def gcf_weights(levels: int = LEVELS) -> np.ndarray:
    """The published level weights w_i = (−0.406385·i/9 + 0.334573)·i/9 + 0.0877526."""
    fraction = np.arange(1, levels + 1) / 9.0
    return (-0.406385 * fraction + 0.334573) * fraction + 0.0877526


_WEIGHTS = gcf_weights()


def gcf(image, mask=None):
    """Global Contrast Factor of a frame or of each frame of a stack.

    Linear luminance ``l = x**2.2``, perceptual luminance ``L = 100·√l``, local contrast the
    mean |ΔL| over a pixel's existing 4-neighbours, ``C_i`` its mean over the image, then nine
    levels (the image itself first), each halving the previous one by averaging the linear
    luminance of 2×2 blocks; ``GCF = Σ w_i·C_i``. ``docs/metrics.md`` gives every detail.

    Parameters
    ----------
    image : array_like
        Grey frame (H, W) or stack (T, H, W). Floats are intensities in [0, 1]: values in
        [−0.5, 0] and [1, 1.5] are clipped to [0, 1], values beyond raise ``ValueError``.
        uint8 is divided by 255 and bool read as 0/1; other integer types are refused.
    mask : array_like of bool, optional
        Field of view, (H, W) or (T, H, W). At each level only the contrast between two
        neighbours that are both inside counts, a superpixel being inside only if all its
        pixels are; pixels with no such neighbour are left out of ``C_i``.

    Returns
    -------
    float or numpy.ndarray
        The GCF of a frame, or a (T,) array for a stack. A flat image gives 0, a one-pixel 0/1
        checkerboard of even size 100·w_1 = 11.99103.
    """
    stack, single = as_unit_stack(image, "image")
    lowest, highest = stack.min(), stack.max()
    if lowest < -RANGE_TOLERANCE or highest > 1 + RANGE_TOLERANCE:
        raise ValueError(
            f"image values span [{lowest:.4g}, {highest:.4g}], but GCF expects intensities "
            "in [0, 1]; rescale it (e.g. divide 0-255 data by 255)."
        )
    masks = as_mask_stack(mask, stack.shape)
    values = np.empty(stack.shape[0])
    for chunk in frame_chunks(stack.shape):
        linear = np.clip(stack[chunk], 0.0, 1.0) ** GAMMA
        values[chunk] = _gcf_of_linear(linear, mask_chunk(masks, chunk))
    return per_frame_result(values, single)


def _gcf_of_linear(linear: np.ndarray, inside: np.ndarray | None) -> np.ndarray:
    """GCF of a (T, H, W) stack of linear luminance; ``inside`` is (T or 1, H, W) or None."""
    if inside is None:
        inside = np.ones((1, *linear.shape[1:]), dtype=bool)
    total = np.zeros(linear.shape[0])
    for weight in _WEIGHTS:
        total += weight * _mean_local_contrast(100.0 * np.sqrt(linear), inside)
        pixels_per_block = _halve(np.ones((1, *linear.shape[1:])), np.add, 0.0)
        linear = _halve(linear, np.add, 0.0) / pixels_per_block
        inside = _halve(inside, np.logical_and, True)
    return total


def _mean_local_contrast(perceptual: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Per-frame mean over pixels of the mean |ΔL| to their 4-neighbours inside the mask."""
    vertical_pairs = inside[:, 1:, :] & inside[:, :-1, :]
    horizontal_pairs = inside[:, :, 1:] & inside[:, :, :-1]
    vertical = np.abs(np.diff(perceptual, axis=-2)) * vertical_pairs
    horizontal = np.abs(np.diff(perceptual, axis=-1)) * horizontal_pairs
    contrast_sum = _spread_to_pixels(vertical, horizontal)
    pair_count = _spread_to_pixels(vertical_pairs.astype(float), horizontal_pairs.astype(float))
    counted = pair_count > 0
    pixels = counted.sum(axis=(-2, -1))
    per_pixel = np.divide(contrast_sum, pair_count, out=np.zeros(contrast_sum.shape), where=counted)
    # A level with no neighbour pair (1×1, or nothing inside the mask) adds no contrast.
    return per_pixel.sum(axis=(-2, -1)) / np.maximum(pixels, 1)


def _spread_to_pixels(vertical: np.ndarray, horizontal: np.ndarray) -> np.ndarray:
    """Add each pair value to both pixels of the pair; returns (T, H, W)."""
    frames = max(vertical.shape[0], horizontal.shape[0])
    height, width = vertical.shape[1] + 1, horizontal.shape[2] + 1
    out = np.zeros((frames, height, width))
    out[:, 1:, :] += vertical
    out[:, :-1, :] += vertical
    out[:, :, 1:] += horizontal
    out[:, :, :-1] += horizontal
    return out


def _halve(stack: np.ndarray, combine: np.ufunc, fill) -> np.ndarray:
    """Combine the 2×2 blocks of a (T, H, W) stack with ``combine``.

    An odd height or width is padded with ``fill`` (the identity of ``combine``), so the blocks
    of the last row or column hold only the pixels that exist.
    """
    frames, height, width = stack.shape
    padded = np.full((frames, height + height % 2, width + width % 2), fill, dtype=stack.dtype)
    padded[:, :height, :width] = stack
    blocks = padded.reshape(frames, padded.shape[1] // 2, 2, padded.shape[2] // 2, 2)
    return combine.reduce(combine.reduce(blocks, axis=4), axis=2)
