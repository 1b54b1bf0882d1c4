"""Fibre-core detection in raw camera frames of a fibre bundle (cores visible)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_pclesr._validation import as_grey_float

# Periods longer than this (pixels) are vignetting or the bundle outline, not the core pitch.
_LONGEST_PERIOD = 20.0


def estimate_core_spacing(frame) -> float:
    """Estimate the centre-to-centre core spacing (pixels) from the frame's power spectrum.

    The cores of a bundle form a near-hexagonal lattice, whose spectrum peaks on a ring at
    radius ``f = 2 / (sqrt(3)·d)`` cycles per pixel for a pitch ``d``. The radially averaged
    spectrum of the Hann-windowed frame is searched for that peak, ignoring periods longer than
    20 pixels.

    Parameters
    ----------
    frame : array_like, shape (H, W)
        A raw frame where cores are visible (a flat-field background is best).

    Returns
    -------
    float
        The estimated spacing in pixels.

    Raises
    ------
    ValueError
        If the spectrum has no peak, e.g. for a flat frame.
    """
    image = as_grey_float(frame, name="raw frame", ndims=(2,))
    height, width = image.shape
    window = np.outer(np.hanning(height), np.hanning(width)).astype(np.float32)
    spectrum = np.abs(np.fft.rfft2((image - image.mean()) * window)) ** 2
    frequency = np.hypot(
        np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :]
    )  # cycles per pixel
    n_bins = max(height, width) // 2
    bins = np.minimum((frequency / 0.5 * n_bins).astype(np.int64), n_bins)
    profile = ndimage.mean(spectrum, labels=bins, index=np.arange(n_bins))
    centres = (np.arange(n_bins) + 0.5) / n_bins * 0.5
    usable = centres > 1 / _LONGEST_PERIOD
    if not usable.any() or not np.isfinite(profile[usable]).any() or profile[usable].max() <= 0:
        raise ValueError("the raw frame has no periodic core pattern; is it a bundle image?")
    peak_frequency = centres[usable][np.nanargmax(profile[usable])]
    return float(2 / (np.sqrt(3) * peak_frequency))


def find_cores(frame, spacing: float | None = None) -> np.ndarray:
    """Find the (row, col) centres of fibre cores in a raw bundle frame.

    The frame is smoothed lightly (Gaussian sigma ``spacing / 10``); cores are the pixels that
    are the maximum within a Chebyshev radius of ``0.45·spacing`` (so that no neighbour core,
    at about one spacing, is inside it) and whose local contrast (the value minus the minimum
    over two spacings) passes an Otsu threshold, which drops maxima in the dark cladding and
    outside the bundle. Each centre is refined to sub-pixel precision by a parabola through the
    logarithm of the contrast along each axis, which is exact for Gaussian cores. Finally,
    small isolated clusters of cores (bright specks outside the bundle) are dropped.

    Parameters
    ----------
    frame : array_like, shape (H, W)
        A raw camera frame of the bundle, ideally a flat-field background.
    spacing : float, optional
        Core spacing in pixels; estimated with :func:`estimate_core_spacing` when omitted.

    Returns
    -------
    numpy.ndarray, shape (N, 2)
        Core centres, float64, in (row, col) pixel coordinates.

    Raises
    ------
    ValueError
        If the frame is not a grey 2-D array, the spacing is below 2 pixels, or fewer than 3
        cores are found.
    """
    image = as_grey_float(frame, name="raw frame", ndims=(2,))
    if spacing is None:
        spacing = estimate_core_spacing(image)
    spacing = float(spacing)
    if not np.isfinite(spacing) or spacing < 2:
        raise ValueError(
            f"core spacing must be at least 2 pixels to resolve cores, got {spacing:g}; "
            "image the bundle at a higher magnification or give the right spacing."
        )
    smooth = ndimage.gaussian_filter(image, spacing / 10)
    radius = max(1, int(0.45 * spacing))
    local_max = ndimage.maximum_filter(smooth, size=2 * radius + 1)
    local_min = ndimage.minimum_filter(smooth, size=2 * int(spacing) + 1)
    contrast = smooth - local_min
    peaks = (smooth == local_max) & (contrast > 0)
    rows, cols = np.nonzero(peaks)
    if len(rows) < 3:
        raise ValueError("fewer than 3 fibre cores were found; is this a raw bundle frame?")
    strong = _separate_cores_from_background(contrast[rows, cols])
    rows, cols = rows[strong], cols[strong]
    if len(rows) < 3:
        raise ValueError("fewer than 3 fibre cores passed the contrast threshold.")
    return _drop_stray_cores(_refine_centroids(contrast, rows, cols))


def _separate_cores_from_background(peak_contrast: np.ndarray) -> np.ndarray:
    """Which peaks are cores: Otsu's split of the contrasts, when they are bimodal.

    Peaks in the cladding and outside the bundle have a low contrast, cores a high one. When
    every peak is a core (a clean, uniformly lit bundle) the contrasts are unimodal, and Otsu
    would cut the cores in half; then all peaks are kept.
    """
    from skimage.filters import threshold_otsu

    threshold = threshold_otsu(peak_contrast)
    low, high = peak_contrast[peak_contrast <= threshold], peak_contrast[peak_contrast > threshold]
    if len(low) and len(high) and low.mean() > 0.5 * high.mean():
        return np.ones(len(peak_contrast), dtype=bool)
    return peak_contrast > threshold


def _drop_stray_cores(positions: np.ndarray) -> np.ndarray:
    """Drop clusters of fewer than max(3, 1 % of the largest cluster) cores.

    A cluster is a set of cores linked by neighbours within 1.5 median spacings. Bright specks
    outside the bundle (hot pixels, a camera's embedded header row) pass the contrast test too;
    left in, they would stretch the triangulation far outside the bundle. In a frame with an
    object, dark tissue splits the bundle into many clusters of hundreds of cores, which stay.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    tree = cKDTree(positions)
    reach = 1.5 * float(np.median(tree.query(positions, k=2)[0][:, 1]))
    pairs = tree.query_pairs(reach, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), pairs.T), shape=(len(positions),) * 2)
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels)
    return positions[sizes[labels] >= max(3, 0.01 * sizes.max())]


def _refine_centroids(weight: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sub-pixel peaks: a parabola through log(weight) at offsets -1, 0, +1 along each axis."""
    log_weight = np.log(np.pad(weight, 1, mode="edge") + 1e-6 * weight.max())
    rows_p, cols_p = rows + 1, cols + 1
    centre = log_weight[rows_p, cols_p]
    shifts = []
    for before, after in (
        (log_weight[rows_p - 1, cols_p], log_weight[rows_p + 1, cols_p]),
        (log_weight[rows_p, cols_p - 1], log_weight[rows_p, cols_p + 1]),
    ):
        curvature = before - 2 * centre + after
        safe = np.where(curvature < 0, curvature, -np.inf)
        shifts.append(np.clip(0.5 * (before - after) / safe, -0.5, 0.5))
    positions = np.stack([rows + shifts[0], cols + shifts[1]], axis=-1).astype(np.float64)
    height, width = weight.shape
    return np.clip(positions, 0, [height - 1, width - 1])
