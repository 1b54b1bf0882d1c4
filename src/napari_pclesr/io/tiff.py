"""TIFF stacks and images: a (lazy where possible) reader and the float32 TIFF writer.

The reader accepts plain TIFF, multi-page stacks, ImageJ hyperstacks and OME-TIFF, 8-, 16- and
32-bit, grey or RGB (converted to grey). Uncompressed contiguous data is memory-mapped;
compressed stacks larger than :data:`EAGER_LIMIT_BYTES` are read page by page on demand.

The writer stores float32 pages and our metadata (frame rate, pixel size, FoV circle, layout
reference, simulator parameters, model name, …) as JSON in the ImageDescription tag, under the
key ``"pclesr"``; the pixel size also goes into the standard resolution tags (in centimetres),
so other software shows the right scale.
"""

from __future__ import annotations

import logging
import os
import warnings
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from napari_pclesr._atomic import atomic_path
from napari_pclesr._validation import as_grey_float
from napari_pclesr.io._grey import to_grey
from napari_pclesr.io._values import positive_float
from napari_pclesr.io.errors import (
    CorruptFileError,
    DamagedFileWarning,
    EmptyFileError,
    UnsupportedFormatError,
)
from napari_pclesr.io.lazy import LazyFrames, iter_frame_batches, memory_map_of

TIFF_SUFFIXES = (".tif", ".tiff")
#: Compressed stacks up to this size are decoded at once; larger ones page by page.
EAGER_LIMIT_BYTES = 512 * 2**20
#: Key of our metadata in the JSON ImageDescription.
METADATA_KEY = "pclesr"
#: TIFF photometric interpretations whose samples are colour channels.
_COLOUR_PHOTOMETRICS = {2, 6}  # RGB, YCbCr
_MICRONS_PER_UNIT = {"µm": 1.0, "um": 1.0, "micron": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4}


def read_tiff(path: str | os.PathLike) -> tuple[np.ndarray | LazyFrames, dict]:
    """Open a TIFF image or stack as (T, H, W) frames.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.tif``/``.tiff`` file (OME-TIFF and ImageJ TIFF included).

    Returns
    -------
    frames : numpy.ndarray or LazyFrames
        (T, H, W) in the file's own type (uint8, uint16, float32, …); a single image has T = 1.
        RGB(A) data is converted to grey float32 (BT.709 luma, values unscaled).
    meta : dict
        ``frame_rate`` and ``pixel_size_um`` (from our metadata, OME, ImageJ or the
        resolution tags, None where absent), ``format`` (``"tiff"``, ``"ome-tiff"`` or
        ``"imagej-tiff"``), ``raw`` (axes, shape, dtype and the file's ImageJ, OME and JSON
        metadata; for files we wrote, ``raw["pclesr"]`` holds every saved key),
        ``converted_to_grey`` and ``fov_circle`` (for files we wrote).

    Raises
    ------
    EmptyFileError, CorruptFileError, UnsupportedFormatError
        For a zero-byte file, a file that is not a readable TIFF, and axes that are not
        (frames, Y, X).
    """
    import tifffile

    path = Path(path)
    if path.stat().st_size == 0:
        raise EmptyFileError(path, "the file is empty (0 bytes); it holds no TIFF image.")
    try:
        with tifffile_log() as log, tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            layout = frame_layout(path, series)
            saved = _our_metadata(tif)
            raw = {
                "axes": series.axes,
                "shape": tuple(series.shape),
                "dtype": str(series.dtype),
                "imagej": dict(tif.imagej_metadata or {}),
                "ome": tif.ome_metadata if tif.is_ome else None,
                METADATA_KEY: saved,
            }
            meta = {
                "frame_rate": _frame_rate(tif, saved),
                "pixel_size_um": _pixel_size(tif, saved),
                "format": "ome-tiff" if tif.is_ome else "imagej-tiff" if tif.is_imagej else "tiff",
                "raw": raw,
                "converted_to_grey": layout["colour"],
                "fov_circle": saved.get("fov_circle"),
            }
            frames = _open_frames(path, tif, series, layout)
    except (EmptyFileError, UnsupportedFormatError, CorruptFileError):
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        cause = log[-1] if log else f"{type(exc).__name__}: {exc}"
        raise CorruptFileError(
            path, f"cannot be read as TIFF ({cause}); the file is damaged."
        ) from exc
    if log:
        warnings.warn(f"{path}: {'; '.join(log)}", DamagedFileWarning, stacklevel=2)
    return frames, meta


