"""Colour to grey conversion for readers of images that may be RGB(A)."""

from __future__ import annotations

import numpy as np

#: ITU-R BT.709 luma weights, as in ``skimage.color.rgb2gray``.
LUMA_WEIGHTS = np.array([0.2125, 0.7154, 0.0721], np.float32)


def to_grey(array: np.ndarray) -> np.ndarray:
    """Return a colour image's luma as float32, or the input unchanged when it is grey.

    Grey+alpha (2 channels) keeps the grey channel; RGB(A) uses :data:`LUMA_WEIGHTS` and drops
    alpha. Values keep their scale (0–255 stays 0–255).
    """
    array = np.asarray(array)
    if array.ndim < 3 or array.shape[-1] not in (2, 3, 4):
        return array
    if array.shape[-1] == 2:
        return array[..., 0]
    return array[..., :3].astype(np.float32) @ LUMA_WEIGHTS
