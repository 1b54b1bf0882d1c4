"""Translation between pairs of frames: low-pass cross-correlation, then sub-pixel refinement.

Every frame is prepared once (:meth:`PairwiseRegistrar.prepare`) and then compared with a few
later frames (:meth:`PairwiseRegistrar.measure`):

1. Outside the field of view (FoV) the frame is filled with its mean inside; it is halved
   (a [1, 3, 3, 1] / 8 kernel at stride 2) and smoothed by a Gaussian. Frames that come
   through one fibre bundle share its pattern (the Delaunay interpolation of the same fibre
   positions, or the honeycomb of raw frames); its period is about 3 pixels, and the smoothing
   removes it, so the pattern cannot pull the estimate towards zero shift.
2. **Coarse shift.** The smoothed frame is halved again (quarter resolution), its mean is
   removed, and it is multiplied by a window that tapers smoothly to zero at the FoV edge (so
   the disc edge, which is the same in every frame, does not correlate). The plain (not
   whitened) cross-correlation of two such frames is computed with zero-padded FFTs and divided
   by the overlap of the two windows at each lag, so large shifts are not penalised for their
   smaller overlap; lags whose overlap is below ``min_overlap`` are not searched. The highest
   peak, refined by a parabola, is the coarse shift.
3. **Refinement**, by one of:

   * ``"lk"`` (default): Gauss–Newton (Lucas–Kanade) minimisation of the window-weighted
     squared difference of the two smoothed frames, first at quarter resolution until it
     converges, then at half resolution. There the moving frame is resampled by smoothing its
     unsmoothed half-resolution pixels with the Gaussian centred at the sub-pixel position,
     which is an exact shift of the smoothed frame: interpolating the smoothed frame instead
     (bilinear or cubic) biases the shift by up to 0.015 pixel, in a pattern that repeats with
     the sub-pixel phase and so accumulates along a steady probe motion;
   * ``"parabola"``: a parabola through the half-resolution correlation peak;
   * ``"upsample"``: the correlation evaluated on a 1/16-pixel grid around the peak by a
     matrix Fourier transform (band-limited interpolation of the correlation surface).

   ``benchmarks/bench_registration.py`` compares them; Lucas–Kanade is the most accurate, as
   correlation peaks of windowed frames are biased towards the window's centre.

The normalised cross-correlation (NCC) of the aligned, overlapping parts and the share of the
window that overlaps come with each shift, for the checks that follow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.fft import next_fast_len

REFINEMENTS = ("lk", "parabola", "upsample")
#: Taper of the FoV window: at least this many half-resolution pixels, and this share of the
#: FoV radius. Wider than the smoothing kernel, so the blurred disc edge gets no weight.
TAPER_MIN_PX = 4
TAPER_FRACTION = 0.1
#: Lucas–Kanade stops when the step is below this (pixels of its resolution; at quarter
#: resolution a looser one, as the half-resolution steps that follow refine further) ...
LK_TOLERANCE = 1e-3
QUARTER_TOLERANCE = 2e-2
#: ... or after this many steps at quarter resolution, then this many at half resolution.
QUARTER_STEPS = 12
HALF_STEPS = 2
#: A refinement that moves farther than this from the coarse shift (full-resolution pixels) has
#: left the correlation peak; the pair is then marked as failed. Generous, because frames that
#: a fast probe distorts can have their best translation ~15 pixels from the correlation peak.
MAX_REFINEMENT_PX = 32.0
#: The peak ratio compares the correlation peak with the best score farther than this
#: (full-resolution pixels, along rows or columns): beyond the main peak's lobe, at the scale of
#: tissue structures such as crypts, which could be mistaken for one another.
PEAK_EXCLUSION_PX = 32
#: Upsampling factor and half-width (half-resolution pixels) of the ``"upsample"`` refinement.
UPSAMPLE_FACTOR = 16
UPSAMPLE_RADIUS = 1.5

# Channels of the prepared planes.
SMOOTH, GRAD_ROWS, GRAD_COLS, SOURCE = range(4)


@dataclass
class PreparedFrames:
    """Per-frame data computed once, for a batch of B frames.

    ``planes`` (half resolution) and ``quarter_planes`` stack four channels: the smoothed
    frame, its row and column gradients, and what is resampled when the frame is moved (the
    unsmoothed half-resolution frame, or at quarter resolution the smoothed frame again).
    """

    planes: torch.Tensor  # (B, 4, h, w)
    quarter_planes: torch.Tensor  # (B, 4, h/2, w/2)
    spectra: torch.Tensor  # (B, pq, pq // 2 + 1) complex: windowed quarter-resolution frame
    fine_spectra: torch.Tensor | None  # (B, ph, ph // 2 + 1) for "parabola" and "upsample"
    brightness: np.ndarray  # (B,) mean inside the FoV
    contrast: np.ndarray  # (B,) standard deviation inside the FoV, at half resolution
    sharpness: np.ndarray  # (B,) energy of fine over coarse structure (see prepare)

    def __len__(self) -> int:
        return len(self.planes)

    def take(self, keep) -> PreparedFrames:
        """The frames at positions ``keep`` (a slice or an index array)."""
        return PreparedFrames(*(None if value is None else value[keep] for value in self._values()))

    @staticmethod
    def concatenate(parts: list[PreparedFrames]) -> PreparedFrames:
        columns = zip(*(part._values() for part in parts), strict=True)
        return PreparedFrames(*(_join(values) for values in columns))

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__dataclass_fields__)


def _join(values):
    if values[0] is None:
        return None
    return np.concatenate(values) if isinstance(values[0], np.ndarray) else torch.cat(values)


@dataclass
class PairMeasurements:
    """Shifts between pairs of frames. ``offset`` is in full-resolution pixels: frame ``b``
    at pixel x shows what frame ``a`` shows at x + offset."""

    offset: np.ndarray  # (P, 2) float64
    ncc: np.ndarray  # (P,)
    overlap: np.ndarray  # (P,) share of the FoV window that overlaps
    peak_ratio: np.ndarray  # (P,) highest correlation peak over the best score beyond it
    converged: np.ndarray  # (P,) bool


class PairwiseRegistrar:
    """Measure translations between frames of one recording (one FoV mask).

    Parameters
    ----------
    mask : numpy.ndarray of bool, shape (H, W)
        The field of view.
    smoothing : float
        Standard deviation (full-resolution pixels) of the Gaussian that removes the fibre
        pattern before registration; about the fibre pitch or a little less.
    min_overlap : float
        Smallest overlap of two frames' FoV windows (a share of one window) that is searched.
    refine : {"lk", "parabola", "upsample"}
        The sub-pixel refinement.
    device : torch.device
    """

    def __init__(
        self,
        mask: np.ndarray,
        *,
        smoothing: float,
        min_overlap: float,
        refine: str,
        device: torch.device,
    ):
        if refine not in REFINEMENTS:
            raise ValueError(f"refine must be one of {REFINEMENTS}, got {refine!r}.")
        self.refine = refine
        self.device = device
        self.min_overlap = float(min_overlap)
        self.sigma_half = smoothing / 2
        self._kernel = _gaussian_taps(self.sigma_half, 0.0)[1]
        # At quarter resolution, added to the smoothing, it doubles its standard deviation.
        self._detail_kernel = _gaussian_taps(math.sqrt(3) * self.sigma_half / 2, 0.0)[1]
        self._mask = torch.as_tensor(mask, dtype=torch.float32, device=device)
        self._n_inside = float(mask.sum())
        self._padding = (0, mask.shape[1] % 2, 0, mask.shape[0] % 2)
        half_inside = _halve(self._mask[None], self._padding)[0]
        self._half_outside = 1.0 - half_inside
        half_mask = half_inside.cpu().numpy() > 0.999
        self._half_mask = torch.as_tensor(half_mask, device=device)
        self._n_half_inside = float(max(half_mask.sum(), 1))
        radius = math.sqrt(max(half_mask.sum(), 1) / math.pi)
        weight = taper_window(half_mask, max(TAPER_MIN_PX, TAPER_FRACTION * radius))
        self.weight = torch.as_tensor(weight, device=device)
        self.weight_energy = float((self.weight**2).sum())
        self.quarter_weight = F.avg_pool2d(self.weight[None, None], 2)[0, 0]
        # NumPy views for the pair-by-pair refinement on a CPU (see _lucas_kanade).
        windows = (self.quarter_weight, self.weight)
        self._windows = [w.numpy() if device.type == "cpu" else w for w in windows]
        self.pad_q = _correlation_padding(self.quarter_weight, self.min_overlap)
        self.overlap_q = _window_overlap(self.quarter_weight, self.pad_q)
        self.searchable = self.overlap_q >= self.min_overlap
        self._lags_q = _signed_lags(self.pad_q, device)
        if refine != "lk":
            self.pad_h = tuple(next_fast_len(2 * side) for side in self.weight.shape)
            self.overlap_h_spectrum = torch.fft.rfft2(self.weight, s=self.pad_h).abs() ** 2
            self.overlap_h = _window_overlap(self.weight, self.pad_h)

    # -- per frame ------------------------------------------------------------------------------

    def smoothed(self, frames: np.ndarray):
        """Half-resolution frames (B, h, w), unsmoothed and smoothed, and the frames' mean
        (full resolution) and standard deviation (half resolution) inside the FoV."""
        x = torch.as_tensor(frames, device=self.device)
        inside = x * self._mask
        mean = inside.sum((1, 2)) / self._n_inside
        # Filling the outside with the mean keeps the FoV edge from ringing through the blur.
        # Halving is linear, so the filling is done after it, at half resolution.
        half = _halve(inside, self._padding) + mean[:, None, None] * self._half_outside
        deviation = torch.where(self._half_mask, half - mean[:, None, None], 0.0)
        contrast = torch.sqrt((deviation**2).sum((1, 2)) / self._n_half_inside)
        return half, _blur(half, self._kernel), mean, contrast

    def prepare(self, frames: np.ndarray) -> PreparedFrames:
        """Prepare a batch of float32 frames (B, H, W)."""
        half, smooth, mean, contrast = self.smoothed(frames)
        quarter = F.avg_pool2d(smooth[:, None], 2)[:, 0]
        # Sharpness: the share of the tissue's energy at scales between the smoothing and twice
        # it (detail above the fibre pitch that blur removes first), out of all scales above;
        # measured at quarter resolution, where it costs little.
        weight = self.quarter_weight
        coarser = _blur(quarter, self._detail_kernel)
        level = (coarser * weight).sum((1, 2)) / weight.sum()
        detail = (weight * (quarter - coarser) ** 2).sum((1, 2))
        structure = (weight * (coarser - level[:, None, None]) ** 2).sum((1, 2))
        sharpness = detail / structure.clamp_min(1e-30)
        spectra = torch.fft.rfft2(_windowed(quarter, self.quarter_weight), s=self.pad_q)
        fine = None
        if self.refine != "lk":
            fine = torch.fft.rfft2(_windowed(smooth, self.weight), s=self.pad_h)
        return PreparedFrames(
            planes=_planes(smooth, half),
            quarter_planes=_planes(quarter, quarter),
            spectra=spectra,
            fine_spectra=fine,
            brightness=mean.cpu().double().numpy(),
            contrast=contrast.cpu().double().numpy(),
            sharpness=sharpness.cpu().double().numpy(),
        )

    # -- per pair -------------------------------------------------------------------------------

    def measure(self, frames: PreparedFrames, first, second) -> PairMeasurements:
        """Measure the shifts from ``frames[first[p]]`` to ``frames[second[p]]``."""
        first = np.asarray(first, dtype=np.int64)
        second = np.asarray(second, dtype=np.int64)
        coarse, peak_ratio = self._coarse(
            frames.spectra[torch.as_tensor(first, device=self.device)],
            frames.spectra[torch.as_tensor(second, device=self.device)],
        )
        if self.refine == "lk":
            shifts_h, ncc, overlap = self._lucas_kanade(frames, first, second, coarse / 2)
        else:
            shifts_h = self._refine_peak(frames, first, second, coarse / 2)
            ncc, overlap = self._agreement(frames, first, second, shifts_h)
        offset = 2 * shifts_h
        moved = np.abs(offset - coarse).max(axis=1)
        converged = np.isfinite(offset).all(axis=1) & (moved <= MAX_REFINEMENT_PX)
        return PairMeasurements(offset, ncc, overlap, peak_ratio, converged)

    def _coarse(self, spectra_a, spectra_b) -> tuple[np.ndarray, np.ndarray]:
        """Full-resolution shifts from quarter-resolution correlation peaks, and peak ratios."""
        correlation = torch.fft.irfft2(spectra_a.conj() * spectra_b, s=self.pad_q)
        score = correlation / self.overlap_q.clamp_min(self.min_overlap)
        score = torch.where(self.searchable, score, -torch.inf)
        n_pairs = score.shape[0]
        best, where = score.reshape(n_pairs, -1).max(dim=1)
        rows, cols = where // self.pad_q[1], where % self.pad_q[1]
        lag = torch.stack([self._lags_q[0][rows], self._lags_q[1][cols]], dim=1).double()
        lag += _parabola_vertex(score, rows, cols)
        # The second peak: the best score beyond the main peak's lobe.
        peak = lag.float()
        far_rows = _circular_distance(self._lags_q[0][None] - peak[:, :1], self.pad_q[0])
        far_cols = _circular_distance(self._lags_q[1][None] - peak[:, 1:], self.pad_q[1])
        radius = PEAK_EXCLUSION_PX / 4
        far = (far_rows[:, :, None] > radius) | (far_cols[:, None, :] > radius)
        second = torch.where(far, score, -torch.inf).reshape(n_pairs, -1).max(dim=1).values
        ratio = best / second.clamp_min(1e-3 * best.abs().clamp_min(1e-12))
        ratio = torch.where(torch.isfinite(second) & (best > 0), ratio, torch.nan)
        # score(s) = sum_x a(x) b(x + s) peaks at s = -offset (see PairMeasurements).
        return -4 * lag.cpu().numpy(), ratio.cpu().double().numpy()

    def _lucas_kanade(self, frames, first, second, start_h):
        """Gauss–Newton, pair by pair on the crop where the frames overlap: at quarter
        resolution until it converges, then at half resolution. On a CPU it runs on NumPy
        views of the planes, whose small operations cost less than torch's. (A thread pool over
        the pairs was slower: the many small NumPy calls of a pair hold the GIL in between.)"""
        planes = [frames.quarter_planes, frames.planes]
        if self.device.type == "cpu":
            planes = [stack.numpy() for stack in planes]
        levels = list(
            zip(
                planes,
                self._windows,
                (2.0, 1.0),
                (QUARTER_STEPS, HALF_STEPS),
                (None, self.sigma_half),
                strict=True,
            )
        )

        def refine(pair):
            shift, fit = start_h[pair] / 2, None
            for stack, window, scale, steps, sigma in levels:
                shift, fit = _gauss_newton(
                    stack[first[pair]], stack[second[pair]], window, shift, steps, sigma
                )
                shift = shift * scale
            return shift, fit

        results = [refine(pair) for pair in range(len(first))]
        shifts = np.array([shift for shift, _ in results]).reshape(-1, 2)
        fits = np.array([(np.nan, 0.0) if fit is None else fit for _, fit in results])
        return shifts, fits[:, 0], fits[:, 1] / self.weight_energy

    def _refine_peak(self, frames, first, second, start_h) -> np.ndarray:
        """Half-resolution correlation peak near the coarse shift: parabola or upsampled."""
        first = torch.as_tensor(first, device=self.device)
        second = torch.as_tensor(second, device=self.device)
        product = frames.fine_spectra[first].conj() * frames.fine_spectra[second]
        correlation = torch.fft.irfft2(product, s=self.pad_h)
        score = correlation / self.overlap_h.clamp_min(self.min_overlap)
        lags = _signed_lags(self.pad_h, self.device)
        # Search within 2 half-resolution pixels of the coarse estimate (lag = -shift).
        expected = -torch.as_tensor(start_h, device=self.device).float()
        near_rows = _circular_distance(lags[0][None] - expected[:, :1], self.pad_h[0]) <= 2
        near_cols = _circular_distance(lags[1][None] - expected[:, 1:], self.pad_h[1]) <= 2
        near = near_rows[:, :, None] & near_cols[:, None, :]
        where = torch.where(near, score, -torch.inf).reshape(len(score), -1).argmax(dim=1)
        rows, cols = where // self.pad_h[1], where % self.pad_h[1]
        lag = torch.stack([lags[0][rows], lags[1][cols]], dim=1).double()
        lag += _parabola_vertex(score, rows, cols)
        if self.refine == "upsample":
            lag = _upsampled_peak(
                product, self.overlap_h_spectrum, lag, self.pad_h, self.min_overlap
            )
        return -lag.cpu().numpy()

    def _agreement(self, frames, first, second, shifts_h):
        """NCC and overlap of each pair at the given shifts (for the peak refinements)."""
        ncc = np.full(len(first), np.nan)
        overlap = np.zeros(len(first))
        for pair, (index_a, index_b) in enumerate(zip(first, second, strict=True)):
            moving, fixed = frames.planes[index_a], frames.planes[index_b]
            sampled = _sample_shifted(
                (moving[SOURCE], self.weight), shifts_h[pair], (self.sigma_half, None)
            )
            if sampled is None:
                continue
            (image, window), box = sampled
            weight = window * self.weight[box]
            ncc[pair] = _weighted_ncc(image, fixed[SMOOTH][box], weight)
            overlap[pair] = float(weight.sum()) / self.weight_energy
        return ncc, overlap


# -- helpers --------------------------------------------------------------------------------------


def taper_window(mask: np.ndarray, width: float) -> np.ndarray:
    """A weight that is 1 deep inside ``mask`` and falls to 0 at its edge as a raised cosine
    over ``width`` pixels (float32)."""
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    ramp = np.clip(distance / max(width, 1e-6), 0.0, 1.0)
    return (0.5 - 0.5 * np.cos(np.pi * ramp)).astype(np.float32)


#: The [1, 3, 3, 1] / 8 kernel of :func:`_halve`.
HALVING_TAPS = np.array([0.125, 0.375, 0.375, 0.125])


def _halve(frames: torch.Tensor, padding: tuple[int, int, int, int]) -> torch.Tensor:
    """Halve (B, H, W) frames with the [1, 3, 3, 1] / 8 kernel at stride 2 along each axis.

    Half-resolution pixel i is centred on full-resolution 2i + 0.5, as for 2 × 2 block means,
    but detail near the Nyquist frequency is suppressed before decimation instead of folding
    down to low frequencies, where it would survive the smoothing. Edges repeat their last
    pixel; an odd side is padded so.
    """
    x = F.pad(frames[:, None], (0, padding[1], 0, padding[3]), mode="replicate")[:, 0]
    for axis in (1, 2):
        # Sample i of the filtered line is centred on i - 0.5; keep the odd samples.
        x = _filter_along(x, HALVING_TAPS, axis, origin=-0.5)
        x = x[:, 1::2] if axis == 1 else x[:, :, 1::2]
    return x


def _gaussian_taps(sigma: float, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Offsets and normalised weights of a Gaussian centred at ``fraction`` (in [0, 1)).

    The offsets run from -R to R (+1 when the centre is not on a pixel), R = ceil(3 sigma).
    """
    radius = max(1, math.ceil(3 * sigma))
    offsets = np.arange(-radius, radius + (2 if fraction > 0 else 1))
    weights = np.exp(-0.5 * ((offsets - fraction) / max(sigma, 1e-6)) ** 2)
    return offsets, weights / weights.sum()