@contextmanager
def tifffile_log() -> Iterator[list[str]]:
    """Collect what tifffile logs (it logs, rather than raises, what is wrong in a damaged
    file) instead of letting it print to the terminal; the messages explain our errors."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage().split("> ", 1)[-1])

    logger = logging.getLogger("tifffile")
    handler, propagate = Collect(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def frame_layout(path: Path, series) -> dict:
    """How the series' axes map onto (frames, Y, X) and whether a colour axis must go."""
    axes, shape = series.axes, tuple(series.shape)
    # Colour images store their samples last (YXS). A planar RGB (SYX) of 3 or 4 samples is
    # what tifffile writes for any (3|4, H, W) array by default, so it is read as grey frames.
    colour = axes.endswith("YXS") and series.keyframe.photometric in _COLOUR_PHOTOMETRICS
    if "S" in axes and not colour:
        axes = axes.replace("S", "T" if "T" not in axes else "Z")
    plane_axes = [a for a in axes if a not in "YX" and not (colour and a == "S")]
    frame_axes = [a for a in plane_axes if shape[axes.index(a)] > 1]
    if (not axes.endswith("YX") and not (colour and axes.endswith("YXS"))) or len(frame_axes) > 1:
        raise UnsupportedFormatError(
            path,
            f"has axes {axes} with shape {shape}; only a single image or one stack of grey or "
            "RGB frames (axes such as YX, TYX, ZYX, YXS) can be opened. Split it first, e.g. "
            "in Fiji.",
        )
    height, width = shape[axes.index("Y")], shape[axes.index("X")]
    n_frames = int(np.prod([shape[axes.index(a)] for a in plane_axes], dtype=np.int64))
    # Counted from the end, the colour axis is the same in the whole series and in one page.
    colour_axis = axes.index("S") - len(axes) if colour else None
    return {
        "colour": colour,
        "colour_axis": colour_axis,
        "n_frames": n_frames,
        "frame_shape": (height, width),
    }


def _open_frames(path: Path, tif, series, layout: dict):
    import tifffile

    n_frames, frame_shape = layout["n_frames"], layout["frame_shape"]
    stack_shape = (n_frames, *frame_shape)
    if not layout["colour"] and series.dataoffset is not None:
        return tifffile.memmap(path, mode="r", series=0).reshape(stack_shape)
    one_page_per_frame = len(series.pages) == n_frames
    frame_bytes = int(np.prod(series.shape, dtype=np.int64)) // n_frames * series.dtype.itemsize
    if n_frames * frame_bytes <= EAGER_LIMIT_BYTES or not one_page_per_frame:
        return _to_stack(series.asarray(), layout)
    dtype = np.float32 if layout["colour"] else series.dtype

    def load(indices):
        with tifffile.TiffFile(path) as reopened:
            pages = reopened.series[0].asarray(key=list(indices))
        return _to_stack(pages, layout).reshape(len(indices), *frame_shape)

    return LazyFrames(load, n_frames, frame_shape, dtype)


def _to_stack(array: np.ndarray, layout: dict) -> np.ndarray:
    if layout["colour"]:
        array = to_grey(np.moveaxis(array, layout["colour_axis"], -1))
    return array.reshape(-1, *layout["frame_shape"])


def _our_metadata(tif) -> dict:
    for shaped in tif.shaped_metadata or ():
        if isinstance(shaped, dict) and isinstance(shaped.get(METADATA_KEY), dict):
            return dict(shaped[METADATA_KEY])
    return {}


def _ome_pixels(tif):
    if not tif.is_ome:
        return None
    try:
        root = ElementTree.fromstring(tif.ome_metadata)
    except ElementTree.ParseError:
        return None
    return next((e for e in root.iter() if e.tag.endswith("Pixels")), None)


