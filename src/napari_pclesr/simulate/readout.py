"""Fibre values read back from reconstructed frames: V(I_LR) of seed 001.

A pCLE frame is the Delaunay piecewise-linear interpolation of one value per fibre, so its value
at a fibre centre is that fibre's value. The pixel grid rarely passes through a centre, though,
and reading the nearest pixel, or interpolating the grid bilinearly, mixes in the neighbouring
fibres. :class:`FibreSignalReader` instead finds the fibre values whose interpolation best
reproduces the frame over the field of view, in the least-squares sense: with ``M`` the
(pixels × fibres) interpolation matrix of :func:`delaunay_interpolation_matrix`, it solves
``(MᵀM + λI) v = Mᵀ y`` for each frame ``y``. ``MᵀM`` is sparse (each fibre couples only to its
Delaunay neighbours) and is factorised once per layout and mask; each frame then costs one
sparse product and one triangular solve.

- For frames made by :class:`~napari_pclesr.Simulator` with the same layout, ``y = M v``
  exactly, so the reader returns the (noisy) fibre signals exactly, up to rounding.
- For real recordings (reconstructed by the vendor's software, compressed, and read with a
  detected or synthetic layout that is not the true one) it is the closest fibre-value vector
  that the layout can express: an approximation of the recording sampled at the fibre centres.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import splu

from napari_pclesr._validation import as_grey_float
from napari_pclesr.fibre import FibreLayout
from napari_pclesr.simulate.interpolation import delaunay_interpolation_matrix

__all__ = ["FibreSignalReader"]

# Tikhonov weight relative to the mean diagonal of MᵀM: far below float32 rounding, so it changes
# no well-determined value, but it keeps the system solvable where a fibre is barely seen.
_RIDGE = 1e-8
# A fibre whose interpolation weights reach the mask this little (relative to the median fibre)
# is not determined by the frame and is reported as unresolved.
_MIN_COVERAGE = 1e-3


class FibreSignalReader:
    """Read the value of every fibre from frames reconstructed through a layout.

    Parameters
    ----------
    layout : FibreLayout
        The fibre positions on the frames' grid.
    fov_mask : bool array (H, W), optional
        The pixels to fit (the field of view); all pixels the triangulation covers by default.

    Attributes
    ----------
    resolved : numpy.ndarray of bool, shape (N,)
        The fibres the frames determine; the others (no pixel of the mask near them) read 0.

    Examples
    --------
    >>> from napari_pclesr import FibreLayout, Simulator
    >>> layout = FibreLayout.synthetic((64, 64), n_fibres=400, seed=0)
    >>> signals = np.random.default_rng(0).random(400).astype(np.float32)
    >>> frame = Simulator(layout).interpolate(signals)
    >>> reader = FibreSignalReader(layout)
    >>> bool(np.allclose(reader.read(frame)[reader.resolved], signals[reader.resolved], atol=1e-4))
    True
    """

    def __init__(self, layout: FibreLayout, fov_mask=None):
        if not isinstance(layout, FibreLayout):
            raise TypeError(f"layout must be a FibreLayout, got {type(layout).__name__}.")
        self.layout = layout
        matrix, covered = delaunay_interpolation_matrix(layout)
        if fov_mask is not None:
            fov_mask = np.asarray(fov_mask, dtype=bool)
            if fov_mask.shape != tuple(layout.shape):
                raise ValueError(
                    f"the FoV mask is {fov_mask.shape} but the layout's grid is {layout.shape}."
                )
            covered = covered & fov_mask
        self._pixels = np.flatnonzero(covered.ravel())
        if len(self._pixels) == 0:
            raise ValueError("no pixel of the field of view lies inside the fibre layout.")
        fitted = matrix[self._pixels].astype(np.float64)
        coverage = np.asarray(fitted.power(2).sum(axis=0)).ravel()
        self.resolved = coverage > _MIN_COVERAGE * np.median(coverage[coverage > 0])
        fitted = fitted[:, np.flatnonzero(self.resolved)].tocsc()
        gram = (fitted.T @ fitted).tocsc()
        ridge = _RIDGE * gram.diagonal().mean()
        self._factor = splu(
            (gram + ridge * sparse.identity(gram.shape[0], format="csc")).tocsc(),
            permc_spec="COLAMD",
        )
        self._transpose = fitted.T.tocsr()

    def read(self, frames) -> np.ndarray:
        """Fibre values of a frame (H, W) → (N,) or a stack (T, H, W) → (T, N), float32."""
        array = as_grey_float(frames, name="frames")
        if array.shape[-2:] != tuple(self.layout.shape):
            raise ValueError(
                f"frames are {array.shape[-2:]} but the fibre layout is for {self.layout.shape}."
            )
        stack = array.reshape(-1, self.layout.shape[0] * self.layout.shape[1])
        right = self._transpose @ stack[:, self._pixels].astype(np.float64).T
        values = np.zeros((len(stack), self.layout.n_fibres), dtype=np.float32)
        values[:, self.resolved] = np.atleast_2d(self._factor.solve(right).T)
        return values[0] if array.ndim == 2 else values
