"""napari writers: Image layers as float32 TIFF, Points layers as fibre-layout files.

Layer metadata keys that are saved with an image: ``frame_rate``, ``pixel_size_um``,
``fov_circle``, ``layout_path``, ``simulator`` (a dict of parameters) and ``model``; for a
``fibre_layout`` (a :class:`~napari_pclesr.FibreLayout`) its fibre count and grid shape.
"""

from __future__ import annotations

import numpy as np

from napari_pclesr.fibre import FibreLayout
from napari_pclesr.io import write_image as write_tiff
from napari_pclesr.io import write_layout


def write_image(path: str, data, attributes: dict) -> list[str]:
    """Save an Image layer as float32 TIFF with its pCLE metadata; returns ``[path]``."""
    if attributes.get("rgb"):
        raise ValueError(f"{path}: the layer is RGB; pCLE images are grey, convert it first.")
    if attributes.get("multiscale"):
        data = data[0]
    metadata = attributes.get("metadata") or {}
    layout = metadata.get("fibre_layout")
    extra = {}
    if isinstance(layout, FibreLayout):  # no file to point to: record what identifies it
        extra["fibre_layout"] = {"n_fibres": layout.n_fibres, "shape": list(layout.shape)}
    written = write_tiff(
        path,
        data,
        frame_rate=metadata.get("frame_rate"),
        pixel_size_um=metadata.get("pixel_size_um"),
        fov_circle=metadata.get("fov_circle"),
        layout=metadata.get("layout_path"),
        simulator=metadata.get("simulator"),
        model=metadata.get("model"),
        extra=extra,
    )
    return [str(written)]


def write_points(path: str, data, attributes: dict) -> list[str]:
    """Save a Points layer as a fibre layout (``.csv`` or ``.npz``); returns ``[path]``.

    The grid shape comes from the layout kept in the layer's metadata (``fibre_layout``) or a
    ``shape`` entry; without either, the smallest grid holding every point is used. The
    current point positions are written, so edits made in napari are kept.
    """
    positions = np.asarray(data, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] < 2:
        raise ValueError(f"{path}: a fibre layout needs (N, 2) points, got {positions.shape}.")
    positions = positions[:, -2:]
    metadata = attributes.get("metadata") or {}
    known = metadata.get("fibre_layout")
    shape = known.shape if isinstance(known, FibreLayout) else metadata.get("shape")
    if shape is None:
        shape = tuple(int(np.floor(extent + 0.5)) + 1 for extent in positions.max(axis=0))
    return [str(write_layout(path, FibreLayout(positions, tuple(shape))))]