def _frame_rate(tif, saved: Mapping) -> float | None:
    if rate := positive_float(saved.get("frame_rate")):
        return rate
    pixels = _ome_pixels(tif)
    if pixels is not None and (increment := positive_float(pixels.get("TimeIncrement"))):
        unit = pixels.get("TimeIncrementUnit", "s")
        return 1.0 / (increment * {"s": 1.0, "ms": 1e-3, "min": 60.0}.get(unit, 1.0))
    imagej = tif.imagej_metadata or {}
    if rate := positive_float(imagej.get("fps")):
        return rate
    if interval := positive_float(imagej.get("finterval")):
        return 1.0 / interval
    return None


def _pixel_size(tif, saved: Mapping) -> float | None:
    if size := positive_float(saved.get("pixel_size_um")):
        return size
    pixels = _ome_pixels(tif)
    if pixels is not None and (size := positive_float(pixels.get("PhysicalSizeX"))):
        scale = _MICRONS_PER_UNIT.get(pixels.get("PhysicalSizeXUnit", "µm"))
        if scale is not None:
            return size * scale
    page = tif.pages[0]
    x_resolution = positive_float(page.resolution[0]) if page.resolution else None
    if x_resolution is None:
        return None
    imagej_unit = (tif.imagej_metadata or {}).get("unit")
    if imagej_unit in _MICRONS_PER_UNIT:
        return _MICRONS_PER_UNIT[imagej_unit] / x_resolution
    if int(page.resolutionunit) == 3:  # pixels per centimetre
        return 1e4 / x_resolution
    return None  # pixels per inch is a print setting (often 72 dpi), not a physical scale


def write_image(
    path: str | os.PathLike,
    image,
    *,
    frame_rate: float | None = None,
    pixel_size_um: float | None = None,
    fov_circle: tuple[float, float, float] | None = None,
    layout: str | os.PathLike | None = None,
    simulator: Mapping | None = None,
    model: str | None = None,
    extra: Mapping | None = None,
    batch_frames: int = 32,
) -> Path:
    """Save a frame or a stack as a float32 TIFF with our metadata, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Target ``.tif``/``.tiff`` file.
    image : array_like
        (H, W) or (T, H, W), any real type (converted to float32, values unscaled). Lazy
        stacks (memory maps, :class:`~napari_pclesr.io.lazy.LazyFrames`) are written batch
        by batch, so memory stays flat. NaN is kept (TIFF stores it).
    frame_rate, pixel_size_um : float, optional
        Frames per second and micrometres per pixel; the pixel size also fills the TIFF
        resolution tags.
    fov_circle : tuple of float, optional
        ``(row, col, radius)`` of the circular field of view, restored on reading.
    layout : str or os.PathLike, optional
        Path of the fibre layout file the image belongs to (stored as given).
    simulator : mapping, optional
        Simulator parameters (e.g. ``{"sigma_mult": 0.05, "sigma_add": 0.01, "seed": 0}``).
    model : str, optional
        Name of the model that produced the image.
    extra : mapping, optional
        More keys: JSON types, NumPy scalars and arrays, or paths.
    batch_frames : int
        Frames converted per batch.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    UnsupportedFormatError
        If the suffix is not ``.tif``/``.tiff``.
    ValueError
        For RGB, empty or non-numeric input, and metadata that JSON cannot store.
    """
    _check_tiff_suffix(path)
    if not isinstance(image, LazyFrames) and memory_map_of(image) is None:
        image = as_grey_float(image, name="image", allow_nan=True)
    elif image.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (T, H, W), got shape {image.shape}.")
    stack = image if image.ndim == 3 else image[None]
    batches = (
        as_grey_float(batch, name="image", ndims=(3,), allow_nan=True)
        for batch in iter_frame_batches(stack, batch_frames)
    )
    return write_image_batches(
        path,
        batches,
        image.shape,
        frame_rate=frame_rate,
        pixel_size_um=pixel_size_um,
        fov_circle=fov_circle,
        layout=layout,
        simulator=simulator,
        model=model,
        extra=extra,
    )


