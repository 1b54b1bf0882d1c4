"""napari reader: pCLE recordings as Image layers, fibre layouts as Points layers.

``get_reader`` only looks at the path (suffix, folder content, a CSV header, an array's shape)
and returns None for anything it does not read, without raising. The returned reader raises
our :mod:`napari_pclesr.io` errors for damaged files; napari shows them as notifications.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from napari_pclesr.io import (
    find_background,
    looks_like_raw_bundle,
    read_layout,
    read_sequence,
)
from napari_pclesr.io.raw import is_background_name
from napari_pclesr.io.sequence import detect_format, sample_frames

#: Contrast limits are these percentiles of a few frames, inside the field of view.
CONTRAST_PERCENTILES = (0.5, 99.5)
#: Raw bundle detection runs on frames of this many pixels only (camera frames; larger ones
#: would make every TIFF slow to open).
_RAW_FRAME_PIXELS = (256 * 256, 2048 * 2048)


def get_reader(path):
    """Return a reader for ``path`` if it is a pCLE recording or a fibre layout, else None."""
    try:
        if isinstance(path, (list, tuple)):
            if len(path) != 1:
                return None
            path = path[0]
        if not Path(path).exists():
            return None
        kind = detect_format(path)
        if kind == "layout":
            return read_layout_layers if _looks_like_layout(Path(path)) else None
        return read_sequence_layers if kind is not None else None
    except Exception:  # the contract: never raise for a path we may not handle
        return None


def _looks_like_layout(path: Path) -> bool:
    """Cheap check that a .csv/.npy/.npz is one of our layout files (empty files included,
    so that they get a clear error rather than another plugin's)."""
    if path.stat().st_size == 0:
        return True
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, encoding="utf-8", errors="replace") as stream:
            for line in stream:
                if line.strip() and not line.lstrip().startswith("#"):
                    columns = [name.strip().lower() for name in line.split(",")]
                    return "row" in columns or "col" in columns
        return False
    if suffix == ".npy":
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        return array.ndim == 2 and array.shape[1] == 2
    with zipfile.ZipFile(path) as archive:
        return "positions.npy" in archive.namelist()


def read_layout_layers(path) -> list[tuple]:
    """Read a fibre layout as a Points layer; the layout is kept in its metadata."""
    path = Path(path[0] if isinstance(path, (list, tuple)) else path)
    layout = read_layout(path)
    return [layout_layer(layout, name=path.stem, path=path)]


def layout_layer(
    layout, name: str, path: str | os.PathLike | None = None, visible: bool = True
) -> tuple:
    """A Points layer tuple for a FibreLayout, the layout kept as ``metadata["fibre_layout"]``."""
    spacing = float(np.median(layout.nearest_neighbour_distances()))
    metadata = {
        "fibre_layout": layout,
        "shape": layout.shape,
        "layout_path": None if path is None else os.fspath(path),
    }
    attributes = {
        "name": name,
        "size": max(0.5, 0.5 * spacing),
        "face_color": "yellow",
        "border_width": 0,
        "visible": visible,
        "metadata": metadata,
    }
    return (np.asarray(layout.positions), attributes, "points")


def read_sequence_layers(path) -> list[tuple]:
    """Read a recording as an Image layer (plus its reconstruction for raw bundle frames)."""
    path = Path(path[0] if isinstance(path, (list, tuple)) else path)
    frames, meta = read_sequence(path)
    layers = [image_layer(frames, meta, path.name)]
    if meta["format"] in ("tiff", "ome-tiff", "imagej-tiff"):
        layers += _raw_bundle_layers(path, frames)
    return layers


def image_layer(frames, meta: dict, name: str) -> tuple:
    """An Image layer tuple: a single frame as 2-D, contrast at the 0.5–99.5 percentiles in
    the FoV, and ``meta`` (FoV mask included) as layer metadata."""
    sample = sample_frames(frames)
    inside = sample[:, meta["fov_mask"]] if meta["fov_mask"].any() else sample
    low, high = (float(v) for v in np.percentile(inside, CONTRAST_PERCENTILES))
    if not high > low:
        high = low + 1.0
    data = np.asarray(frames[0]) if len(frames) == 1 else frames
    attributes = {
        "name": name,
        "contrast_limits": [low, high],
        "colormap": "gray",
        "metadata": dict(meta),
    }
    return (data, attributes, "image")


def _raw_bundle_layers(path: Path, frames) -> list[tuple]:
    """For raw bundle frames with a background beside them: the reconstruction and its cores."""
    first = np.asarray(frames[0])
    low, high = _RAW_FRAME_PIXELS
    if not low <= first.size <= high or is_background_name(path):
        return []
    if not looks_like_raw_bundle(first):
        return []
    background = find_background(path)
    if background is None:
        warnings.warn(
            f"{path.name} looks like raw fibre-bundle frames. To reconstruct them, put the "
            f"flat-field background beside it as {path.stem}_back.tif and open it again, or "
            f"run: pclesr convert {path.name} out.tif --background BACKGROUND.tif",
            stacklevel=2,
        )
        return []
    reconstructed, meta = read_sequence(path, background=background)
    layout = meta["fibre_layout"]
    return [
        image_layer(reconstructed, meta, f"{path.stem} reconstructed"),
        layout_layer(layout, f"{path.stem} cores", path=None, visible=False),
    ]
