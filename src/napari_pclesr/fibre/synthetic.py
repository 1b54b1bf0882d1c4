"""Synthetic fibre bundles: a warped, jittered hexagonal packing in a circular field of view."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates

CELLVIZIO_FIBRES = 30000
CELLVIZIO_GRID = (576, 576)
# How far (in field-of-view radii) the outermost fibre may lie from the centre.
_MAX_REACH = 1.1


def fibre_count_for(shape: tuple[int, int]) -> int:
    """Fibres of a Cellvizio-like bundle (30,000 on a 576×576 grid) for frames of ``shape``.

    The bundle fills the circular field of view, whose diameter is the frame's short side, so
    the count scales with the area of that disc, not of the frame: a 256×384 frame gets the
    fibre density of a 576×576 one (scaling by H·W would give it 1.5 times too many fibres).
    """
    diameter_ratio = (min(shape) - 1) / (min(CELLVIZIO_GRID) - 1)
    return max(3, round(CELLVIZIO_FIBRES * diameter_ratio**2))


def hexagonal_bundle(
    shape: tuple[int, int],
    n_fibres: int,
    rng: np.random.Generator,
    jitter: float,
    warp: float,
    fov_fraction: float,
) -> np.ndarray:
    """Return exactly ``n_fibres`` (row, col) positions packed in a circle on ``shape``.

    The pitch is chosen so that a hexagonal lattice of ``n_fibres`` cells fills the circle. The
    lattice gets a random orientation and offset, a smooth random warp (bent rows, as in the
    small hexagonal domains of real bundles) and independent jitter; the ``n_fibres`` points
    nearest the centre are kept, pulled towards the centre if the farthest lies more than 1.1
    radii out. It succeeds for every seed.
    """
    if n_fibres < 3:
        raise ValueError(f"n_fibres must be at least 3, got {n_fibres}.")
    if not 0 < fov_fraction <= 1:
        raise ValueError(f"fov_fraction must be in (0, 1], got {fov_fraction}.")
    if jitter < 0 or warp < 0:
        raise ValueError(f"jitter and warp must be >= 0, got jitter={jitter}, warp={warp}.")
    height, width = shape
    radius = fov_fraction * (min(height, width) - 1) / 2
    centre = np.array([(height - 1) / 2, (width - 1) / 2])
    # Hexagonal cell area is (sqrt(3)/2)·pitch², so n cells fill the disc at this pitch.
    pitch = np.sqrt(2 * np.pi * radius**2 / (np.sqrt(3) * n_fibres))
    if pitch < 1.0:
        raise ValueError(
            f"{n_fibres} fibres do not fit on a {height}x{width} grid: their spacing would be "
            f"{pitch:.2f} px, below one pixel. Use fewer fibres or a larger shape."
        )

    extent = radius * 1.15 + 3 * pitch  # room for the warp and jitter to move points inwards
    points = _hexagonal_lattice(extent, pitch, rng)
    points += _smooth_warp(points, extent, pitch, warp, rng)
    points += rng.normal(scale=jitter * pitch, size=points.shape)
    distance = np.hypot(points[:, 0], points[:, 1])
    keep = np.argsort(distance, kind="stable")[:n_fibres]
    # With few fibres, the lattice's random offset and the warp can leave the disc short of
    # points, so the farthest kept fibre lies well outside it (up to 1.15 radii for 93 fibres).
    # Pull the bundle in radially then: the layout always exists, only a few % denser.
    squeeze = min(1.0, _MAX_REACH * radius / distance[keep[-1]])
    positions = points[keep] * squeeze + centre
    limits = np.array(shape) - 0.5
    return np.clip(positions, -0.5, limits - 1e-9)


def _hexagonal_lattice(extent: float, pitch: float, rng: np.random.Generator) -> np.ndarray:
    """A hexagonal lattice covering [-extent, extent]², randomly rotated and shifted."""
    row_step = pitch * np.sqrt(3) / 2
    n_rows = int(np.ceil(extent / row_step))
    n_cols = int(np.ceil(extent / pitch)) + 1
    rows, cols = np.mgrid[-n_rows : n_rows + 1, -n_cols : n_cols + 1].astype(np.float64)
    y = rows * row_step
    x = (cols + 0.5 * (rows % 2)) * pitch
    angle = rng.uniform(0, np.pi / 3)
    offset = rng.uniform(-0.5, 0.5, size=2) * pitch
    cos, sin = np.cos(angle), np.sin(angle)
    points = np.stack([cos * y - sin * x, sin * y + cos * x], axis=-1).reshape(-1, 2)
    return points + offset


def _smooth_warp(
    points: np.ndarray, extent: float, pitch: float, warp: float, rng: np.random.Generator
) -> np.ndarray:
    """A smooth random displacement field, ``warp`` pitches in amplitude, sampled at points."""
    if warp == 0:
        return np.zeros_like(points)
    size = 64
    correlation = size / 12  # a few bends across the field of view
    field = gaussian_filter(rng.standard_normal((2, size, size)), (0, correlation, correlation))
    field *= warp * pitch / field.std()
    grid = (points + extent) / (2 * extent) * (size - 1)
    return np.stack(
        [map_coordinates(component, grid.T, order=1, mode="nearest") for component in field],
        axis=-1,
    )
