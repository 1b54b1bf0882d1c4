"""Input handling shared by the metrics: frames as float64 stacks, masks, and frame chunks."""

from __future__ import annotations

import numpy as np

from napari_pclesr._validation import as_grey_float

# Frames are processed in chunks of about this many pixels: small frames are batched (fewer
# Python calls), while a chunk's float64 work buffers stay small enough to be cache-friendly
# (one 576² frame per chunk measured faster than three) and a long stack is never copied whole.
CHUNK_PIXELS = 1 << 18


def as_stack(image, name: str) -> tuple[np.ndarray, bool]:
    """Return ``image`` as a float64 (T, H, W) stack and whether it was a single 2-D frame."""
    array = as_grey_float(image, name=name, dtype=np.float64)
    return (array[np.newaxis], True) if array.ndim == 2 else (array, False)


def as_unit_stack(image, name: str) -> tuple[np.ndarray, bool]:
    """Like :func:`as_stack`, for intensities on the [0, 1] scale.

    uint8 is divided by 255 and bool is read as 0/1. Other integer types are refused, because
    their scale (12-bit in 16 bits, a camera offset, ...) cannot be guessed.
    """
    dtype = np.asarray(image).dtype
    if dtype.kind in "iu" and dtype != np.uint8:
        raise ValueError(
            f"{name} has integer type {dtype}; scale it to floats in [0, 1] first "
            "(e.g. divide by the maximum possible value), only uint8 is scaled automatically."
        )
    stack, single = as_stack(image, name)
    if dtype == np.uint8:
        stack = stack / 255.0
    return stack, single


def check_same_shape(stacks: dict[str, np.ndarray]) -> tuple[int, ...]:
    """Raise ``ValueError`` unless all named stacks have one shape; return it."""
    shapes = {name: stack.shape for name, stack in stacks.items()}
    if len(set(shapes.values())) > 1:
        listing = ", ".join(f"{name} {_frames_text(shape)}" for name, shape in shapes.items())
        raise ValueError(
            f"the images must have the same shape, got {listing}; crop or resample them "
            "to one grid first."
        )
    return next(iter(shapes.values()))


def as_mask_stack(mask, stack_shape: tuple[int, int, int]) -> np.ndarray | None:
    """Return ``mask`` as a bool (T, H, W) or (1, H, W) array matching a (T, H, W) stack.

    A (H, W) mask applies to every frame; a (T, H, W) mask gives one mask per frame.
    """
    if mask is None:
        return None
    array = np.asarray(mask)
    if array.dtype != bool:
        if array.dtype.kind not in "biuf" or not np.isin(array, (0, 1)).all():
            raise ValueError("mask must be boolean (or hold only 0 and 1), True inside the FoV.")
        array = array != 0
    frames, height, width = stack_shape
    if array.shape == (height, width):
        return array[np.newaxis]
    if array.shape == (frames, height, width):
        return array
    raise ValueError(
        f"mask has shape {array.shape}, but the images are {_frames_text(stack_shape)}; "
        f"give a ({height}, {width}) mask for all frames or one mask per frame."
    )


def frame_chunks(stack_shape: tuple[int, ...]):
    """Yield slices over the first axis holding about :data:`CHUNK_PIXELS` pixels each."""
    frames = stack_shape[0]
    step = max(1, CHUNK_PIXELS // int(np.prod(stack_shape[1:])))
    for start in range(0, frames, step):
        yield slice(start, min(start + step, frames))


def mask_chunk(mask: np.ndarray | None, chunk: slice) -> np.ndarray | None:
    """The part of a (T or 1, H, W) mask that applies to the frames in ``chunk``."""
    if mask is None or mask.shape[0] == 1:
        return mask
    return mask[chunk]


def per_frame_result(values: np.ndarray, single: bool):
    """A Python float for a single 2-D frame, else the (T,) array."""
    return float(values[0]) if single else values


def _frames_text(shape: tuple[int, ...]) -> str:
    if len(shape) == 3 and shape[0] == 1:
        return f"{shape[1]}×{shape[2]}"
    return "×".join(str(n) for n in shape)
