"""Delaunay piecewise-linear interpolation of fibre signals onto the Cartesian grid."""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.spatial import Delaunay

from napari_pclesr.fibre import FibreLayout

# Pixel centres this far outside a triangle (in barycentric units) still count as inside it, so
# that centres exactly on an edge are not lost to rounding.
_EDGE_TOLERANCE = 1e-10


def delaunay_interpolation_matrix(layout: FibreLayout) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Sparse (H·W × N) matrix of barycentric weights, and the (H, W) mask of covered pixels.

    Each pixel centre inside the triangulation of the fibre positions gets the barycentric
    weights of the three corners of its triangle, which is exactly what linear interpolation on
    a Delaunay triangulation (and ``scipy.interpolate.LinearNDInterpolator``) computes. Rows of
    pixels outside the triangulation are empty, so they interpolate to 0.

    Pixels are found by rasterising every triangle over its bounding box, in closed form and
    without ``Delaunay.find_simplex``, whose barycentric set-up calls BLAS once per triangle and
    slows down by orders of magnitude when BLAS threads compete with other work.
    """
    height, width = layout.shape
    corners = Delaunay(layout.positions).simplices
    pixel, triangle, weights = _rasterise(layout.positions, corners, (height, width))
    # A centre on a shared edge is found in two triangles; both give the same interpolated
    # value, so keep the first.
    pixel, first = np.unique(pixel, return_index=True)
    triangle, weights = triangle[first], weights[first]
    indptr = np.zeros(height * width + 1, dtype=np.int64)
    indptr[pixel + 1] = 3
    matrix = sparse.csr_matrix(
        (weights.astype(np.float32).ravel(), corners[triangle].ravel(), np.cumsum(indptr)),
        shape=(height * width, layout.n_fibres),
    )
    fov_mask = np.zeros(height * width, dtype=bool)
    fov_mask[pixel] = True
    return matrix, fov_mask.reshape(height, width)


def _rasterise(
    positions: np.ndarray, corners: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (pixel index, triangle, barycentric weights) with the pixel centre in the triangle."""
    vertices = positions[corners]  # (M, 3, 2)
    low = np.clip(np.ceil(vertices.min(axis=1) - _EDGE_TOLERANCE), 0, None).astype(np.int64)
    high = np.minimum(
        np.floor(vertices.max(axis=1) + _EDGE_TOLERANCE).astype(np.int64), np.array(shape) - 1
    )
    extent = np.maximum(high - low + 1, 0)
    counts = extent[:, 0] * extent[:, 1]
    triangle = np.repeat(np.arange(len(corners)), counts)
    local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    box_width = extent[triangle, 1]
    rows = low[triangle, 0] + local // box_width
    cols = low[triangle, 1] + local % box_width

    origin = vertices[:, 2]
    edge_a = vertices[:, 0] - origin
    edge_b = vertices[:, 1] - origin
    determinant = edge_a[:, 0] * edge_b[:, 1] - edge_a[:, 1] * edge_b[:, 0]
    flat = np.abs(determinant) < 1e-12
    determinant[flat] = np.inf  # degenerate triangles get no pixels
    d_row = rows - origin[triangle, 0]
    d_col = cols - origin[triangle, 1]
    det = determinant[triangle]
    weight_a = (d_row * edge_b[triangle, 1] - d_col * edge_b[triangle, 0]) / det
    weight_b = (edge_a[triangle, 0] * d_col - edge_a[triangle, 1] * d_row) / det
    weights = np.stack([weight_a, weight_b, 1.0 - weight_a - weight_b], axis=-1)
    inside = np.all(weights >= -_EDGE_TOLERANCE, axis=1) & ~flat[triangle]
    return (rows * shape[1] + cols)[inside], triangle[inside], weights[inside]
