"""Fibre layouts: where the fibres of a bundle sit on the reconstruction grid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from napari_pclesr._validation import check_grid_shape
from napari_pclesr.fibre.files import read_layout_file, write_layout_file
from napari_pclesr.fibre.synthetic import hexagonal_bundle


@dataclass(frozen=True, eq=False)
class FibreLayout:
    """Fibre centres of a fibre bundle on a pixel grid.

    Parameters
    ----------
    positions : array_like, shape (N, 2)
        (row, col) coordinates of the fibre centres in pixels, with pixel centres at integer
        coordinates. Every fibre must lie on the grid: ``-0.5 <= row <= H - 0.5`` and likewise
        for columns.
    shape : tuple of int
        (H, W) of the grid the layout lives on.

    Raises
    ------
    ValueError
        For fewer than 3 fibres, NaN or infinite positions, fibres outside the grid, duplicate
        positions, or fibres that all lie on one line (no triangulation exists then).

    Examples
    --------
    >>> layout = FibreLayout.synthetic(shape=(128, 128), n_fibres=1500, seed=0)
    >>> layout.n_fibres
    1500
    """

    positions: np.ndarray
    shape: tuple[int, int]

    def __post_init__(self):
        positions = np.array(self.positions, dtype=np.float64)
        shape = check_grid_shape(self.shape)
        _check_positions(positions, shape)
        positions.setflags(write=False)
        object.__setattr__(self, "positions", positions)
        object.__setattr__(self, "shape", shape)

    @property
    def n_fibres(self) -> int:
        """The number of fibres N."""
        return len(self.positions)

    def __repr__(self) -> str:
        return f"FibreLayout(n_fibres={self.n_fibres}, shape={self.shape})"

    def __eq__(self, other) -> bool:
        if not isinstance(other, FibreLayout):
            return NotImplemented
        return self.shape == other.shape and np.array_equal(self.positions, other.positions)

    __hash__ = None

    def nearest_neighbour_distances(self) -> np.ndarray:
        """Distance from each fibre to its nearest neighbour, in pixels, shape (N,)."""
        distances, _ = cKDTree(self.positions).query(self.positions, k=2)
        return distances[:, 1]

    def spacing_stats(self) -> dict[str, float]:
        """Nearest-neighbour spacing statistics (pixels): mean, std, median, 5th/95th percentile.

        A real bundle has a median spacing close to its core pitch and a coefficient of variation
        (std / mean) of roughly 0.1–0.2, because the packing is only locally hexagonal.
        """
        distances = self.nearest_neighbour_distances()
        return {
            "mean": float(distances.mean()),
            "std": float(distances.std()),
            "median": float(np.median(distances)),
            "p05": float(np.percentile(distances, 5)),
            "p95": float(np.percentile(distances, 95)),
            "cv": float(distances.std() / distances.mean()),
        }

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def synthetic(
        cls,
        shape: tuple[int, int] = (576, 576),
        n_fibres: int = 30000,
        seed: int | None = 0,
        *,
        jitter: float = 0.05,
        warp: float = 0.6,
        fov_fraction: float = 0.98,
    ) -> FibreLayout:
        """Make a realistic bundle: near-hexagonal packing with jitter in a circular field of view.

        Parameters
        ----------
        shape : tuple of int
            (H, W) of the grid.
        n_fibres : int
            Exact number of fibres.
        seed : int or None
            Seed of the random lattice orientation, jitter and warp.
        jitter : float
            Standard deviation of the independent displacement of each fibre, as a fraction of the
            lattice pitch.
        warp : float
            Amplitude of a smooth random deformation of the lattice, in lattice pitches. Real
            bundles are hexagonal only in small domains; the warp bends the lattice rows.
        fov_fraction : float
            Diameter of the circular field of view as a fraction of the smaller grid side.

        Returns
        -------
        FibreLayout
        """
        shape = check_grid_shape(shape)
        positions = hexagonal_bundle(
            shape, int(n_fibres), np.random.default_rng(seed), jitter, warp, fov_fraction
        )
        return cls(positions, shape)

    @classmethod
    def detect(
        cls,
        raw_frame,
        background=None,
        spacing: float | None = None,
    ) -> FibreLayout:
        """Find the fibre cores in a raw camera frame of a bundle, where cores are visible.

        Parameters
        ----------
        raw_frame : array_like, shape (H, W)
            A raw camera frame of the bundle.
        background : array_like, shape (H, W), optional
            A flat-field frame of the same bundle (no object). Cores are found in it instead
            of ``raw_frame`` when given, since the object's dark areas hide cores.
        spacing : float, optional
            Core pitch in pixels; estimated from the power spectrum when omitted.

        Returns
        -------
        FibreLayout
            On the (H, W) grid of the camera frame.

        Notes
        -----
        On the real raw frames of PyFibreBundle (1280×960, ``tissue_paper_back.tif``) this finds
        27,800 cores with a median nearest-neighbour spacing of 4.8 px. See
        :func:`napari_pclesr.fibre.detect.find_cores` for the method.
        """
        from napari_pclesr.fibre.detect import find_cores

        frame = np.asarray(background if background is not None else raw_frame)
        return cls(find_cores(frame, spacing=spacing), frame.shape[:2])

    # -- files ----------------------------------------------------------------------------------

    @classmethod
    def from_file(
        cls, path, shape: tuple[int, int] | None = None, *, rescale: bool = False
    ) -> FibreLayout:
        """Read a layout from ``.csv``, ``.npy`` or ``.npz``.

        ``.csv`` files have a header ``row,col`` and may start with a comment line
        ``# shape=H,W``. ``.npz`` files hold ``positions`` and ``shape``. ``.npy`` files hold only
        the (N, 2) positions.

        Parameters
        ----------
        path : str or os.PathLike
        shape : tuple of int, optional
            The grid the layout is wanted for. A file that stores another grid is refused
            (its fibres would cover only part of this one), unless ``rescale`` is set. For a
            file without a stored grid (``.npy``) it is the grid; without either, the smallest
            grid that holds every fibre is used.
        rescale : bool
            Map a layout stored for another grid onto ``shape`` (see :meth:`rescaled`).

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        ValueError
            If the file is not a layout, its positions are invalid (see the class), or it is
            for another grid than ``shape``.
        """
        positions, stored_shape = read_layout_file(Path(path))
        grid = stored_shape or shape
        if grid is None:
            grid = tuple(int(np.floor(extent + 0.5)) + 1 for extent in positions.max(axis=0))
        try:
            layout = cls(positions, grid)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        wanted = None if shape is None else check_grid_shape(shape)
        if wanted is None or layout.shape == wanted:
            return layout
        if rescale:
            return layout.rescaled(wanted)
        raise ValueError(
            f"{path}: the layout is for a {layout.shape[0]}x{layout.shape[1]} grid, but the "
            f"images are {wanted[0]}x{wanted[1]}; its fibres would cover only part of them. Use "
            "a layout made for this grid, or rescale it (pclesr simulate --rescale-layout, "
            "FibreLayout.rescaled)."
        )

    def rescaled(self, shape: tuple[int, int]) -> FibreLayout:
        """The same fibres mapped onto another grid, each axis scaled by the ratio of the sides.

        The grid edges (-0.5 and H - 0.5) map onto the new edges, so the bundle fills the new
        grid as it filled the old one; the fibre spacing scales with it (a layout stretched
        beyond its grid has fewer fibres per pixel than a real bundle).
        """
        shape = check_grid_shape(shape)
        factors = np.array(shape, dtype=np.float64) / np.array(self.shape)
        positions = (self.positions + 0.5) * factors - 0.5
        return FibreLayout(np.clip(positions, -0.5, np.array(shape) - 0.5), shape)

    def save(self, path) -> Path:
        """Write the layout to ``.csv``, ``.npy`` or ``.npz`` atomically; returns the path.

        ``.csv`` and ``.npz`` keep the grid shape; ``.npy`` keeps only the positions. Positions are
        written with 17 significant digits, so every format round-trips them exactly.
        """
        path = Path(path)
        write_layout_file(path, self.positions, self.shape)
        return path


def _check_positions(positions: np.ndarray, shape: tuple[int, int]) -> None:
    if positions.ndim != 2 or positions.shape[1] != 2:
        raise ValueError(
            f"positions must be an (N, 2) array of (row, col), got shape {positions.shape}."
        )
    if len(positions) < 3:
        raise ValueError(
            f"a fibre layout needs at least 3 fibres for a triangulation, got {len(positions)}."
        )
    if not np.all(np.isfinite(positions)):
        bad = int(np.count_nonzero(~np.isfinite(positions).all(axis=1)))
        raise ValueError(f"{bad} fibre positions are NaN or infinite; remove or fix them.")
    limits = np.array(shape) - 0.5
    outside = np.any((positions < -0.5) | (positions > limits), axis=1)
    if outside.any():
        first = positions[np.argmax(outside)]
        raise ValueError(
            f"{int(outside.sum())} fibres lie outside the {shape[0]}x{shape[1]} grid "
            f"(e.g. at row={first[0]:g}, col={first[1]:g}); coordinates must be in "
            f"[-0.5, H-0.5] x [-0.5, W-0.5]. Give a larger shape or drop those fibres."
        )
    unique = np.unique(positions, axis=0)
    if len(unique) < len(positions):
        raise ValueError(
            f"{len(positions) - len(unique)} fibre positions are duplicates; each fibre must "
            "have its own position (deduplicate with np.unique(positions, axis=0))."
        )
    centred = positions - positions.mean(axis=0)
    singular = np.linalg.svd(centred, compute_uv=False)
    if singular[1] <= 1e-9 * max(singular[0], 1.0):
        raise ValueError(
            "all fibres lie on one line, so no triangulation exists; a layout needs fibres "
            "spread over an area."
        )
