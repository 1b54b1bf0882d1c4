"""The fibre-bundle simulator: HR image -> fibre signals -> noise -> Delaunay interpolation."""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np

from napari_pclesr._validation import as_grey_float, check_non_negative

try:  # SciPy's own kernel behind ``csr @ vector``; it accumulates into a given output
    from scipy.sparse._sparsetools import csr_matvec as _csr_matvec
except ImportError:  # pragma: no cover - a SciPy that moved it: use the public product
    _csr_matvec = None
from napari_pclesr.fibre import FibreLayout
from napari_pclesr.simulate.interpolation import delaunay_interpolation_matrix
from napari_pclesr.simulate.noise import add_fibre_noise
from napari_pclesr.simulate.signals import (
    default_cell_radius,
    nearest_pixels_matrix,
    voronoi_mean_matrix,
)

SignalKind = Literal["voronoi", "nearest7"]
_N_THREADS = os.cpu_count() or 1


class Simulator:
    """Simulate pCLE low-resolution images from HR images through a fibre layout.

    Everything geometric is computed once here: the Voronoi-cell (or 7-nearest-pixel)
    averaging matrix and the Delaunay interpolation matrix, both sparse. Each frame then costs
    two sparse products and a noise draw; stacks are processed in one product.

    Parameters
    ----------
    layout : FibreLayout
        Fibre positions on the (H, W) grid of the HR images.
    signal : {"voronoi", "nearest7"}
        How a fibre's signal is taken from the HR image: the mean of the pixels in its Voronoi
        cell (seed 000, §3.2), or the mean of the 7 pixels nearest its centre (the seed's
        reference [6]).
    cell_radius : float, optional
        Pixels farther than this from every fibre belong to no Voronoi cell, so cells at the
        edge of the bundle do not reach across the whole frame. Defaults to twice the median
        nearest-neighbour spacing; ``np.inf`` gives unbounded cells.

    Attributes
    ----------
    fov_mask : numpy.ndarray of bool, shape (H, W)
        True for pixels inside the Delaunay triangulation; interpolated images are 0 outside.
    empty_cells : numpy.ndarray of int
        Indices of fibres whose Voronoi cell holds no pixel centre. Their signal is the value
        of the pixel nearest their centre.

    Examples
    --------
    >>> from napari_pclesr import FibreLayout, Simulator
    >>> from napari_pclesr.data import phantom
    >>> hr = phantom((128, 128), seed=1)
    >>> sim = Simulator(FibreLayout.synthetic((128, 128), n_fibres=1500))
    >>> lr = sim.simulate(hr, seed=0)
    >>> lr.shape
    (128, 128)
    """

    def __init__(
        self,
        layout: FibreLayout,
        signal: SignalKind = "voronoi",
        cell_radius: float | None = None,
    ):
        if not isinstance(layout, FibreLayout):
            raise TypeError(f"layout must be a FibreLayout, got {type(layout).__name__}.")
        self.layout = layout
        self.signal = signal
        if cell_radius is None:
            cell_radius = default_cell_radius(layout)
        self.cell_radius = (
            check_non_negative(cell_radius, "cell_radius") if np.isfinite(cell_radius) else np.inf
        )
        if signal == "voronoi":
            signal_matrix, self.empty_cells = voronoi_mean_matrix(layout, self.cell_radius)
        elif signal == "nearest7":
            signal_matrix = nearest_pixels_matrix(layout, n_pixels=7)
            self.empty_cells = np.empty(0, dtype=np.int64)
        else:
            raise ValueError(f"signal must be 'voronoi' or 'nearest7', got {signal!r}.")
        # Column-major, the product walks the frame in raster order (the frame is read once,
        # sequentially) and scatters into the small signal vector, which stays in cache: about
        # twice as fast as row-major, whose fibre order jumps around the frame.
        self._signal_matrix = signal_matrix.tocsc()
        self._interpolation_matrix, self.fov_mask = delaunay_interpolation_matrix(layout)

    @property
    def shape(self) -> tuple[int, int]:
        """The (H, W) grid of the layout."""
        return self.layout.shape

    def __repr__(self) -> str:
        return f"Simulator({self.layout!r}, signal={self.signal!r})"

    def fibre_signals(self, hr) -> np.ndarray:
        """Return the fibre signals of an HR frame (N,) or stack (T, N), as float32."""
        frames, single = self._frames(hr, "hr")
        matrix = self._signal_matrix

        def signals_of(index, out):
            out[:] = matrix @ frames[index]

        signals = _per_frame(signals_of, len(frames), matrix.shape[0])
        return signals[0] if single else signals

    def interpolate(self, signals) -> np.ndarray:
        """Delaunay piecewise-linear interpolation of fibre signals onto the (H, W) grid.

        Parameters
        ----------
        signals : array_like, shape (N,) or (T, N)
            One value per fibre, for one frame or a stack.

        Returns
        -------
        numpy.ndarray, float32, shape (H, W) or (T, H, W)
            Zero outside :attr:`fov_mask`.
        """
        values = as_grey_float(signals, name="signals", ndims=(1, 2))
        single = values.ndim == 1
        values = np.atleast_2d(values)
        if values.shape[1] != self.layout.n_fibres:
            raise ValueError(
                f"signals have {values.shape[1]} values per frame but the layout has "
                f"{self.layout.n_fibres} fibres."
            )
        matrix = self._interpolation_matrix
        images = _per_frame(
            lambda index, out: _add_product(matrix, values[index], out),
            len(values),
            matrix.shape[0],
        )
        images = images.reshape(-1, *self.shape)
        return images[0] if single else images

    def simulate(
        self,
        hr,
        sigma_mult: float = 0.05,
        sigma_add: float = 0.01,
        seed: int | np.random.Generator | None = None,
    ) -> np.ndarray:
        """Simulate the LR image of an HR frame (H, W) or stack (T, H, W).

        Computes the fibre signals ``fs``, the noisy signals ``nfs = (1 + m)·fs + a`` with
        ``m ~ N(0, sigma_mult)`` and ``a ~ N(0, sigma_add·(max fs − min fs))`` drawn per fibre
        and per frame, then interpolates them. Frames of a stack are spread over a pool of
        threads; each frame draws its noise from its own generator spawned from ``seed``, so
        the result does not depend on the number of threads.

        Parameters
        ----------
        hr : array_like
            HR frame or stack on the layout's grid. Integers are converted to float32.
        sigma_mult, sigma_add : float
            Noise standard deviations (>= 0); seed 000 uses 0.05 and 0.01.
        seed : int, numpy.random.Generator or None
            The same seed gives the same result.

        Returns
        -------
        numpy.ndarray, float32
            The LR image(s), same shape as ``hr``, zero outside :attr:`fov_mask`.
        """
        sigma_mult = check_non_negative(sigma_mult, "sigma_mult")
        sigma_add = check_non_negative(sigma_add, "sigma_add")
        frames, single = self._frames(hr, "hr")
        generators = np.random.default_rng(seed).spawn(len(frames))

        def simulate_frame(index, out):
            signals = self._signal_matrix @ frames[index]
            noisy = add_fibre_noise(signals, sigma_mult, sigma_add, generators[index])
            _add_product(self._interpolation_matrix, noisy, out)

        n_pixels = self.shape[0] * self.shape[1]
        images = _per_frame(simulate_frame, len(frames), n_pixels).reshape(-1, *self.shape)
        return images[0] if single else images

    def _frames(self, image, name: str) -> tuple[np.ndarray, bool]:
        array = as_grey_float(image, name=name)
        if array.shape[-2:] != self.shape:
            raise ValueError(
                f"{name} has frames of shape {array.shape[-2:]} but the fibre layout is for "
                f"{self.shape}; make the layout for this grid (e.g. "
                f"FibreLayout.synthetic(shape={array.shape[-2:]})) or resize the image."
            )
        return array.reshape(-1, self.shape[0] * self.shape[1]), array.ndim == 2


