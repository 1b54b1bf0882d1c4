"""Raw fibre-bundle camera frames (cores visible): detect the cores, then reconstruct.

A camera behind a fibre bundle sees each fibre core as a bright spot. To turn such frames into
pCLE-like images:

1. the cores are found once in a flat-field *background* frame
   (:meth:`napari_pclesr.FibreLayout.detect`);
2. each core's value in a frame is the mean of the pixels within ``core_radius`` of its centre
   (a sparse N × H·W averaging matrix, so a whole batch of frames is one product), divided by
   the same value in the background (flat-fielding: every core's own transmission is 1);
3. the values are interpolated onto the pixel grid by Delaunay piecewise-linear interpolation,
   the same as :meth:`napari_pclesr.Simulator.interpolate`; pixels outside the bundle are 0.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy import sparse

from napari_pclesr._validation import as_grey_float
from napari_pclesr.fibre import FibreLayout
from napari_pclesr.io.lazy import LazyFrames
from napari_pclesr.simulate.interpolation import delaunay_interpolation_matrix

#: Name endings of flat-field background frames looked for beside a raw recording.
BACKGROUND_ENDINGS = ("_back", "_background", "_flat", "-back", "-background", "-flat")
#: A frame counts as raw bundle frames when at least this many cores are found ...
MIN_CORES = 1000
#: ... at most this many pixels apart (median) ...
MAX_CORE_SPACING_PX = 12.0
#: ... with nearest-neighbour spacings this regular: (95th − 5th percentile) / median. Real
#: bundles: about 0.2, even where an object darkens many cores; textures and noise: above 1.
MAX_SPACING_SPREAD = 0.5
#: Background cores darker than this fraction of the median core are treated as dead.
DEAD_CORE_FRACTION = 0.02


class RawBundleReconstructor:
    """Reconstruct raw bundle frames through cores found in a background frame.

    Parameters
    ----------
    background : array_like
        (H, W) flat-field frame of the bundle (a uniform target), in the camera's units.
    layout : FibreLayout, optional
        Known core positions on the (H, W) camera grid; detected from ``background`` if
        omitted.
    spacing : float, optional
        Core spacing in pixels for the detection; estimated from the spectrum if omitted.
    core_radius : float, optional
        Pixels whose centres lie within this distance of a core centre are averaged into its
        value. Defaults to a quarter of the median core spacing, at least 1 pixel.

    Attributes
    ----------
    layout : FibreLayout
    fov_mask : numpy.ndarray of bool
        (H, W), True inside the triangulation of the cores.
    background_values : numpy.ndarray
        (N,) core values of the background, used for flat-fielding.
    """

    def __init__(self, background, *, layout=None, spacing=None, core_radius=None):
        background = as_grey_float(background, name="background frame", ndims=(2,))
        if layout is None:
            layout = FibreLayout.detect(background, spacing=spacing)
        if layout.shape != background.shape:
            raise ValueError(
                f"the layout is for {layout.shape} frames but the background is "
                f"{background.shape}; detect the layout on this camera's frames."
            )
        self.layout = layout
        if core_radius is None:
            core_radius = max(1.0, 0.25 * float(np.median(layout.nearest_neighbour_distances())))
        self.core_radius = float(core_radius)
        self._extraction = _core_averaging_matrix(layout, self.core_radius)
        values = self._extraction @ background.ravel()
        floor = DEAD_CORE_FRACTION * float(np.median(values))
        self.background_values = values
        self._gain = np.where(values > floor, 1.0 / np.maximum(values, floor), 0.0).astype(
            np.float32
        )
        self._interpolation, self.fov_mask = delaunay_interpolation_matrix(layout)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the camera frames and of the reconstruction."""
        return self.layout.shape

    def core_values(self, frames) -> np.ndarray:
        """Flat-fielded core values of a frame (N,) or stack (T, N), as float32."""
        stack = self._stack(frames)
        values = (self._extraction @ stack.reshape(len(stack), -1).T).T * self._gain
        values = values.astype(np.float32, copy=False)
        return values[0] if np.ndim(frames) == 2 else values

    def reconstruct(self, frames) -> np.ndarray:
        """Reconstruct a raw frame (H, W) or stack (T, H, W); float32, 0 outside the bundle.

        A uniform scene gives 1 in every core (the background's transmission); values are
        relative to the background.
        """
        values = np.atleast_2d(self.core_values(frames))
        images = (self._interpolation @ values.T).T.reshape(-1, *self.shape)
        return images[0] if np.ndim(frames) == 2 else images

    def reconstruct_lazily(self, frames) -> LazyFrames:
        """Wrap a (lazy) raw stack so that frames are reconstructed when they are read."""
        return LazyFrames(
            lambda indices: self.reconstruct(np.asarray(frames[np.asarray(indices)])),
            len(frames),
            self.shape,
            np.float32,
        )

    def _stack(self, frames) -> np.ndarray:
        stack = as_grey_float(frames, name="raw frames")
        stack = stack[None] if stack.ndim == 2 else stack
        if stack.shape[-2:] != self.shape:
            raise ValueError(
                f"raw frames are {stack.shape[-2:]} but the background is {self.shape}; "
                "use a background taken with the same camera settings."
            )
        return stack


