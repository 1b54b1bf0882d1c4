"""Differentiable Voronoi vectorisation (seed 001, §3.3.2): images → fibre-cell means, in torch.

:class:`VoronoiPooling` averages the pixels of each fibre's Voronoi cell, with the very cells of
:meth:`napari_pclesr.Simulator.fibre_signals` (the same :func:`voronoi_mean_matrix`), so the
mean of a cell is differentiable with respect to every pixel: its gradient is 1 / (cell size)
for the pixels of the cell and 0 elsewhere.

For training on patches, :meth:`VoronoiPooling.patches` pools the fibres of each patch into a
fixed-length vector of K entries (K = the largest number of fibres any patch of that size
holds), padded, with a validity mask. A patch's fibres are those whose Voronoi cell lies
**entirely** inside the patch: a cell cut by the patch border would be averaged over part of
its pixels only, and its mean would not be the fibre's signal. Their order is that of the
fibre indices. Fibres whose cell holds no pixel centre (possible only for bundles denser than
the pixel grid) belong to no patch.

Per patch the pooling is described by a *slot map*: a (P, P) integer image giving, for every
pixel, the slot (0 … K − 1) of the fibre whose cell it belongs to, or K for pixels of no
complete cell. :func:`pool_slots` then averages a batch of patches with different fibre counts
in one ``scatter_add`` on the device. Slot maps are images aligned with their patch, so flips
and rotations of a patch apply to its slot map as they are.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from napari_pclesr.fibre import FibreLayout
from napari_pclesr.simulate.signals import default_cell_radius, voronoi_mean_matrix

__all__ = ["VoronoiPooling", "pool_slots"]


def pool_slots(images: torch.Tensor, slot_maps: torch.Tensor, k: int):
    """Mean of each slot of each patch: the batched, padded Voronoi vectorisation.

    Parameters
    ----------
    images : torch.Tensor (B, 1, P, P)
        Patches (e.g. super-resolved ones).
    slot_maps : torch.Tensor (B, P, P) of int
        For every pixel its slot in ``[0, k)``, or ``k`` for pixels that no slot takes (see
        :meth:`VoronoiPooling.slot_maps`).
    k : int
        Length of the vectors.

    Returns
    -------
    means : torch.Tensor (B, k), float32
        Mean of the pixels of each slot; 0 for empty (padded) slots.
    valid : torch.Tensor (B, k), bool
        Which slots hold pixels (real fibres).
    """
    batch = images.shape[0]
    if slot_maps.shape[0] != batch or slot_maps.shape[-2:] != images.shape[-2:]:
        raise ValueError(
            f"slot maps {tuple(slot_maps.shape)} do not match the patches {tuple(images.shape)}."
        )
    values = images.reshape(batch, -1).float()
    slots = slot_maps.reshape(batch, -1).long()
    sums = values.new_zeros(batch, k + 1).scatter_add(1, slots, values)
    counts = torch.zeros(batch, k + 1, device=values.device).scatter_add_(
        1, slots, torch.ones_like(values)
    )
    counts = counts[:, :k]
    return sums[:, :k] / counts.clamp_min(1.0), counts > 0


class VoronoiPooling(nn.Module):
    """Mean of the pixels in each fibre's Voronoi cell, as a differentiable torch module.

    Parameters
    ----------
    layout : FibreLayout
        The fibre positions on the grid of the images to pool.
    cell_radius : float, optional
        Pixels farther than this from every fibre belong to no cell; by default the
        simulator's (twice the median nearest-neighbour spacing), so the cells are exactly
        those of :class:`~napari_pclesr.Simulator`.

    Notes
    -----
    ``pooling(images)`` maps full frames (B, 1, H, W) to (B, N) cell means, equal to
    ``Simulator(layout).fibre_signals`` (a fibre whose cell holds no pixel centre takes the
    value of the pixel nearest its centre, as there). The index tensors are buffers, so
    ``pooling.to(device)`` moves them.

    Examples
    --------
    >>> layout = FibreLayout.synthetic((64, 64), n_fibres=400, seed=0)
    >>> pooling = VoronoiPooling(layout)
    >>> pooling(torch.rand(2, 1, 64, 64)).shape
    torch.Size([2, 400])
    """

    def __init__(self, layout: FibreLayout, cell_radius: float | None = None):
        super().__init__()
        if not isinstance(layout, FibreLayout):
            raise TypeError(f"layout must be a FibreLayout, got {type(layout).__name__}.")
        self.layout = layout
        radius = default_cell_radius(layout) if cell_radius is None else float(cell_radius)
        matrix, empty_cells = voronoi_mean_matrix(layout, radius)
        entries = matrix.tocoo()
        self.register_buffer("_fibres", torch.from_numpy(entries.row.astype(np.int64)))
        self.register_buffer("_pixels", torch.from_numpy(entries.col.astype(np.int64)))
        self.register_buffer("_weights", torch.from_numpy(entries.data.astype(np.float32)))
        # The partition of the grid into cells, without the borrowed pixel of empty cells.
        in_cell = ~np.isin(entries.row, empty_cells)
        self._owner = np.full(layout.shape[0] * layout.shape[1], -1, dtype=np.int64)
        self._owner[entries.col[in_cell]] = entries.row[in_cell]
        self._boxes = _cell_boxes(entries.row[in_cell], entries.col[in_cell], layout)
        self._max_fibres: dict[int, int] = {}
        self._patch_cache: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}

    @property
    def n_fibres(self) -> int:
        """N, the number of fibres (the length of a full-frame vector)."""
        return self.layout.n_fibres

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) frames on the layout's grid → (B, N) Voronoi-cell means (float32)."""
        height, width = self.layout.shape
        if images.ndim != 4 or images.shape[1] != 1 or tuple(images.shape[-2:]) != (height, width):
            raise ValueError(
                f"expected frames of shape (B, 1, {height}, {width}) (the layout's grid), got "
                f"{tuple(images.shape)}."
            )
        values = images.reshape(images.shape[0], -1).float()[:, self._pixels] * self._weights
        out = values.new_zeros(images.shape[0], self.n_fibres)
        return out.index_add(1, self._fibres, values)

    # -- patches --------------------------------------------------------------------------------

    def max_fibres_per_patch(self, size: int) -> int:
        """K: the most fibres whose cells lie entirely inside any ``size`` × ``size`` patch."""
        size = self._check_size(size)
        if size not in self._max_fibres:
            self._max_fibres[size] = _max_cells_in_window(self._boxes, self.layout.shape, size)
        return self._max_fibres[size]

    def patch_fibres(self, origins, size: int) -> np.ndarray:
        """(n, K) fibre indices of the patches at ``origins`` ((n, 2) row, col), −1 padded."""
        return np.stack([self._patch(origin, size)[0] for origin in _origins(origins)])

    def slot_maps(self, origins, size: int) -> np.ndarray:
        """(n, size, size) slot maps (int16, or int32 for K >= 32767) of the patches at
        ``origins`` (see :func:`pool_slots`)."""
        return np.stack([self._patch(origin, size)[1] for origin in _origins(origins)])

    def patches(self, images: torch.Tensor, origins, size: int):
        """Pool patches cut at known positions of the layout's grid.

        Parameters
        ----------
        images : torch.Tensor (B, 1, size, size)
            Patches; patch b has its top-left pixel at ``origins[b]`` on the layout's grid.
        origins : array_like (B, 2) of int
            (row, col) of each patch.
        size : int

        Returns
        -------
        means : torch.Tensor (B, K)
            The cell means of each patch's fibres (:meth:`patch_fibres` order), zero padded.
        valid : torch.Tensor (B, K) of bool
            True for real entries; padded ones must be left out of any loss.
        """
        size = self._check_size(size)
        if images.ndim != 4 or tuple(images.shape[1:]) != (1, size, size):
            raise ValueError(f"expected patches (B, 1, {size}, {size}), got {tuple(images.shape)}.")
        maps = torch.from_numpy(self.slot_maps(origins, size)).to(images.device)
        if len(maps) != len(images):
            raise ValueError(f"{len(maps)} origins were given for {len(images)} patches.")
        return pool_slots(images, maps, self.max_fibres_per_patch(size))

    def _patch(self, origin: tuple[int, int], size: int) -> tuple[np.ndarray, np.ndarray]:
        size = self._check_size(size)
        row, col = origin
        height, width = self.layout.shape
        if not (0 <= row <= height - size and 0 <= col <= width - size):
            raise ValueError(
                f"a {size}x{size} patch at ({row}, {col}) does not fit the {height}x{width} grid."
            )
        key = (row, col, size)
        if key not in self._patch_cache:
            k = self.max_fibres_per_patch(size)
            boxes = self._boxes
            inside = (
                (boxes[:, 0] >= row)
                & (boxes[:, 1] < row + size)
                & (boxes[:, 2] >= col)
                & (boxes[:, 3] < col + size)
            )
            fibres = np.flatnonzero(inside)
            dtype = np.int16 if k < np.iinfo(np.int16).max else np.int32
            slot_of_fibre = np.full(self.n_fibres + 1, k, dtype=dtype)  # last: no owner
            slot_of_fibre[fibres] = np.arange(len(fibres), dtype=dtype)
            owner = self._owner.reshape(height, width)[row : row + size, col : col + size]
            padded = np.full(k, -1, dtype=np.int64)
            padded[: len(fibres)] = fibres
            self._patch_cache[key] = (padded, slot_of_fibre[owner])
        return self._patch_cache[key]

    def _check_size(self, size) -> int:
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
            raise ValueError(f"the patch size must be a whole number >= 1, got {size!r}.")
        if size > min(self.layout.shape):
            raise ValueError(f"patch size {size} exceeds the {self.layout.shape} grid.")
        return int(size)


