"""Fuse registered frames into a mosaic, and map the mosaic back into every frame (HR-hat).

Each kept frame is resampled onto the mosaic canvas with a sub-pixel shift (cubic convolution,
Keys a = -0.5) or, with an affine model, a bicubic warp, and averaged with a weight that tapers
smoothly to zero at the edge of the field of view (FoV), where the fibre-bundle image is least
reliable and where a hard edge would leave seams. The canvas of a segment spans all its kept
frames; its pixel (i, j) is the point (i, j) + ``origin`` of the segment's reference frame.
HR-hat of a frame is the mosaic resampled at that frame's pixels, inside its FoV.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from napari_pclesr.io.lazy import LazyFrames
from napari_pclesr.registration._frames import BATCH_FRAMES, FrameSource
from napari_pclesr.registration._pairwise import taper_window
from napari_pclesr.registration._register import Progress, drain
from napari_pclesr.registration._result import Registration

#: Width of the weight taper at the FoV edge, as a share of the FoV radius.
WEIGHT_TAPER_FRACTION = 0.15
#: Canvas pixels whose total weight is below this are left empty (0 in the mosaic).
MIN_WEIGHT = 1e-3
#: Border added around the frames on the canvas: room for the cubic kernel's support.
CANVAS_MARGIN = 2
#: A canvas larger than this many pixels is refused (a registration gone wrong).
MAX_CANVAS_PIXELS = 400_000_000
METHODS = ("mosaic", "fibre")


@dataclass(frozen=True)
class Mosaic:
    """The fused image of one segment.

    Attributes
    ----------
    image : numpy.ndarray, float32
        Weighted average of the segment's kept frames; 0 where no frame reaches.
    weight : numpy.ndarray, float32
        Sum of the tapered weights: the number of frames covering each pixel, each counting 1
        well inside its FoV and less towards the FoV edge.
    origin : numpy.ndarray of int, shape (2,)
        Canvas pixel (0, 0) is the point ``origin`` of the segment's reference frame.
    segment : int
    """

    image: np.ndarray
    weight: np.ndarray
    origin: np.ndarray
    segment: int


def canvas_geometry(registration: Registration, segment: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Origin and shape of the canvas that holds every kept frame of a segment."""
    kept = registration.kept_in(segment)
    if kept.size == 0:
        raise ValueError(
            f"segment {segment} has no kept frame (its frames were rejected); pick another segment."
        )
    height, width = registration.frame_shape
    corners = np.array(
        [[0, 0, 1], [0, width - 1, 1], [height - 1, 0, 1], [height - 1, width - 1, 1]]
    )
    mapped = np.einsum("tij,kj->tki", registration.frame_maps()[kept], corners).reshape(-1, 2)
    origin = np.floor(mapped.min(axis=0)).astype(np.int64) - CANVAS_MARGIN
    shape = np.ceil(mapped.max(axis=0)).astype(np.int64) - origin + 1 + CANVAS_MARGIN
    if shape[0] * shape[1] > MAX_CANVAS_PIXELS:
        raise ValueError(
            f"the mosaic of segment {segment} would be {shape[0]}x{shape[1]} pixels; the "
            "registration has probably failed (check the pair residuals) or the recording is "
            "too long for one mosaic: split it."
        )
    return origin, (int(shape[0]), int(shape[1]))


def mosaic_weight(mask: np.ndarray) -> np.ndarray:
    """Per-pixel weight of a frame in the mosaic: 1 inside the FoV, tapering to 0 at its edge."""
    radius = math.sqrt(max(mask.sum(), 1) / math.pi)
    return taper_window(mask, max(2.0, WEIGHT_TAPER_FRACTION * radius))