def _per_frame(compute_into, n_frames: int, row_size: int) -> np.ndarray:
    """A (T, row_size) float32 array whose row t is filled by ``compute_into(t, row)``.

    Rows start at 0. The frames are split into one contiguous chunk per thread: SciPy's sparse
    products release the GIL, so the chunks run truly in parallel, and contiguous chunks keep
    each thread's reads and writes sequential in memory.
    """
    rows = np.zeros((n_frames, row_size), dtype=np.float32)
    n_chunks = min(n_frames, _N_THREADS)
    bounds = np.linspace(0, n_frames, n_chunks + 1).astype(int)

    def fill(chunk):
        for index in range(bounds[chunk], bounds[chunk + 1]):
            compute_into(index, rows[index])

    if n_chunks == 1:
        fill(0)
    else:
        list(_thread_pool().map(fill, range(n_chunks)))
    return rows


def _add_product(matrix, vector: np.ndarray, out: np.ndarray) -> None:
    """``out += matrix @ vector`` for a float32 CSR matrix, written in place.

    Used for the interpolation, whose output rows are whole frames.

    Writing straight into the output row saves a temporary of the row's size per frame, which
    matters because these products are memory-bound.
    """
    if _csr_matvec is None:
        out += matrix @ vector
    else:
        _csr_matvec(*matrix.shape, matrix.indptr, matrix.indices, matrix.data, vector, out)


@functools.cache
def _thread_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=_N_THREADS, thread_name_prefix="pclesr-sim")


def simulate_lr(
    hr,
    layout: FibreLayout,
    *,
    sigma_mult: float = 0.05,
    sigma_add: float = 0.01,
    seed: int | np.random.Generator | None = None,
    signal: SignalKind = "voronoi",
) -> np.ndarray:
    """One-shot :meth:`Simulator.simulate`; build a :class:`Simulator` to reuse the set-up."""
    return Simulator(layout, signal=signal).simulate(
        hr, sigma_mult=sigma_mult, sigma_add=sigma_add, seed=seed
    )