def _origins(origins) -> list[tuple[int, int]]:
    array = np.asarray(origins.cpu() if isinstance(origins, torch.Tensor) else origins)
    array = array.reshape(-1, 2)
    if not np.issubdtype(array.dtype, np.integer) and not np.array_equal(array, np.round(array)):
        raise ValueError("patch origins must be whole pixel coordinates.")
    return [(int(row), int(col)) for row, col in array]


def _cell_boxes(fibres: np.ndarray, pixels: np.ndarray, layout: FibreLayout) -> np.ndarray:
    """(N, 4) [row min, row max, col min, col max] of each cell; empty cells get an empty box."""
    width = layout.shape[1]
    big = np.iinfo(np.int64).max // 2
    boxes = np.empty((layout.n_fibres, 4), dtype=np.int64)
    boxes[:, [0, 2]] = big
    boxes[:, [1, 3]] = -big
    rows, cols = pixels // width, pixels % width
    np.minimum.at(boxes[:, 0], fibres, rows)
    np.maximum.at(boxes[:, 1], fibres, rows)
    np.minimum.at(boxes[:, 2], fibres, cols)
    np.maximum.at(boxes[:, 3], fibres, cols)
    return boxes


def _max_cells_in_window(boxes: np.ndarray, shape: tuple[int, int], size: int) -> int:
    """The most cells that fit entirely inside one ``size`` × ``size`` window of the grid.

    A cell with rows [r0, r1] lies inside the window at row ``top`` when
    ``r1 − size + 1 <= top <= r0`` (likewise for columns), a rectangle of window positions; each
    cell adds 1 over its rectangle (a 2-D difference array) and the prefix sums count the cells
    of every window at once.
    """
    height, width = shape
    n_rows, n_cols = height - size + 1, width - size + 1
    filled = boxes[:, 0] <= boxes[:, 1]
    low_r = np.maximum(boxes[filled, 1] - size + 1, 0)
    high_r = np.minimum(boxes[filled, 0], n_rows - 1)
    low_c = np.maximum(boxes[filled, 3] - size + 1, 0)
    high_c = np.minimum(boxes[filled, 2], n_cols - 1)
    fits = (low_r <= high_r) & (low_c <= high_c)
    low_r, high_r, low_c, high_c = low_r[fits], high_r[fits], low_c[fits], high_c[fits]
    counts = np.zeros((n_rows + 1, n_cols + 1), dtype=np.int64)
    np.add.at(counts, (low_r, low_c), 1)
    np.add.at(counts, (high_r + 1, low_c), -1)
    np.add.at(counts, (low_r, high_c + 1), -1)
    np.add.at(counts, (high_r + 1, high_c + 1), 1)
    return int(counts.cumsum(axis=0).cumsum(axis=1).max(initial=0))