def build_mosaic(
    frames,
    registration: Registration,
    mask=None,
    *,
    segment: int | None = None,
    method: str = "mosaic",
    layout=None,
    signals=None,
    batch_frames: int = BATCH_FRAMES,
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse the kept frames of one segment into a mosaic.

    Parameters
    ----------
    frames : array_like or lazy stack
        The (T, H, W) frames that were registered.
    registration : Registration
    mask : array_like of bool, optional
        The FoV (H, W); by default the registration's.
    segment : int, optional
        Which segment; by default the one with the most kept frames.
    method : {"mosaic", "fibre"}
        ``"mosaic"`` averages the resampled frames; ``"fibre"`` pools the fibre samples of
        all frames at their registered positions (needs ``layout``; see
        :func:`napari_pclesr.registration.fibre_canvas`).
    layout : FibreLayout, optional
        The fibre positions of the frames, for ``method="fibre"``.
    signals : array_like, shape (T, N), optional
        The fibre signals of every frame, for ``method="fibre"``; by default they are read
        from the frames at the fibre centres.
    batch_frames : int
        Frames read at a time.

    Returns
    -------
    mosaic : numpy.ndarray, float32
        The weighted average; 0 where no frame reaches.
    weight : numpy.ndarray, float32
        The per-pixel sum of weights (the effective number of frames covering each pixel).
        Canvas pixel (i, j) is the point (i, j) + origin of the segment's first frame, with
        ``origin, _ = canvas_geometry(registration, segment)``.
    """
    if segment is None:
        segment = registration.largest_segment()
    mosaics = drain(
        iter_mosaics(
            frames,
            registration,
            mask,
            segments=[segment],
            method=method,
            layout=layout,
            signals=signals,
            batch_frames=batch_frames,
        )
    )
    return mosaics[0].image, mosaics[0].weight


def iter_mosaics(
    frames,
    registration: Registration,
    mask=None,
    *,
    segments=None,
    method: str = "mosaic",
    layout=None,
    signals=None,
    batch_frames: int = BATCH_FRAMES,
) -> Generator[Progress, None, list[Mosaic]]:
    """Mosaics of several segments (default: every segment with a kept frame) in one pass over
    the frames, yielding a :class:`Progress` per batch."""
    source, mask = _checked(frames, registration, mask)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if segments is None:
        segments = [s for s in range(len(registration.segments)) if registration.kept_in(s).size]
    segments = [_check_segment(registration, s) for s in segments]
    if method == "fibre":
        from napari_pclesr.registration._fibre import iter_fibre_mosaics

        return (
            yield from iter_fibre_mosaics(
                source, registration, mask, segments, layout, signals, batch_frames
            )
        )
    maps = registration.frame_maps()
    geometry = {s: canvas_geometry(registration, s) for s in segments}
    numerators = {s: np.zeros(shape, np.float64) for s, (_, shape) in geometry.items()}
    weights = {s: np.zeros(shape, np.float64) for s, (_, shape) in geometry.items()}
    segment_of = registration.segment_of
    wanted = np.concatenate([registration.kept_in(s) for s in segments])
    wanted.sort()
    weight = mosaic_weight(mask)
    done = 0
    for indices, batch in source.batches(wanted, batch_frames):
        for index, frame in zip(indices, batch, strict=True):
            segment = int(segment_of[index])
            origin, _ = geometry[segment]
            _splat(numerators[segment], weights[segment], frame, weight, maps[index], origin)
        done += len(indices)
        yield Progress("mosaic", done, len(wanted))
    mosaics = []
    for segment in segments:
        total = weights[segment]
        with np.errstate(invalid="ignore", divide="ignore"):
            image = np.where(total > MIN_WEIGHT, numerators[segment] / total, 0.0)
        mosaics.append(
            Mosaic(
                image.astype(np.float32), total.astype(np.float32), geometry[segment][0], segment
            )
        )
    return mosaics


def hr_hat_sequence(
    frames,
    registration: Registration,
    mask=None,
    *,
    mosaics: list[Mosaic] | None = None,
    method: str = "mosaic",
    layout=None,
    signals=None,
    batch_frames: int = BATCH_FRAMES,
):
    """HR-hat of every frame: its segment's mosaic resampled at the frame's pixels.

    Parameters
    ----------
    frames, registration, mask, method, layout, signals, batch_frames
        As for :func:`build_mosaic`.
    mosaics : list of Mosaic, optional
        Mosaics already built by :func:`iter_mosaics` (with the same ``mask``); by default
        every segment's mosaic is built here.

    Returns
    -------
    RenderedFrames
        A (T, H, W) float32 :class:`~napari_pclesr.io.LazyFrames` whose frames are computed
        when read (memory: the mosaics plus the frames read).
        Frame t is aligned with input frame t; it is 0 outside the FoV, and all NaN for
        rejected frames (see ``registration.reasons``).
    """
    source, mask = _checked(frames, registration, mask)
    if mosaics is None:
        mosaics = drain(
            iter_mosaics(
                source.frames,
                registration,
                mask,
                method=method,
                layout=layout,
                signals=signals,
                batch_frames=batch_frames,
            )
        )
    by_segment = {mosaic.segment: mosaic for mosaic in mosaics}
    segment_of = registration.segment_of
    maps = registration.frame_maps()
    height, width = registration.frame_shape

    def render(indices) -> np.ndarray:
        out = np.full((len(indices), height, width), np.nan, dtype=np.float32)
        for position, index in enumerate(indices):
            mosaic = by_segment.get(int(segment_of[index]))
            if registration.rejected[index] or mosaic is None:
                continue
            values = _sample_canvas(mosaic.image, maps[index], mosaic.origin, (height, width))
            out[position] = np.where(mask, values, 0.0)
        return out

    return RenderedFrames(render, registration.n_frames, (height, width), np.float32)


class RenderedFrames(LazyFrames):
    """A lazy stack whose frames are computed again at every read, with no cache.

    Rendering an HR-hat frame from the mosaic costs a few milliseconds, less than keeping
    frames around; and writers that take a :class:`~napari_pclesr.io.LazyFrames` stream it
    batch by batch.
    """

    def read(self, indices) -> np.ndarray:
        return self._load(np.asarray(indices, dtype=np.int64).reshape(-1))


# -- resampling ------------------------------------------------------------------------------------


def _splat(numerator, total, frame, weight, frame_map, origin) -> None:
    """Add a frame (times its weight) and its weight onto the canvas at its registered place."""
    height, width = frame.shape
    if _is_translation(frame_map):
        start = frame_map[:, 2] - origin  # canvas position of frame pixel (0, 0)
        whole = np.floor(start).astype(np.int64)
        fraction = start - whole
        # Canvas pixel whole + i shows frame position i - fraction, for i = 0 .. H.
        shape = (height + 1, width + 1)
        values = _keys_resample(frame * weight, -fraction, shape)
        weights = _keys_resample(weight, -fraction, shape)
        box = (slice(whole[0], whole[0] + shape[0]), slice(whole[1], whole[1] + shape[1]))
    else:
        values, weights, box = _warp_onto_canvas(frame, weight, frame_map, origin, total.shape)
    numerator[box] += values
    total[box] += weights


def _sample_canvas(canvas, frame_map, origin, shape) -> np.ndarray:
    """The canvas at every pixel of a frame placed by ``frame_map``."""
    if _is_translation(frame_map):
        return _keys_resample(canvas, frame_map[:, 2] - origin, shape)
    import torch

    coordinates = _mapped_grid(frame_map, shape) - origin[:, None, None]
    return _bicubic(torch.as_tensor(canvas, dtype=torch.float32), coordinates).numpy()


def _is_translation(frame_map: np.ndarray) -> bool:
    return bool(np.array_equal(frame_map[:, :2], np.eye(2)))


def _keys_resample(image: np.ndarray, start, shape) -> np.ndarray:
    """``out[i, j] = image(start[0] + i, start[1] + j)`` by cubic convolution (Keys, a = -0.5),
    separably; positions outside the image read 0."""
    out = np.asarray(image, dtype=np.float32)
    for axis in (0, 1):
        out = _keys_along(out, float(start[axis]), int(shape[axis]), axis)
    return out


def _keys_along(image: np.ndarray, start: float, length: int, axis: int) -> np.ndarray:
    whole = math.floor(start)
    t = start - whole
    taps = (
        ((-0.5 * t + 1.0) * t - 0.5) * t,
        (1.5 * t - 2.5) * t * t + 1.0,
        ((-1.5 * t + 2.0) * t + 0.5) * t,
        (0.5 * t - 0.5) * t * t,
    )
    # Output i reads image[whole + i - 1 + k] for k = 0..3; pad so that every read exists.
    low = max(0, 1 - whole)
    high = max(0, whole + length + 2 - image.shape[axis])
    padding = [(0, 0), (0, 0)]
    padding[axis] = (low, high)
    padded = np.pad(image, padding) if low or high else image
    first = whole - 1 + low

    def part(k):
        index = [slice(None), slice(None)]
        index[axis] = slice(first + k, first + k + length)
        return padded[tuple(index)] * np.float32(taps[k])

    return part(0) + part(1) + part(2) + part(3)


def _mapped_grid(frame_map: np.ndarray, shape) -> np.ndarray:
    """(2, H, W) reference coordinates of every pixel of a frame placed by ``frame_map``."""
    rows, cols = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    return (
        np.einsum("ij,jhw->ihw", frame_map[:, :2], np.stack([rows, cols]))
        + frame_map[:, 2, None, None]
    )


def _warp_onto_canvas(frame, weight, frame_map, origin, canvas_shape):
    """Bicubic warp of a frame and its weight onto the canvas box its map covers."""
    import torch

    height, width = frame.shape
    corners = np.array([[0, 0], [0, width - 1], [height - 1, 0], [height - 1, width - 1]], float)
    mapped = corners @ frame_map[:, :2].T + frame_map[:, 2] - origin
    low = np.maximum(np.floor(mapped.min(axis=0)).astype(int) - 1, 0)
    high = np.minimum(np.ceil(mapped.max(axis=0)).astype(int) + 2, canvas_shape)
    rows, cols = np.mgrid[low[0] : high[0], low[1] : high[1]].astype(np.float64)
    inverse = np.linalg.inv(frame_map[:, :2])
    reference = np.stack([rows, cols]) + origin[:, None, None] - frame_map[:, 2, None, None]
    coordinates = np.einsum("ij,jhw->ihw", inverse, reference)
    stack = torch.as_tensor(np.stack([frame * weight, weight]), dtype=torch.float32)
    values, weights = _bicubic(stack, coordinates).numpy()
    return values, weights, (slice(low[0], high[0]), slice(low[1], high[1]))


def _bicubic(image, coordinates: np.ndarray):
    """Bicubic samples of image (H, W) or (C, H, W) at (2, h, w) pixel coordinates; 0 outside."""
    import torch
    import torch.nn.functional as F

    stack = image if image.ndim == 3 else image[None]
    height, width = stack.shape[-2:]
    grid = torch.as_tensor(
        np.stack(
            [
                2 * coordinates[1] / max(width - 1, 1) - 1,
                2 * coordinates[0] / max(height - 1, 1) - 1,
            ],
            axis=-1,
        ),
        dtype=torch.float32,
    )[None]
    sampled = F.grid_sample(
        stack[None], grid, mode="bicubic", padding_mode="zeros", align_corners=True
    )
    return sampled[0] if image.ndim == 3 else sampled[0, 0]


def _checked(frames, registration: Registration, mask):
    if not isinstance(registration, Registration):
        raise TypeError(f"registration must be a Registration, got {type(registration).__name__}.")
    source = FrameSource(frames)
    if len(source) != registration.n_frames or source.frame_shape != registration.frame_shape:
        raise ValueError(
            f"the frames ({len(source)} of {source.frame_shape[0]}x{source.frame_shape[1]}) are "
            f"not those that were registered ({registration.n_frames} of "
            f"{registration.frame_shape[0]}x{registration.frame_shape[1]})."
        )
    mask = registration.fov_mask if mask is None else source.fov_mask(mask)
    return source, mask


def _check_segment(registration: Registration, segment) -> int:
    segment = int(segment)
    if not 0 <= segment < len(registration.segments):
        raise ValueError(
            f"segment {segment} does not exist; the registration has "
            f"{len(registration.segments)} segment(s)."
        )
    return segment
