"""napari reader: pCLE recordings as Image layers, fibre layouts as Points layers.

Which files reach this reader is decided by the manifest (``napari.yaml``): napari offers a
reader only the files its filename patterns match, and asks "Choose reader" whenever two
plugins' patterns match a file, before any ``get_reader`` runs (``viewer.open(path,
plugin=...)`` also needs a matching pattern). The manifest therefore names only our formats,
never ``"*"``: PNGs, JPEGs and the like open with napari's own reader without a question.
TIFFs, videos, ``.csv``/``.npy``/``.npz`` files and folders are formats napari reads too, so
napari asks once (and can remember the answer) unless ``plugin="napari-pclesr"`` is given.

:func:`get_reader` claims a file only after a cheap content check (``None`` otherwise, never
an exception): an ``.mkt``, a layout file, a folder of frames, and a TIFF or video only if it
is pCLE: written by this package, raw fibre-bundle camera frames (a central crop shows a
regular lattice of cores), or grey frames with a circular field of view. Reading happens in a
worker thread when the viewer's event loop runs (see :mod:`._background`), so opening a large
recording or reconstructing raw frames never freezes the viewer.
"""

from __future__ import annotations

import functools
import os
import zipfile
from pathlib import Path

import numpy as np

from napari_pclesr._napari._background import layers_now_or_later

#: Contrast limits are these percentiles of a few frames, inside the field of view.
CONTRAST_PERCENTILES = (0.5, 99.5)
#: Raw bundle frames are camera frames of this many pixels; larger TIFFs are not checked.
RAW_FRAME_PIXELS = (256 * 256, 2048 * 2048)
#: The raw-bundle check looks at this central square only (40 ms, not 0.6 s for a frame).
RAW_CHECK_SIDE = 320
#: A compressed single-page stack larger than this is not read whole for the check.
MAX_CHECK_BYTES = 64 * 2**20
#: Frames are subsampled to about this side for the field-of-view check.
FOV_CHECK_SIDE = 160
#: Video frames read for the checks (decoding more costs more than it tells).
VIDEO_CHECK_FRAMES = 5
#: A colour frame is grey when 99 % of its pixels have channels within this many levels.
GREY_TOLERANCE = 3
#: ``layer.metadata`` key naming a layer's part in the SR workflow, for the docks' defaults.
ROLE_KEY = "pclesr_role"


def get_reader(path):
    """Return a reader for ``path`` if it is a pCLE recording or a fibre layout, else None."""
    try:
        if isinstance(path, (list, tuple)):
            if len(path) != 1:
                return None
            path = path[0]
        path = Path(path)
        if not path.exists():
            return None
        from napari_pclesr.io import detect_format

        kind = detect_format(path)
        if kind == "layout":
            return read_layout_layers if _looks_like_layout(path) else None
        if kind in ("mkt", "folder"):
            return read_sequence_layers
        if kind in ("tiff", "video") and looks_like_pcle(path):
            return read_sequence_layers
        return None
    except Exception:  # napari's contract: never raise for a path we may not handle
        return None