def write_image_batches(
    path: str | os.PathLike, batches: Iterable[np.ndarray], shape: tuple[int, ...], **metadata
) -> Path:
    """Write a float32 TIFF page by page from batches of frames, as they are produced.

    This is how a long result is saved without ever holding it: each batch is written as
    soon as it arrives (e.g. from :meth:`napari_pclesr.infer.SuperResolver.iter_batches`).
    The file is written under a temporary name beside ``path`` and renamed when the last
    frame is in, so an interrupted or failed run leaves no partial file; it is a BigTIFF when
    it exceeds 4 GB.

    Parameters
    ----------
    path : str or os.PathLike
        Target ``.tif``/``.tiff`` file.
    batches : iterable of array_like
        (n, H, W) batches (or single (H, W) frames), in order, together ``shape[0]`` frames.
    shape : tuple of int
        (T, H, W) of the whole stack, or (H, W) for a single frame.
    **metadata
        ``frame_rate``, ``pixel_size_um``, ``fov_circle``, ``layout``, ``simulator``,
        ``model`` and ``extra``, as in :func:`write_image`.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    UnsupportedFormatError
        If the suffix is not ``.tif``/``.tiff``.
    ValueError
        If the batches do not add up to ``shape``, or for metadata that JSON cannot store.
    """
    import json

    import tifffile

    path = _check_tiff_suffix(path)
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"shape must be (H, W) or (T, H, W) with sizes >= 1, got {shape}.")
    pixel_size_um = metadata.get("pixel_size_um")
    saved = {
        "frame_rate": metadata.get("frame_rate"),
        "pixel_size_um": pixel_size_um,
        "fov_circle": None
        if metadata.get("fov_circle") is None
        else [float(v) for v in metadata["fov_circle"]],
        "layout": None if metadata.get("layout") is None else os.fspath(metadata["layout"]),
        "simulator": None if metadata.get("simulator") is None else dict(metadata["simulator"]),
        "model": metadata.get("model"),
        **dict(metadata.get("extra") or {}),
    }
    unknown = set(metadata) - {*saved, "extra"}
    if unknown:
        raise TypeError(f"unknown metadata: {', '.join(sorted(unknown))}.")
    saved = {key: value for key, value in saved.items() if value is not None}
    try:
        saved = json.loads(json.dumps(saved, default=_json_builtin))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"TIFF metadata must be JSON-serialisable: {exc}") from exc
    n_frames = shape[0] if len(shape) == 3 else 1
    options = {}
    if pixel_size_um:
        options = {"resolution": (1e4 / pixel_size_um,) * 2, "resolutionunit": "CENTIMETER"}
    n_bytes = int(np.prod(shape, dtype=np.int64)) * 4
    with atomic_path(path) as temporary:
        tifffile.imwrite(
            temporary,
            _checked_pages(batches, n_frames, shape[-2:]),
            shape=shape,
            dtype=np.float32,
            photometric="minisblack",
            metadata={METADATA_KEY: saved},
            bigtiff=n_bytes > 2**32 - 2**25,
            **options,
        )
    return path


def _checked_pages(batches, n_frames: int, frame_shape: tuple[int, ...]):
    """The float32 pages of ``batches``, checked to make ``n_frames`` frames of one shape."""
    written = 0
    for batch in batches:
        batch = np.asarray(batch, dtype=np.float32)
        batch = batch[None] if batch.ndim == 2 else batch
        if batch.ndim != 3 or batch.shape[1:] != tuple(frame_shape):
            raise ValueError(
                f"a batch of shape {batch.shape} does not hold frames of {tuple(frame_shape)}."
            )
        if written + len(batch) > n_frames:
            raise ValueError(f"the batches hold more than the {n_frames} frames announced.")
        written += len(batch)
        yield from batch
    if written != n_frames:
        raise ValueError(f"the batches hold {written} frames, not the {n_frames} announced.")


def _check_tiff_suffix(path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES:
        raise UnsupportedFormatError(path, "the writer saves TIFF only; use a .tif suffix.")
    return path


def _json_builtin(value):
    """NumPy scalars and arrays and paths as JSON-ready Python values."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
