"""From pair measurements to frame offsets: frame checks, segments and a robust global solve.

Each pair (a, b) measures ``offsets[b] - offsets[a]``. With pairs beyond consecutive frames the
measurements are redundant, and a weighted least-squares solve over all of them spreads the
small errors of each pair instead of adding them up along the sequence (drift). Weights follow
each pair's expected precision; an iteratively reweighted (Cauchy) solve then lowers the weight
of pairs that disagree with the rest, and pairs that still disagree by far are dropped.
Frames linked by no usable pair to any other frame are rejected; the groups of frames linked
together (connected components) are the segments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import csgraph
from scipy.sparse.linalg import spsolve

#: Iterations of the reweighted solve.
ROBUST_ITERATIONS = 6
#: Lower bound of the residual scale (pixels), so that exact data do not make every pair an
#: outlier.
MIN_SCALE_PX = 0.5
#: A pair whose residual exceeds this many scales (and at least OUTLIER_MIN_PX) is dropped.
OUTLIER_SCALES = 6.0
OUTLIER_MIN_PX = 3.0
#: A gap-1 pair this close to zero shift and this similar marks a repeated frame.
DUPLICATE_SHIFT_PX = 0.05
DUPLICATE_NCC = 0.998
#: Share of frames assumed good when judging darkness: contrast is compared with this
#: percentile of all frames' contrast, so a recording may be up to 75 % dark.
CONTRAST_REFERENCE_PERCENTILE = 75
#: Frames (not dark ones) over which the running median of sharpness is taken.
BLUR_WINDOW = 15


@dataclass(frozen=True)
class Thresholds:
    """When frames and pairs fail (see :func:`~napari_pclesr.registration.register_sequence`)."""

    min_ncc: float
    min_overlap: float
    max_shift: float
    dark_fraction: float
    blur_fraction: float


def frame_failures(
    brightness: np.ndarray, contrast: np.ndarray, sharpness: np.ndarray, thresholds: Thresholds
) -> np.ndarray:
    """Reasons (str per frame, "" for good frames) to reject frames on their own content.

    Raises
    ------
    ValueError
        If no frame has any contrast inside the FoV (an all-dark or blank sequence).
    """
    n_frames = len(contrast)
    if not np.any(contrast > 1e-6 * (np.abs(brightness) + 1.0)):
        raise ValueError(
            f"all {n_frames} frames are dark or blank (no contrast inside the field of view); "
            "check that this is the recording you meant and that the probe was on tissue."
        )
    reasons = np.full(n_frames, "", dtype=object)
    reference = np.percentile(contrast, CONTRAST_REFERENCE_PERCENTILE)
    dim = contrast < thresholds.dark_fraction * reference
    typical_level = np.median(brightness[~dim]) if (~dim).any() else np.median(brightness)
    for index in np.flatnonzero(dim):
        kind = "dark" if brightness[index] < typical_level else "flat"
        reasons[index] = (
            f"{kind}: contrast {contrast[index]:.3g} < {thresholds.dark_fraction:g} x "
            f"{reference:.3g}"
        )
    bright = np.flatnonzero(~dim)
    if bright.size and thresholds.blur_fraction > 0:
        # Sharpness depends on the tissue, so a frame is compared with its neighbours in time
        # (a running median over the frames that are not dark), not with the whole recording.
        typical = ndimage.median_filter(sharpness[bright], size=BLUR_WINDOW, mode="nearest")
        for index, local in zip(bright, typical, strict=True):
            if sharpness[index] < thresholds.blur_fraction * local:
                reasons[index] = (
                    f"blurred: sharpness {sharpness[index]:.3g} < {thresholds.blur_fraction:g} x "
                    f"{local:.3g} (median of the neighbouring frames)"
                )
    return reasons.astype(str)


def pair_failures(
    first, second, offset, ncc, overlap, converged, frame_reasons, thresholds: Thresholds
) -> np.ndarray:
    """Why each pair cannot be used ("" when it can), checked in order of severity."""
    failures = np.full(len(first), "", dtype=object)
    distance = np.hypot(offset[:, 0], offset[:, 1])
    limit = (second - first) * thresholds.max_shift
    for pair in range(len(first)):
        a, b = int(first[pair]), int(second[pair])
        if frame_reasons[a] or frame_reasons[b]:
            failures[pair] = f"frame {a if frame_reasons[a] else b} rejected"
        elif not converged[pair]:
            failures[pair] = "refinement did not converge"
        elif not overlap[pair] >= thresholds.min_overlap:
            failures[pair] = (
                f"little overlap: {100 * overlap[pair]:.0f}% < {100 * thresholds.min_overlap:.0f}%"
            )
        elif not ncc[pair] >= thresholds.min_ncc:
            failures[pair] = f"low correlation: NCC {ncc[pair]:.2f} < {thresholds.min_ncc:.2f}"
        elif distance[pair] > limit[pair]:
            failures[pair] = f"jump: moved {distance[pair]:.0f} px > {limit[pair]:.0f} px"
    return failures.astype(str)


def pair_weights(ncc: np.ndarray, overlap: np.ndarray) -> np.ndarray:
    """Expected precision of each pair's shift.

    The variance of a least-squares shift grows with the residual energy, about ``1 - NCC``
    times the signal energy, and falls with the signal's gradient energy, about proportional to
    the overlap: so the weight is ``overlap / (1 - NCC)`` (with a floor on ``1 - NCC`` for
    near-identical frames).
    """
    return overlap / np.maximum(1.0 - np.nan_to_num(ncc, nan=0.0), 1e-3)


@dataclass(frozen=True)
class Solution:
    offsets: np.ndarray  # (T, 2), NaN for frames outside every component
    residual: np.ndarray  # (P,), NaN for unused pairs
    used: np.ndarray  # (P,) bool
    components: list[np.ndarray]  # frame indices, in order of first frame (singletons too)


def solve_offsets(
    n_frames: int,
    first: np.ndarray,
    second: np.ndarray,
    measured: np.ndarray,
    weights: np.ndarray,
    usable: np.ndarray,
    nodes: np.ndarray,
) -> Solution:
    """Robust weighted least-squares offsets of every group of linked frames.

    Parameters
    ----------
    n_frames : int
    first, second : int arrays (P,)
    measured : float array (P, 2)
        ``offsets[second] - offsets[first]`` as measured.
    weights : float array (P,)
    usable : bool array (P,)
        Pairs that passed their checks.
    nodes : bool array (T,)
        Frames that take part (not rejected on their own content).
    """
    used = usable.copy()
    for _ in range(3):
        components = _components(n_frames, first[used], second[used], nodes)
        offsets, residual = _robust_solve(
            n_frames, first, second, measured, weights, used, components
        )
        scale = _residual_scale(residual[used])
        inconsistent = used & (residual > max(OUTLIER_MIN_PX, OUTLIER_SCALES * scale))
        if not inconsistent.any():
            break
        used &= ~inconsistent
    residual = np.where(used, residual, np.nan)
    return Solution(offsets=offsets, residual=residual, used=used, components=components)


def _components(n_frames: int, first, second, nodes) -> list[np.ndarray]:
    graph = sparse.coo_matrix(
        (np.ones(len(first)), (first, second)), shape=(n_frames, n_frames)
    ).tocsr()
    _, labels = csgraph.connected_components(graph, directed=False)
    groups: dict[int, list[int]] = {}
    for frame in np.flatnonzero(nodes):
        groups.setdefault(int(labels[frame]), []).append(int(frame))
    return sorted((np.asarray(members) for members in groups.values()), key=lambda m: m[0])


def _robust_solve(n_frames, first, second, measured, weights, used, components):
    """Offsets with each component's first frame at 0; iteratively reweighted (Cauchy)."""
    anchors = np.zeros(n_frames, dtype=bool)
    in_component = np.zeros(n_frames, dtype=bool)
    for members in components:
        anchors[members[0]] = True
        in_component[members] = True
    free = in_component & ~anchors
    position = np.cumsum(free) - 1
    offsets = np.full((n_frames, 2), np.nan)
    offsets[in_component] = 0.0
    residual = np.full(len(first), np.nan)
    pairs = np.flatnonzero(used)
    if pairs.size == 0 or not free.any():
        return offsets, _residuals(offsets, first, second, measured)
    robust = np.ones(pairs.size)
    for _ in range(ROBUST_ITERATIONS):
        solved = _weighted_solve(
            first[pairs], second[pairs], measured[pairs], weights[pairs] * robust, free, position
        )
        offsets[free] = solved
        residual = _residuals(offsets, first, second, measured)
        scale = _residual_scale(residual[pairs])
        robust = 1.0 / (1.0 + (residual[pairs] / scale) ** 2)
    return offsets, residual