def looks_like_pcle(path) -> bool:
    """Cheap content check: is this TIFF or video a pCLE recording?

    True for TIFFs written by this package, for raw fibre-bundle camera frames, and for grey
    frames whose lit area is a disc (the fibre bundle's field of view). Reads one frame of a
    TIFF and a few frames of a video; an empty or unreadable file counts as ours, so that it
    gets our clear error message rather than another reader's.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        return True
    if path.suffix.lower() in (".tif", ".tiff"):
        return _tiff_is_pcle(path)
    return _video_is_pcle(path)


def _tiff_is_pcle(path: Path) -> bool:
    import tifffile

    from napari_pclesr.io.tiff import METADATA_KEY

    try:
        with tifffile.TiffFile(path) as tif:
            if any(METADATA_KEY in (meta or {}) for meta in tif.shaped_metadata or ()):
                return True
            frame = _first_tiff_frame(tif, path)
    except Exception:
        return True  # damaged: let read_sequence explain what is wrong
    if frame is None:
        return False
    grey = _grey(frame)
    if grey is None:
        return False
    return _is_raw_bundle(grey) or _has_disc_fov(grey[np.newaxis])


def _first_tiff_frame(tif, path: Path) -> np.ndarray | None:
    """The first frame of a TIFF, without reading the whole stack; None if too large to be a
    pCLE frame. A stack written as one contiguous block is one page holding every frame."""
    import tifffile

    page = tif.pages[0]
    stacked = page.ndim == 4 or (page.ndim == 3 and page.shape[-1] not in (3, 4))
    frame_shape = page.shape[1:] if stacked else page.shape
    if int(np.prod(frame_shape[:2])) > RAW_FRAME_PIXELS[1]:
        return None  # larger than any fibre-bundle camera or pCLE frame
    if not stacked:
        return page.asarray()
    try:
        return np.asarray(tifffile.memmap(path, mode="r")[0])
    except ValueError:  # compressed: reading all of it is what the check must not do
        return None if page.nbytes > MAX_CHECK_BYTES else page.asarray()[0]


def _video_is_pcle(path: Path) -> bool:
    import imageio_ffmpeg

    frames = []
    reader = imageio_ffmpeg.read_frames(os.fspath(path), pix_fmt="rgb24")
    try:
        width, height = next(reader)["size"]
        for buffer in reader:
            frames.append(np.frombuffer(buffer, np.uint8).reshape(height, width, 3))
            if len(frames) == VIDEO_CHECK_FRAMES:
                break
    except Exception:
        return True  # damaged: let read_sequence explain what is wrong
    finally:
        reader.close()
    greys = [_grey(frame) for frame in frames]
    if not greys or any(grey is None for grey in greys):
        return False
    return _has_disc_fov(np.stack(greys))


def _grey(frame: np.ndarray) -> np.ndarray | None:
    """The frame as one grey plane, or None if it is a colour image."""
    if frame.ndim == 2:
        return frame
    if frame.ndim == 3 and frame.shape[-1] in (3, 4):
        colour = frame[..., :3].astype(np.int32)
        spread = colour.max(axis=-1) - colour.min(axis=-1)
        if np.percentile(spread, 99) > GREY_TOLERANCE:
            return None
        return frame[..., 0]
    return None


def _is_raw_bundle(frame: np.ndarray) -> bool:
    from napari_pclesr.io import looks_like_raw_bundle

    low, high = RAW_FRAME_PIXELS
    if not low <= frame.size <= high:
        return False
    rows, cols = frame.shape
    top, left = max(0, (rows - RAW_CHECK_SIDE) // 2), max(0, (cols - RAW_CHECK_SIDE) // 2)
    return looks_like_raw_bundle(frame[top : top + RAW_CHECK_SIDE, left : left + RAW_CHECK_SIDE])


def _has_disc_fov(frames: np.ndarray) -> bool:
    from napari_pclesr.io import estimate_fov

    step = max(1, max(frames.shape[-2:]) // FOV_CHECK_SIDE)
    return estimate_fov(frames[:, ::step, ::step]).circle is not None


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


# -- reading ------------------------------------------------------------------------------------


def _single_path(path) -> Path:
    return Path(path[0] if isinstance(path, (list, tuple)) else path)


def read_layout_layers(path) -> list[tuple]:
    """Read a fibre layout as a Points layer; the layout is kept in its metadata."""
    from napari_pclesr.io import read_layout

    path = _single_path(path)
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
    """Read a recording as an Image layer (plus its reconstruction for raw bundle frames);
    in an interactive session the layers come from a worker thread."""
    path = _single_path(path)
    return layers_now_or_later(functools.partial(sequence_layers, path), f"Opening {path.name}")


def sequence_layers(path) -> list[tuple]:
    """The layer tuples of a recording (the raw frames, and for raw fibre-bundle frames with
    a flat-field background beside them, the reconstruction and its cores)."""
    from napari_pclesr.io import read_sequence

    path = Path(path)
    frames, meta = read_sequence(path)
    if meta["format"] in ("tiff", "ome-tiff", "imagej-tiff") and _is_raw_bundle(
        np.asarray(frames[0])
    ):
        return [image_layer(frames, meta, path.name, role="raw"), *_raw_bundle_layers(path)]
    return [image_layer(frames, meta, path.name, role="lr")]


def image_layer(frames, meta: dict, name: str, role: str = "lr") -> tuple:
    """An Image layer tuple: a single frame as 2-D, contrast at the 0.5–99.5 percentiles in
    the FoV, and ``meta`` (FoV mask included) plus the layer's role as layer metadata."""
    from napari_pclesr.io.sequence import sample_frames

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
        "metadata": {**meta, ROLE_KEY: role},
    }
    return (data, attributes, "image")


def _raw_bundle_layers(path: Path) -> list[tuple]:
    """The reconstruction of raw bundle frames and its cores, given a background beside them."""
    import warnings

    from napari_pclesr.io import find_background, read_sequence
    from napari_pclesr.io.raw import is_background_name

    if is_background_name(path):
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