def _blur(frames: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """Separable Gaussian blur of (B, h, w) frames (a symmetric ``kernel``), mirrored edges."""
    for axis in (1, 2):
        frames = _filter_along(frames, kernel, axis, origin=0.0, mode="mirror")
    return frames


def _filter_along(frames: torch.Tensor, taps: np.ndarray, axis: int, origin: float, mode="nearest"):
    """Correlate (B, h, w) frames with ``taps`` along ``axis`` (same length out).

    Output i is ``sum_k taps[k] * x[i + k - len(taps) // 2]``, i.e. centred on i + ``origin``
    (0 for odd lengths, -0.5 for even ones). CPU tensors go through SciPy's compiled filter,
    on NumPy views; others through a sum of shifted slices of a padded copy.
    """
    if frames.device.type == "cpu":
        array = frames.numpy()
        out = ndimage.correlate1d(array, taps.astype(array.dtype), axis=axis, mode=mode)
        return torch.from_numpy(out)
    before = len(taps) // 2
    after = len(taps) - 1 - before
    pad = [0, 0, 0, 0]
    pad[(2 - axis) * 2 : (2 - axis) * 2 + 2] = [before, after]
    padded = F.pad(frames[:, None], pad, mode="replicate" if mode == "nearest" else "reflect")[:, 0]
    length = frames.shape[axis]
    parts = (padded.narrow(axis, k, length) * float(w) for k, w in enumerate(taps))
    return sum(parts)


def _planes(smooth: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """(B, 4, h, w): the smoothed frames, their row and column gradients, and the plane
    resampled when the frame moves."""
    grad_rows, grad_cols = torch.gradient(smooth, dim=(1, 2))
    return torch.stack([smooth, grad_rows, grad_cols, source], dim=1)


def _windowed(frames: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Remove each frame's weighted mean, multiply by the window, scale to unit energy."""
    level = (frames * weight).sum((1, 2)) / weight.sum()
    windowed = (frames - level[:, None, None]) * weight
    energy = torch.sqrt((windowed**2).sum((1, 2)))
    return windowed / energy.clamp_min(1e-30)[:, None, None]


def _correlation_padding(weight: torch.Tensor, min_overlap: float) -> tuple[int, int]:
    """FFT sizes at which a cross-correlation is free of wrap-around at every lag searched.

    Lags whose window overlap is below ``min_overlap`` are never searched, so a frame side
    plus the largest searched lag is enough (less than the 2 x side of a full linear
    correlation: fewer FFT points per pair).
    """
    full = tuple(next_fast_len(2 * side) for side in weight.shape)
    searched = _window_overlap(weight, full) >= min_overlap
    rows, cols = (lags.abs() for lags in _signed_lags(full, weight.device))
    reach_r = int(rows[searched.any(dim=1)].max())
    reach_c = int(cols[searched.any(dim=0)].max())
    return tuple(
        min(next_fast_len(side + reach + 1), size)
        for side, reach, size in zip(weight.shape, (reach_r, reach_c), full, strict=True)
    )


def _window_overlap(weight: torch.Tensor, pad: tuple[int, int]) -> torch.Tensor:
    """Correlation of the window with itself at every lag, 1 at lag 0."""
    spectrum = torch.fft.rfft2(weight, s=pad)
    overlap = torch.fft.irfft2(spectrum.abs() ** 2, s=pad)
    return overlap / overlap[0, 0]


def _signed_lags(pad: tuple[int, int], device) -> tuple[torch.Tensor, torch.Tensor]:
    """The lag of each FFT index along both axes: 0, 1, ..., then negative lags."""
    return tuple(
        torch.fft.fftfreq(side, d=1.0 / side, device=device).round().to(torch.float32)
        for side in pad
    )


def _circular_distance(difference: torch.Tensor, period: int) -> torch.Tensor:
    return torch.remainder(difference + period / 2, period).sub(period / 2).abs()


def _parabola_vertex(score: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Sub-pixel vertex of a parabola through each peak and its neighbours, per axis."""
    n_pairs, height, width = score.shape
    pairs = torch.arange(n_pairs, device=score.device)
    centre = score[pairs, rows, cols]
    vertex = []
    for before, after in (
        (score[pairs, (rows - 1) % height, cols], score[pairs, (rows + 1) % height, cols]),
        (score[pairs, rows, (cols - 1) % width], score[pairs, rows, (cols + 1) % width]),
    ):
        curvature = before + after - 2 * centre
        usable = torch.isfinite(curvature) & (curvature < 0)
        step = 0.5 * (before - after) / torch.where(usable, curvature, -1.0)
        vertex.append(torch.where(usable, step.clamp(-0.5, 0.5), 0.0))
    return torch.stack(vertex, dim=1).double()


def _upsampled_peak(product, overlap_spectrum, lag, pad, min_overlap):
    """Refine each lag on a 1/UPSAMPLE_FACTOR grid by a matrix DFT of the cross-power spectrum,
    divided by the same evaluation of the windows' overlap."""
    device = product.device
    steps = torch.arange(
        -UPSAMPLE_RADIUS, UPSAMPLE_RADIUS + 1e-9, 1.0 / UPSAMPLE_FACTOR, device=device
    ).double()
    freq_rows = torch.fft.fftfreq(pad[0], device=device).double()
    freq_cols = torch.fft.rfftfreq(pad[1], device=device).double()
    # The real part of a Hermitian sum over half a spectrum: inner columns count twice.
    column_weight = torch.full_like(freq_cols, 2.0)
    column_weight[0] = 1.0
    if pad[1] % 2 == 0:
        column_weight[-1] = 1.0
    overlap_at_zero = float((overlap_spectrum.double().sum(dim=0) * column_weight).sum())
    refined = lag.clone()
    for pair in range(len(lag)):
        grid_rows = lag[pair, 0] + steps
        grid_cols = lag[pair, 1] + steps
        rows = torch.exp(2j * math.pi * grid_rows[:, None] * freq_rows[None])
        cols = torch.exp(2j * math.pi * grid_cols[:, None] * freq_cols[None]) * column_weight

        overlap = _dft_surface(overlap_spectrum, rows, cols) / overlap_at_zero
        score = _dft_surface(product[pair], rows, cols) / overlap.clamp_min(min_overlap)
        best = int(score.argmax())
        refined[pair, 0] = grid_rows[best // len(steps)]
        refined[pair, 1] = grid_cols[best % len(steps)]
    return refined


def _dft_surface(spectrum, rows, cols):
    """Real inverse DFT of a half spectrum at the lags that ``rows`` and ``cols`` encode."""
    return (rows @ spectrum.to(torch.complex128) @ cols.T).real


def _gauss_newton(moving, fixed, window, shift, steps: int, sigma: float | None):
    """Translation of ``fixed`` relative to ``moving`` by Gauss–Newton from ``shift``.

    Both are planes (4, h, w) (see :class:`PreparedFrames`) and ``window`` (h, w) is the FoV
    window of both. The gradients are those of the fixed frame (as in inverse-compositional
    Lucas–Kanade), so only the moving frame and its window are resampled at each step:
    bilinearly, or, with ``sigma``, by the shifted Gaussian. Returns the shift and, with
    ``sigma``, ``(ncc, overlap)`` at the last linearisation point (overlap as the sum of the
    product of both windows). NaN and None when the frames stop overlapping or the system is
    singular (a featureless overlap).
    """
    shift = np.asarray(shift, dtype=np.float64)
    for _ in range(steps):
        # The window only weighs the residuals: bilinear is precise enough for it.
        sampled = _sample_shifted((moving[SOURCE], window), shift, (sigma, None))
        if sampled is None:
            return np.full(2, np.nan), None
        (image, window_a), box = sampled
        target, grad_rows, grad_cols = (fixed[channel][box] for channel in range(3))
        weight = window_a * window[box]
        residual = image - target
        weighted_rows, weighted_cols = weight * grad_rows, weight * grad_cols
        h_rr = float((weighted_rows * grad_rows).sum())
        h_rc = float((weighted_rows * grad_cols).sum())
        h_cc = float((weighted_cols * grad_cols).sum())
        g_r = float((weighted_rows * residual).sum())
        g_c = float((weighted_cols * residual).sum())
        determinant = h_rr * h_cc - h_rc**2
        if not determinant > 1e-12 * max(h_rr * h_cc, 1e-30):
            return np.full(2, np.nan), None
        step = -np.array([h_cc * g_r - h_rc * g_c, h_rr * g_c - h_rc * g_r]) / determinant
        shift = shift + step
        if np.abs(step).max() < (LK_TOLERANCE if sigma else QUARTER_TOLERANCE):
            break
    if sigma is None:
        return shift, None
    return shift, (_weighted_ncc(image, target, weight), float(weight.sum()))


def _sample_shifted(planes, shift, sigmas):
    """Values of each (h, w) plane of ``planes`` at x + shift, for the pixels x whose
    neighbours all exist.

    ``sigmas`` gives, per plane, None for bilinear interpolation, or the standard deviation of
    a Gaussian centred at x + shift that smooths the plane (an exact shift of the smoothed
    plane). Returns the values (a list of (h', w') arrays) and the box of x, or None when it
    is empty.
    """
    height, width = planes[0].shape
    shift_r, shift_c = float(shift[0]), float(shift[1])
    if not (math.isfinite(shift_r) and math.isfinite(shift_c)):
        return None
    whole_r, whole_c = math.floor(shift_r), math.floor(shift_c)
    taps = [
        (_resampling_taps(shift_r - whole_r, sigma), _resampling_taps(shift_c - whole_c, sigma))
        for sigma in sigmas
    ]
    # Every plane needs its taps' neighbours: the box is where all of them exist.
    before = max(-rows[0][0] for rows, _ in taps)
    after = max(rows[0][-1] for rows, _ in taps)
    row0, row1 = max(before, before - whole_r), min(height, height - after - whole_r)
    col0, col1 = max(before, before - whole_c), min(width, width - after - whole_c)
    if row1 - row0 < 2 or col1 - col0 < 2:
        return None
    n_rows, n_cols = row1 - row0, col1 - col0
    values = []
    for plane, (taps_r, taps_c) in zip(planes, taps, strict=True):
        top = plane[
            row0 + whole_r + taps_r[0][0] : row1 + whole_r + taps_r[0][-1],
            col0 + whole_c + taps_c[0][0] : col1 + whole_c + taps_c[0][-1],
        ]
        rows = _weighted_taps(top, taps_r[1], n_rows, axis=0)
        values.append(_weighted_taps(rows, taps_c[1], n_cols, axis=1))
    return values, (slice(row0, row1), slice(col0, col1))


def _weighted_taps(array, weights: np.ndarray, length: int, axis: int):
    """``out[i] = sum_k weights[k] * array[i + k]`` along ``axis``, for i < ``length``.

    Long kernels on NumPy arrays go through SciPy's compiled correlation (no temporary per
    tap); two taps, and tensors (on a GPU), through a sum of shifted slices.
    """
    if isinstance(array, np.ndarray) and len(weights) > 2:
        full = ndimage.correlate1d(array, weights.astype(array.dtype), axis=axis, mode="constant")
        start = len(weights) // 2
        return full[start : start + length] if axis == 0 else full[:, start : start + length]
    if axis == 0:
        return sum(w * array[k : k + length] for k, w in enumerate(weights.tolist()))
    return sum(w * array[:, k : k + length] for k, w in enumerate(weights.tolist()))


def _resampling_taps(fraction: float, sigma: float | None):
    if sigma is None:
        return np.array([0, 1]), np.array([1.0 - fraction, fraction])
    offsets, weights = _gaussian_taps(sigma, fraction)
    if fraction == 0:  # keep the same number of taps before and after for every fraction
        offsets, weights = np.append(offsets, offsets[-1] + 1), np.append(weights, 0.0)
    return offsets, weights


def _weighted_ncc(first, second, weight) -> float:
    """Weighted normalised cross-correlation of two NumPy arrays or tensors."""
    total = float(weight.sum())
    if not total > 0:
        return float("nan")
    centred_a = first - float((weight * first).sum()) / total
    centred_b = second - float((weight * second).sum()) / total
    covariance = float((weight * centred_a * centred_b).sum())
    norm = math.sqrt(float((weight * centred_a**2).sum()) * float((weight * centred_b**2).sum()))
    return covariance / norm if norm > 0 else float("nan")
