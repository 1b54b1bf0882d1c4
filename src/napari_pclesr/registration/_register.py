"""Register a whole sequence: stream the frames, measure pairs, check, solve."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np

from napari_pclesr.registration._frames import BATCH_FRAMES, FrameSource
from napari_pclesr.registration._result import FrameQuality, PairTable, Registration
from napari_pclesr.registration._solve import (
    DUPLICATE_NCC,
    DUPLICATE_SHIFT_PX,
    Thresholds,
    frame_failures,
    pair_failures,
    pair_weights,
    solve_offsets,
)

DEFAULT_GAPS = (1, 2, 4)


class SegmentWarning(UserWarning):
    """The sequence splits into several segments (scene cuts, lift-offs, no overlap)."""


@dataclass(frozen=True)
class Progress:
    """A progress event: ``done`` of ``total`` frames of a ``stage`` ("register", "mosaic",
    "affine", "hr-hat", "pairs")."""

    stage: str
    done: int
    total: int


def register_sequence(frames, mask=None, **options) -> Registration:
    """Register every frame of a pCLE sequence to its segment's first frame (translation).

    Pairs of frames ``(t - g, t)`` for each gap ``g`` in ``gaps`` are registered by a plain,
    low-pass weighted cross-correlation of the FoV-windowed frames, refined to sub-pixel
    precision (Lucas–Kanade by default), then all pair shifts are combined by a robust
    weighted least-squares solve, so errors do not accumulate along the sequence. Frames are
    read in batches, so lazy stacks of any length use little memory. See
    ``docs/registration.md`` for the method and its measured accuracy.

    Parameters
    ----------
    frames : array_like or lazy stack
        (T, H, W) frames with T >= 2 (or a sequence of (H, W) frames of one shape).
    mask : array_like of bool, optional
        The field of view (H, W). By default it is estimated from frames spread over the
        sequence (:func:`napari_pclesr.io.estimate_fov`).
    max_shift : float, optional
        Largest plausible motion between consecutive frames, in pixels; a pair that moved
        farther (times its gap) fails as a jump. Default: half the FoV diameter.
    gaps : sequence of int
        Frame distances of the registered pairs; more gaps give more redundancy (and cost
        proportionally more).
    min_ncc : float
        Pairs whose normalised cross-correlation (smoothed frames, over their overlap) is
        lower fail ("low correlation").
    min_overlap : float
        Pairs that share less of the FoV fail ("little overlap"); also bounds the search.
    dark_fraction : float
        Frames whose contrast inside the FoV is below this fraction of the typical contrast
        (75th percentile of all frames) are rejected as dark (probe lifted off) or flat.
    blur_fraction : float
        Frames whose sharpness is below this fraction of the median are rejected as blurred
        (0 disables the check).
    smoothing : float
        Gaussian standard deviation, in pixels, applied before registration to remove the
        fibre pattern shared by all frames; about the fibre pitch or a little less.
    refine : {"lk", "parabola", "upsample"}
        Sub-pixel refinement: Lucas–Kanade (most accurate), a parabola through the correlation
        peak, or the correlation upsampled by a matrix DFT.
    device : str or torch.device
        Where the FFTs run: ``"auto"`` (CUDA, MPS, then CPU), ``"cpu"``, ``"cuda:N"``, ...
    batch_frames : int
        Frames read and prepared together.

    Returns
    -------
    Registration
        Offsets, rejected frames with reasons, segments, per-frame quality and every pair.

    Raises
    ------
    ValueError
        Fewer than 2 frames, frames of different shapes, bad parameters, or an all-dark
        sequence.

    Warns
    -----
    SegmentWarning
        When the sequence splits into several segments (scene cuts, probe lift-offs), or no
        frame overlaps any other.

    Examples
    --------
    >>> from napari_pclesr.data import phantom_sequence
    >>> sequence = phantom_sequence(8, (128, 128), seed=0)
    >>> registration = register_sequence(sequence.frames, device="cpu")
    >>> truth = sequence.offsets - sequence.offsets[0]
    >>> bool(abs(registration.offsets - truth).max() < 0.25)
    True
    """
    return drain(iter_register(frames, mask, **options))


def drain(generator: Generator, on_event=None):
    """Run a generator to its end, passing each event to ``on_event``; return its value."""
    while True:
        try:
            event = next(generator)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)


def iter_register(
    frames,
    mask=None,
    *,
    max_shift: float | None = None,
    gaps: Sequence[int] = DEFAULT_GAPS,
    min_ncc: float = 0.7,
    min_overlap: float = 0.25,
    dark_fraction: float = 0.25,
    blur_fraction: float = 0.5,
    smoothing: float = 2.0,
    refine: str = "lk",
    device="auto",
    batch_frames: int = BATCH_FRAMES,
) -> Generator[Progress, None, Registration]:
    """:func:`register_sequence`, yielding a :class:`Progress` after every batch of frames.

    It takes the same arguments. For GUI workers: iterate it, and stop iterating (or close it)
    to cancel.
    """
    from napari_pclesr.devices import select_device
    from napari_pclesr.registration._pairwise import PairwiseRegistrar

    source = FrameSource(frames)
    fov_mask = source.fov_mask(mask)
    gaps = _check_gaps(gaps, len(source))
    thresholds = _thresholds(
        fov_mask, max_shift, min_ncc, min_overlap, dark_fraction, blur_fraction
    )
    if not smoothing > 0:
        raise ValueError(f"smoothing must be > 0 pixels, got {smoothing}.")
    if int(batch_frames) < 1:
        raise ValueError(f"batch_frames must be >= 1, got {batch_frames}.")
    torch_device = select_device(device)
    registrar = PairwiseRegistrar(
        fov_mask, smoothing=smoothing, min_overlap=min_overlap, refine=refine, device=torch_device
    )
    largest_gap = max(gaps)
    recent = None  # the prepared frames from ``recent_start`` on
    recent_start = 0
    measured: dict[str, list] = {"first": [], "second": [], "measurements": []}
    statistics = []
    for indices, batch in source.batches(batch_frames=int(batch_frames)):
        prepared = registrar.prepare(batch)
        statistics.append((prepared.brightness, prepared.contrast, prepared.sharpness))
        if recent is None:
            recent, recent_start = prepared, int(indices[0])
        else:
            keep_from = max(recent_start, int(indices[0]) - largest_gap)
            recent = type(prepared).concatenate(
                [recent.take(slice(keep_from - recent_start, None)), prepared]
            )
            recent_start = keep_from
        second = np.repeat(indices, len(gaps))
        first = second - np.tile(gaps, len(indices))
        valid = first >= 0
        first, second = first[valid], second[valid]
        if first.size:
            measured["first"].append(first)
            measured["second"].append(second)
            measured["measurements"].append(
                registrar.measure(recent, first - recent_start, second - recent_start)
            )
        yield Progress("register", int(indices[-1]) + 1, len(source))
    brightness, contrast, sharpness = (
        np.concatenate(column) for column in zip(*statistics, strict=True)
    )
    parameters = {
        "model": "translation",
        "gaps": [int(gap) for gap in gaps],
        "max_shift": thresholds.max_shift,
        "min_ncc": min_ncc,
        "min_overlap": min_overlap,
        "dark_fraction": dark_fraction,
        "blur_fraction": blur_fraction,
        "smoothing": smoothing,
        "refine": refine,
        "device": str(torch_device),
    }
    return assemble(
        len(source),
        np.concatenate(measured["first"]),
        np.concatenate(measured["second"]),
        measured["measurements"],
        brightness,
        contrast,
        sharpness,
        thresholds,
        fov_mask,
        parameters,
    )


def assemble(
    n_frames,
    first,
    second,
    measurements,
    brightness,
    contrast,
    sharpness,
    thresholds,
    fov_mask,
    parameters,
) -> Registration:
    """Checks, global solve, segments and per-frame quality from all pair measurements."""
    offset = np.concatenate([m.offset for m in measurements])
    ncc = np.concatenate([m.ncc for m in measurements])
    overlap = np.concatenate([m.overlap for m in measurements])
    peak_ratio = np.concatenate([m.peak_ratio for m in measurements])
    converged = np.concatenate([m.converged for m in measurements])
    frame_reasons = frame_failures(brightness, contrast, sharpness, thresholds)
    failures = pair_failures(
        first, second, offset, ncc, overlap, converged, frame_reasons, thresholds
    )
    usable = failures == ""
    solution = solve_offsets(
        n_frames,
        first,
        second,
        np.nan_to_num(offset),
        pair_weights(ncc, overlap),
        usable,
        frame_reasons == "",
    )
    failures = np.where(
        usable & ~solution.used, "inconsistent with the other pairs", failures
    ).astype(str)
    duplicate = _duplicates(n_frames, first, second, offset, ncc)
    reasons = frame_reasons.astype(object)
    for members in solution.components:
        # A frame that matched nothing but its own repeat is as alone as one that matched nothing.
        if np.count_nonzero(~duplicate[members]) < 2:
            reasons[members] = _isolation_reason(members, first, second, failures)
    reasons = reasons.astype(str)
    rejected = reasons != ""
    pairs = PairTable(
        first=first,
        second=second,
        offset=offset,
        ncc=ncc,
        overlap=overlap,
        peak_ratio=peak_ratio,
        used=solution.used,
        residual=solution.residual,
        failure=failures,
    )
    quality = _frame_quality(n_frames, pairs, brightness, contrast, sharpness, duplicate)
    registration = Registration(
        offsets=solution.offsets,
        rejected=rejected,
        reasons=reasons,
        segments=tuple(solution.components),
        quality=quality,
        pairs=pairs,
        fov_mask=fov_mask,
        parameters=parameters,
    )
    _warn_about_segments(registration)
    return registration


def _thresholds(mask, max_shift, min_ncc, min_overlap, dark_fraction, blur_fraction) -> Thresholds:
    rows, cols = np.nonzero(mask)
    diameter = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
    if max_shift is None:
        max_shift = diameter / 2
    for name, value, low, high in (
        ("max_shift", max_shift, 0.0, np.inf),
        ("min_ncc", min_ncc, -1.0, 1.0),
        ("min_overlap", min_overlap, 0.0, 1.0),
        ("dark_fraction", dark_fraction, 0.0, 1.0),
        ("blur_fraction", blur_fraction, 0.0, 1.0),
    ):
        if not (np.isfinite(value) and low <= value <= high):
            raise ValueError(f"{name} must be a number in [{low}, {high}], got {value}.")
    if not min_overlap > 0:
        raise ValueError("min_overlap must be > 0: frames that share nothing cannot be registered.")
    return Thresholds(
        float(min_ncc),
        float(min_overlap),
        float(max_shift),
        float(dark_fraction),
        float(blur_fraction),
    )


def _check_gaps(gaps, n_frames: int) -> np.ndarray:
    gaps = np.unique(np.asarray(list(gaps), dtype=np.int64))
    if gaps.size == 0 or gaps.min() < 1:
        raise ValueError(
            f"gaps must be positive frame distances such as (1, 2, 4), got {gaps.tolist()}."
        )
    if 1 not in gaps:
        raise ValueError("gaps must include 1 (consecutive frames).")
    return gaps[gaps < n_frames]


def _isolation_reason(members: np.ndarray, first, second, failures) -> str:
    """Why a group of frames (one frame and perhaps its repeats) matched no other: the failure
    of the pair that links it to the frame before, or else to the frame after."""
    for pair in (
        np.flatnonzero((second == members[0]) & (first == members[0] - 1)),
        np.flatnonzero((first == members[-1]) & (second == members[-1] + 1)),
    ):
        if pair.size and failures[pair[0]]:
            return f"unmatched: {failures[pair[0]]}"
    return "unmatched: no usable pair with any other frame"


def _duplicates(n_frames, first, second, offset, ncc) -> np.ndarray:
    """Frames that repeat the previous one (no shift, near-perfect correlation)."""
    duplicate = np.zeros(n_frames, dtype=bool)
    repeated = (second - first == 1) & (np.nan_to_num(ncc) >= DUPLICATE_NCC)
    repeated &= np.hypot(offset[:, 0], offset[:, 1]) < DUPLICATE_SHIFT_PX
    duplicate[second[repeated]] = True
    return duplicate


def _frame_quality(
    n_frames, pairs: PairTable, brightness, contrast, sharpness, duplicate
) -> FrameQuality:
    ends = np.concatenate([pairs.first, pairs.second])
    which = np.tile(np.arange(len(pairs)), 2)
    # A frame and its repeat match perfectly and say nothing about how well it registers, so
    # such pairs rank last when each frame's best pair is chosen.
    repeat = ((pairs.second - pairs.first) == 1) & duplicate[pairs.second]
    score = np.where(repeat[which], -2.0, np.nan_to_num(pairs.ncc[which], nan=-np.inf))
    order = np.lexsort((score, ends))  # by frame, then by NCC: each frame's best pair last
    last = order[np.append(ends[order][1:] != ends[order][:-1], True)]
    best_pair, frames = which[last], ends[last]
    best_ncc = np.full(n_frames, np.nan)
    peak_ratio = np.full(n_frames, np.nan)
    best_ncc[frames] = pairs.ncc[best_pair]
    peak_ratio[frames] = pairs.peak_ratio[best_pair]
    overlap = np.zeros(n_frames)
    np.maximum.at(overlap, ends, np.nan_to_num(pairs.overlap[which]))
    used = pairs.used[which]
    squared = np.bincount(ends[used], pairs.residual[which][used] ** 2, minlength=n_frames)
    count = np.bincount(ends[used], minlength=n_frames)
    residual = np.full(n_frames, np.nan)
    np.divide(squared, count, out=residual, where=count > 0)
    return FrameQuality(
        ncc=best_ncc,
        peak_ratio=peak_ratio,
        overlap=overlap,
        residual=np.sqrt(residual),
        brightness=brightness,
        contrast=contrast,
        sharpness=sharpness,
        duplicate=duplicate,
    )


def _warn_about_segments(registration: Registration) -> None:
    fused = [i for i in range(len(registration.segments)) if registration.kept_in(i).size > 1]
    if not fused:
        warnings.warn(
            f"no frame of the {registration.n_frames} overlaps any other: every frame is its own "
            "segment and none can be fused. Check that this is one recording of moving tissue "
            "(or lower min_ncc / min_overlap).",
            SegmentWarning,
            stacklevel=3,
        )
    elif len(registration.segments) > 1:
        starts = ", ".join(str(int(registration.segments[i][0])) for i in fused)
        alone = len(registration.segments) - len(fused)
        warnings.warn(
            f"the sequence splits into {len(fused)} segment(s) starting at frames {starts}"
            + (f", and {alone} group(s) of frames matched no other" if alone else "")
            + " (scene cuts, probe lift-offs or fast motion); each is mosaicked on its own.",
            SegmentWarning,
            stacklevel=3,
        )


# ``register_sequence`` forwards its options to ``iter_register``; show their names in help().
register_sequence.__signature__ = inspect.signature(iter_register).replace(
    return_annotation=Registration
)