def _core_averaging_matrix(layout: FibreLayout, radius: float) -> sparse.csr_matrix:
    """Sparse (N × H·W) matrix whose row n averages the pixels within ``radius`` of core n."""
    height, width = layout.shape
    reach = int(np.ceil(radius))
    offsets = np.arange(-reach, reach + 1)
    d_row, d_col = (grid.ravel() for grid in np.meshgrid(offsets, offsets, indexing="ij"))
    centres = np.round(layout.positions).astype(np.int64)
    rows = centres[:, :1] + d_row  # (N, K)
    cols = centres[:, 1:] + d_col
    distance = np.hypot(rows - layout.positions[:, :1], cols - layout.positions[:, 1:])
    inside = (distance <= radius) & (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    # The pixel nearest the centre always counts, so small radii still give every core a value.
    inside[:, len(d_row) // 2] = True
    counts = inside.sum(axis=1)
    fibre = np.repeat(np.arange(layout.n_fibres), counts)
    pixel = (rows * width + cols)[inside]
    weight = np.repeat(1.0 / counts, counts).astype(np.float32)
    return sparse.csr_matrix((weight, (fibre, pixel)), shape=(layout.n_fibres, height * width))


def looks_like_raw_bundle(frame) -> bool:
    """Whether a frame shows individual fibre cores (a raw bundle camera frame).

    True when the core detector finds at least :data:`MIN_CORES` cores, with a median spacing
    of at most :data:`MAX_CORE_SPACING_PX` pixels and regular spacings (spread at most
    :data:`MAX_SPACING_SPREAD`). Reconstructed pCLE images, tissue phantoms and natural images
    have no such regular fine lattice.
    """
    image = as_grey_float(frame, name="frame", ndims=(2,))
    try:
        layout = FibreLayout.detect(image)
    except ValueError:
        return False
    if layout.n_fibres < MIN_CORES:
        return False
    stats = layout.spacing_stats()
    spread = (stats["p95"] - stats["p05"]) / stats["median"]
    return stats["median"] <= MAX_CORE_SPACING_PX and spread <= MAX_SPACING_SPREAD


def find_background(path: str | os.PathLike) -> Path | None:
    """The flat-field background beside a raw recording, if one is named like it.

    For ``tissue.tif`` this looks for ``tissue_back.tif``, ``tissue_background.tif``,
    ``tissue_flat.tif`` (also with ``-`` and ``.tiff``/``.png``), then ``background.tif`` and
    ``back.tif`` in the same folder. A file that is itself named like a background has none.
    """
    path = Path(path)
    stem = path.stem
    if is_background_name(path):
        return None
    names = [stem + ending for ending in BACKGROUND_ENDINGS] + ["background", "back", "flat"]
    for name in names:
        for suffix in (".tif", ".tiff", ".png"):
            candidate = path.with_name(name + suffix)
            if candidate.is_file() and candidate != path:
                return candidate
    return None


def is_background_name(path: str | os.PathLike) -> bool:
    """Whether a file is named like a flat-field background (``*_back.tif``, ``flat.png``, …)."""
    stem = Path(path).stem.lower()
    return stem in ("background", "back", "flat") or stem.endswith(BACKGROUND_ENDINGS)
