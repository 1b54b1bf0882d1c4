"""A fibre layout for a recording that comes without one (``--layout auto``).

Reconstructed pCLE frames are Delaunay piecewise-linear interpolations of one value per fibre:
flat inside each triangle of fibre centres, creased along the triangle edges. The magnitude of
the discrete Laplacian is therefore a honeycomb of lines with the period of the fibre lattice,
and its power spectrum peaks on a ring at the lattice frequency ``f = 2 / (√3 · pitch)``
(cycles per pixel). :func:`estimate_fibre_pitch` finds that peak in the radially averaged
spectrum of |Laplacian| (averaged over frames) relative to the spectrum's smooth trend, and
accepts it only if it stands out clearly. MPEG and JPEG exports put their own periodic
pattern, the 8 × 8 coding-block grid, at multiples of 1/8 cycle per pixel along each axis;
those frequencies are left out. Exports are also smoothed: on the real Cellvizio MPEG the team
has, no fibre peak remains, and the estimate is refused.

:func:`layout_for_recording` turns the pitch, or when it is not measurable the standard
Cellvizio geometry (30,000 fibres in the field of view), into a synthetic bundle filling the
recording's field-of-view disc.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from napari_pclesr._validation import as_grey_float
from napari_pclesr.fibre.layout import FibreLayout
from napari_pclesr.fibre.synthetic import CELLVIZIO_FIBRES, hexagonal_bundle

__all__ = ["LayoutChoice", "PitchEstimate", "estimate_fibre_pitch", "layout_for_recording"]

#: Periods searched, in pixels (shorter than 2 px cannot be resolved; longer ones are content).
PITCH_RANGE = (2.0, 12.0)
#: How far the peak must rise above the spectrum's trend (a factor) to count as measured.
MIN_PEAK_RATIO = 1.4
# Width (radial bins) of the median filter that gives the trend, and of the peak average.
_TREND_BINS = 31
_PEAK_BINS = 5
# Coding blocks of MPEG/JPEG exports.
_BLOCK = 8


@dataclass(frozen=True)
class PitchEstimate:
    """The fibre pitch measured in a recording (or not).

    Attributes
    ----------
    pitch : float or None
        Centre-to-centre spacing of the equivalent hexagonal lattice, in pixels; None when no
        fibre pattern stands out.
    peak_ratio : float
        How far the best peak rises above the spectrum's trend (1: not at all).
    peak_pitch : float
        The pitch at that best peak, measured or not.
    """

    pitch: float | None
    peak_ratio: float
    peak_pitch: float

    @property
    def measured(self) -> bool:
        """Whether the pattern was clear enough to trust the pitch."""
        return self.pitch is not None


@dataclass(frozen=True)
class LayoutChoice:
    """A synthetic layout for a recording, with how it was chosen (for reports).

    Attributes
    ----------
    layout : FibreLayout
    pitch : float
        Pitch of the synthetic bundle, pixels.
    estimate : PitchEstimate or None
        The measurement, when one was attempted.
    message : str
        One sentence saying where the geometry comes from.
    """

    layout: FibreLayout
    pitch: float
    estimate: PitchEstimate | None
    message: str


def estimate_fibre_pitch(frames, fov_mask=None) -> PitchEstimate:
    """Measure the fibre pitch of reconstructed pCLE frames from their interpolation mesh.

    Parameters
    ----------
    frames : array_like, (H, W) or (T, H, W)
        Reconstructed frames (a few dozen spread over a recording are plenty).
    fov_mask : bool array (H, W), optional
        The field of view; the whole frame by default.

    Returns
    -------
    PitchEstimate
        ``pitch`` is None when the best peak rises less than :data:`MIN_PEAK_RATIO` above the
        trend of the spectrum (smoothed or compressed exports).
    """
    stack = as_grey_float(frames, name="frames").astype(np.float64)
    stack = stack.reshape(-1, *stack.shape[-2:])
    height, width = stack.shape[-2:]
    mask = np.ones((height, width), bool) if fov_mask is None else np.asarray(fov_mask, bool)
    # Only pixels whose 4-neighbours are all inside: the FoV edge is a crease of its own.
    inner = ndimage.binary_erosion(mask, iterations=2)
    if inner.sum() < 64:
        raise ValueError("the field of view is too small to measure a fibre pitch.")
    window = np.outer(np.hanning(height), np.hanning(width))
    creases = np.zeros((height, width // 2 + 1))
    plain = np.zeros((height, width // 2 + 1))
    for frame in stack:
        for power, image in ((creases, np.abs(ndimage.laplace(frame))), (plain, frame)):
            image = np.where(inner, image - image[inner].mean(), 0.0) * window
            power += np.abs(np.fft.rfft2(image)) ** 2
    rows, cols = np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :]
    keep = ~(_on_block_grid(rows, 1 / height) | _on_block_grid(cols, 1 / width))
    n_bins = max(height, width) // 2
    bins = np.minimum((np.hypot(rows, cols) / 0.5 * n_bins).astype(np.int64), n_bins)
    bins = np.where(keep, bins, n_bins)  # the last bin collects what is left out
    centres = (np.arange(n_bins) + 0.5) / n_bins * 0.5
    lowest, highest = (2 / (np.sqrt(3) * pitch) for pitch in PITCH_RANGE[::-1])
    usable = (centres >= lowest) & (centres <= highest)
    if usable.sum() < _TREND_BINS:
        raise ValueError("the frames are too small to measure a fibre pitch.")
    crease_excess, plain_excess = (
        _log_excess(ndimage.mean(power, labels=bins, index=np.arange(n_bins))[usable])
        for power in (creases, plain)
    )
    # A periodic texture peaks in the image and in its Laplacian alike; the mesh only in the
    # Laplacian, since linear interpolation reproduces the image's own low frequencies.
    excess = crease_excess - np.maximum(plain_excess, 0.0)
    best = int(np.argmax(excess))
    peak_pitch = float(2 / (np.sqrt(3) * centres[usable][best]))
    ratio = float(np.exp(excess[best]))
    return PitchEstimate(peak_pitch if ratio >= MIN_PEAK_RATIO else None, ratio, peak_pitch)


def _log_excess(profile: np.ndarray) -> np.ndarray:
    """log(profile) above its running median (the trend), averaged over a few bins."""
    log_profile = np.log(np.maximum(profile, np.finfo(float).tiny))
    trend = ndimage.median_filter(log_profile, size=_TREND_BINS, mode="nearest")
    return ndimage.uniform_filter1d(log_profile - trend, _PEAK_BINS, mode="nearest")


def _on_block_grid(frequency: np.ndarray, bin_width: float) -> np.ndarray:
    """Frequencies within one bin of a non-zero multiple of 1/8 cycle per pixel."""
    nearest = np.round(frequency * _BLOCK) / _BLOCK
    return (nearest != 0) & (np.abs(frequency - nearest) <= 1.01 * bin_width)


def layout_for_recording(
    frames,
    fov_mask,
    fov_circle=None,
    *,
    n_fibres: int | None = None,
    seed: int = 0,
) -> LayoutChoice:
    """A synthetic fibre layout for a recording without one.

    The bundle fills the field-of-view disc (``fov_circle``, or the disc of the mask's area
    around its centroid) with a warped hexagonal packing (:meth:`FibreLayout.synthetic`'s).
    Its pitch is measured from the frames with :func:`estimate_fibre_pitch`; when ``n_fibres``
    is given, that count is used instead, and when the pitch is not measurable the standard
    Cellvizio geometry (30,000 fibres in the disc) is.

    Parameters
    ----------
    frames : array_like (T, H, W)
        Frames of the recording (a sample is enough).
    fov_mask : bool array (H, W)
    fov_circle : (row, col, radius), optional
    n_fibres : int, optional
        Fibres in the disc; skips the measurement.
    seed : int
        Seed of the synthetic packing.

    Returns
    -------
    LayoutChoice
    """
    mask = np.asarray(fov_mask, dtype=bool)
    if not mask.any():
        raise ValueError("the field of view is empty; cannot place fibres in it.")
    if fov_circle is None:
        rows, cols = np.nonzero(mask)
        fov_circle = (rows.mean(), cols.mean(), np.sqrt(mask.sum() / np.pi))
    centre, radius = np.array(fov_circle[:2], dtype=np.float64), float(fov_circle[2])
    disc_area = np.pi * radius**2
    estimate = None
    if n_fibres is not None:
        count = int(n_fibres)
        message = f"{count:,} fibres in the FoV disc, as given"
    else:
        estimate = estimate_fibre_pitch(frames, mask)
        if estimate.measured:
            count = round(2 * disc_area / (np.sqrt(3) * estimate.pitch**2))
            message = (
                f"pitch {estimate.pitch:.2f} px measured from the recording's interpolation "
                f"mesh (peak {estimate.peak_ratio:.2f}x the spectrum's trend): {count:,} fibres"
            )
        else:
            count = CELLVIZIO_FIBRES
            message = (
                f"no fibre pattern is measurable in the recording (best peak "
                f"{estimate.peak_ratio:.2f}x the trend, below {MIN_PEAK_RATIO}; exports are "
                f"smoothed and compressed): standard geometry, {count:,} fibres in the FoV disc"
            )
    pitch = float(np.sqrt(2 * disc_area / (np.sqrt(3) * count)))
    side = 2 * int(np.ceil(radius)) + 1
    local = hexagonal_bundle(
        (side, side),
        count,
        np.random.default_rng(seed),
        jitter=0.05,
        warp=0.6,
        fov_fraction=radius / ((side - 1) / 2),
    )
    positions = local - (side - 1) / 2 + centre
    limits = np.array(mask.shape) - 0.5
    positions = positions[np.all((positions >= -0.5) & (positions <= limits), axis=1)]
    layout = FibreLayout(positions, mask.shape)
    return LayoutChoice(layout, pitch, estimate, f"{message}; pitch {pitch:.2f} px.")