def _weighted_solve(first, second, measured, weights, free, position) -> np.ndarray:
    """Normal equations of min sum w |d_b - d_a - m|^2 over the free frames."""
    n_free = int(free.sum())
    rows, cols, values = [], [], []
    rhs = np.zeros((n_free, 2))
    for node, sign in ((second, 1.0), (first, -1.0)):
        on = free[node]
        np.add.at(rhs, position[node[on]], sign * weights[on, None] * measured[on])
    for left in (first, second):
        for right in (first, second):
            sign = 1.0 if left is right else -1.0
            on = free[left] & free[right]
            rows.append(position[left[on]])
            cols.append(position[right[on]])
            values.append(sign * weights[on])
    matrix = sparse.coo_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_free, n_free),
    ).tocsc()
    solution = spsolve(matrix, rhs)
    return np.asarray(solution).reshape(n_free, 2)


def _residuals(offsets, first, second, measured) -> np.ndarray:
    difference = offsets[second] - offsets[first] - measured
    return np.hypot(difference[:, 0], difference[:, 1])


def _residual_scale(residual: np.ndarray) -> float:
    residual = residual[np.isfinite(residual)]
    if residual.size == 0:
        return MIN_SCALE_PX
    return max(MIN_SCALE_PX, 1.4826 * float(np.median(residual)))
