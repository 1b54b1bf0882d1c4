"""Fibre-signal extraction matrices: how each fibre averages the HR pixels it sees."""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.spatial import cKDTree

from napari_pclesr.fibre import FibreLayout


def pixel_centres(shape: tuple[int, int]) -> np.ndarray:
    """(H·W, 2) float64 (row, col) coordinates of every pixel centre, row-major."""
    rows, cols = np.indices(shape, dtype=np.float64)
    return np.stack([rows.ravel(), cols.ravel()], axis=-1)


def default_cell_radius(layout: FibreLayout) -> float:
    """Twice the median nearest-neighbour spacing: pixels farther from every fibre are in no cell.

    This bounds the cells at the edge of the bundle, which would otherwise reach across the
    whole frame.
    """
    return 2.0 * float(np.median(layout.nearest_neighbour_distances()))


def voronoi_mean_matrix(
    layout: FibreLayout, cell_radius: float
) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Sparse (N × H·W) matrix whose product with a flattened frame gives Voronoi-cell means.

    A pixel belongs to its nearest fibre when that fibre is within ``cell_radius``. A fibre whose
    cell holds no pixel centre takes the value of the pixel nearest its centre.

    Returns
    -------
    matrix : scipy.sparse.csr_matrix, float32
    empty_cells : numpy.ndarray of int
        The fibres with empty cells.
    """
    height, width = layout.shape
    n_fibres = layout.n_fibres
    tree = cKDTree(layout.positions)
    _, owner = tree.query(pixel_centres(layout.shape), distance_upper_bound=cell_radius, workers=-1)
    pixels = np.flatnonzero(owner < n_fibres)
    owner = owner[pixels]
    empty_cells = np.flatnonzero(np.bincount(owner, minlength=n_fibres) == 0)
    nearest = np.rint(layout.positions[empty_cells]).astype(np.int64)
    owner = np.concatenate([owner, empty_cells])
    pixels = np.concatenate([pixels, nearest[:, 0] * width + nearest[:, 1]])
    counts = np.bincount(owner, minlength=n_fibres)
    weights = (1.0 / counts[owner]).astype(np.float32)
    matrix = sparse.csr_matrix((weights, (owner, pixels)), shape=(n_fibres, height * width))
    return matrix, empty_cells


def nearest_pixels_matrix(layout: FibreLayout, n_pixels: int = 7) -> sparse.csr_matrix:
    """Sparse (N × H·W) matrix averaging the ``n_pixels`` pixel centres nearest each fibre."""
    height, width = layout.shape
    # Only pixels near the fibres matter, so search a box around each centre rather than a
    # tree of the whole grid: candidates within radius sqrt(n_pixels) + 1 always include them.
    reach = int(np.ceil(np.sqrt(n_pixels))) + 1
    offsets = np.stack(
        np.meshgrid(np.arange(-reach, reach + 1), np.arange(-reach, reach + 1), indexing="ij"),
        axis=-1,
    ).reshape(-1, 2)
    base = np.rint(layout.positions).astype(np.int64)
    candidates = base[:, None, :] + offsets[None, :, :]
    distance = np.linalg.norm(candidates - layout.positions[:, None, :], axis=-1)
    outside = np.any((candidates < 0) | (candidates >= np.array([height, width])), axis=-1)
    distance[outside] = np.inf
    order = np.argsort(distance, axis=1, kind="stable")[:, :n_pixels]
    chosen = np.take_along_axis(candidates, order[..., None], axis=1)
    valid = np.isfinite(np.take_along_axis(distance, order, axis=1))
    fibres = np.broadcast_to(np.arange(layout.n_fibres)[:, None], valid.shape)[valid]
    pixels = chosen[valid][:, 0] * width + chosen[valid][:, 1]
    counts = valid.sum(axis=1)
    weights = (1.0 / counts[fibres]).astype(np.float32)
    return sparse.csr_matrix((weights, (fibres, pixels)), shape=(layout.n_fibres, height * width))
