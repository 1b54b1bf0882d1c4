"""Input checks shared by the core library.

Every public function that takes an image goes through :func:`as_grey_float`, so that bad input
fails early with a message that says what was wrong and what to do.
"""

from __future__ import annotations

import numpy as np


def as_grey_float(
    image,
    *,
    name: str = "image",
    ndims: tuple[int, ...] = (2, 3),
    dtype=np.float32,
    allow_nan: bool = False,
) -> np.ndarray:
    """Return ``image`` as a grey floating-point array, or raise a clear ``ValueError``.

    Parameters
    ----------
    image : array_like
        A grey frame (H, W) or a stack of frames (T, H, W). Integer and boolean input is
        converted to ``dtype`` without rescaling.
    name : str
        How the array is called in error messages.
    ndims : tuple of int
        The numbers of dimensions that are accepted.
    dtype : numpy dtype
        The floating-point type of the result.
    allow_nan : bool
        Whether NaN or infinite values are accepted.

    Returns
    -------
    numpy.ndarray
        The image as ``dtype``. No copy is made when it already has that type.

    Raises
    ------
    ValueError
        For empty, RGB(A), wrongly shaped, non-numeric or non-finite input.
    """
    array = np.asarray(image)
    check_grey_shape(array.shape, array.dtype, name=name, ndims=ndims)
    array = array.astype(dtype, copy=False)
    if not allow_nan and not np.all(np.isfinite(array)):
        raise ValueError(
            f"{name} contains NaN or infinite values; replace them (e.g. np.nan_to_num) "
            "or mask them before processing."
        )
    return array


def check_grey_shape(shape, dtype, *, name: str = "image", ndims: tuple[int, ...] = (2, 3)):
    """The checks of :func:`as_grey_float` that need only the shape and type, so that a lazy
    stack can be checked without reading it. Raises ``ValueError`` as that function does."""
    shape, dtype = tuple(shape), np.dtype(dtype)
    if dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a numeric array, got dtype {dtype}.")
    if 0 in shape:
        raise ValueError(f"{name} is empty (shape {shape}); give at least one pixel.")
    looks_rgb = len(shape) >= 3 and shape[-1] in (3, 4) and min(shape[-3:-1]) > 4
    if looks_rgb and len(shape) - 1 in ndims:
        raise ValueError(
            f"{name} looks like an RGB(A) image (shape {shape}); convert it to grey "
            "first, e.g. with skimage.color.rgb2gray."
        )
    if len(shape) not in ndims:
        wanted = " or ".join(_describe_ndim(n) for n in ndims)
        raise ValueError(f"{name} must be {wanted}, got an array of shape {shape}.")


def _describe_ndim(ndim: int) -> str:
    return {2: "a 2-D frame (H, W)", 3: "a 3-D stack (T, H, W)"}.get(ndim, f"{ndim}-D")


def check_non_negative(value: float, name: str) -> float:
    """Return ``value`` as a float, or raise ``ValueError`` if it is negative or not finite."""
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}.")
    return value


def check_grid_shape(shape, minimum: int = 2) -> tuple[int, int]:
    """Return ``shape`` as ``(H, W)`` ints, or raise ``ValueError`` if it is not one.

    Parameters
    ----------
    shape : sequence of two ints
        The grid shape.
    minimum : int
        The smallest side accepted.
    """
    try:
        height, width = (int(side) for side in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (H, W), got {shape!r}.") from None
    if height < minimum or width < minimum:
        raise ValueError(f"shape must be at least ({minimum}, {minimum}), got {(height, width)}.")
    return height, width
