"""A folder of PNG/TIFF frames, read lazily in natural sort order (frame2 before frame10)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from napari_pclesr.io._grey import to_grey
from napari_pclesr.io.errors import (
    CorruptFileError,
    EmptyFileError,
    InconsistentFramesError,
    UnsupportedFormatError,
)
from napari_pclesr.io.lazy import LazyFrames

FRAME_SUFFIXES = (".png", ".tif", ".tiff")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type -> number of channels; bit depth 16 -> uint16, else uint8.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers by value: ``f2.png`` before ``f10.png``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name.lower())]


def list_frame_files(folder: str | os.PathLike) -> list[Path]:
    """The PNG/TIFF files directly inside ``folder``, hidden files excluded, naturally sorted."""
    folder = Path(folder)
    files = [
        entry
        for entry in folder.iterdir()
        if entry.is_file()
        and entry.suffix.lower() in FRAME_SUFFIXES
        and not entry.name.startswith(".")
    ]
    return sorted(files, key=lambda entry: natural_key(entry.name))


def read_folder(folder: str | os.PathLike) -> tuple[LazyFrames, dict]:
    """Open a folder of PNG/TIFF frames as one lazy (T, H, W) stack.

    Parameters
    ----------
    folder : str or os.PathLike
        Folder whose PNG/TIFF files are the frames, in natural sort order.

    Returns
    -------
    frames : LazyFrames
        (T, H, W); colour frames become grey float32 (BT.709 luma, values unscaled).
    meta : dict
        ``format`` (``"frame-folder"``), ``raw`` (``{"files": [...names...]}``),
        ``frame_rate`` and ``pixel_size_um`` None.

    Raises
    ------
    UnsupportedFormatError
        If the folder holds no PNG/TIFF file.
    InconsistentFramesError
        If the frames differ in size; the message names the first odd file.
    EmptyFileError, CorruptFileError
        For a frame file that is empty or unreadable.
    """
    folder = Path(folder)
    files = list_frame_files(folder)
    if not files:
        raise UnsupportedFormatError(
            folder, f"the folder holds no frame files ({', '.join(FRAME_SUFFIXES)})."
        )
    infos = [_frame_info(file) for file in files]
    first_shape = infos[0][0]
    for file, (shape, _, _) in zip(files, infos, strict=True):
        if shape != first_shape:
            raise InconsistentFramesError(
                folder,
                f"frames differ in size: {files[0].name} is {first_shape[1]}×{first_shape[0]} "
                f"(W×H) but {file.name} is {shape[1]}×{shape[0]}; all frames of a sequence "
                "must share one size.",
            )
    colour = any(channels > 1 for _, _, channels in infos)
    dtype = np.float32 if colour else np.result_type(*(dtype for _, dtype, _ in infos))

    def load(indices):
        return np.stack([_read_frame(files[i], first_shape).astype(dtype) for i in indices])

    frames = LazyFrames(load, len(files), first_shape, dtype)
    meta = {
        "frame_rate": None,
        "pixel_size_um": None,
        "format": "frame-folder",
        "raw": {"files": [file.name for file in files]},
        "converted_to_grey": colour,
    }
    return frames, meta


def _frame_info(file: Path) -> tuple[tuple[int, int], np.dtype, int]:
    """(H, W), dtype and channel count of a frame file, from its header only."""
    if file.stat().st_size == 0:
        raise EmptyFileError(file, "the frame file is empty (0 bytes).")
    if file.suffix.lower() == ".png":
        with open(file, "rb") as handle:
            header = handle.read(33)
        if len(header) < 33 or not header.startswith(_PNG_SIGNATURE) or header[12:16] != b"IHDR":
            raise CorruptFileError(file, "is not a valid PNG (bad signature or header).")
        width, height = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
        bit_depth, colour_type = header[24], header[25]
        dtype = np.dtype(np.uint16 if bit_depth == 16 else np.uint8)
        return (height, width), dtype, _PNG_CHANNELS.get(colour_type, 1)
    import tifffile

    try:
        with tifffile.TiffFile(file) as tif:
            page = tif.pages[0]
            shape, dtype = page.shape, page.dtype
            channels = page.samplesperpixel
    except Exception as exc:  # tifffile raises many types for damaged files
        raise CorruptFileError(file, f"cannot be read as TIFF ({exc}).") from exc
    if channels > 1 and len(shape) == 3 and shape[0] == channels:  # planar samples
        shape = shape[1:]
    return (int(shape[0]), int(shape[1])), np.dtype(dtype), int(channels)


def _read_frame(file: Path, shape: tuple[int, int]) -> np.ndarray:
    try:
        if file.suffix.lower() == ".png":
            import imageio.v3 as iio

            frame = iio.imread(file)
        else:
            import tifffile

            frame = tifffile.imread(file, key=0)
            if frame.ndim == 3 and frame.shape[0] in (2, 3, 4) and frame.shape[1:] == shape:
                frame = np.moveaxis(frame, 0, -1)  # planar samples to interleaved
    except Exception as exc:  # decoders raise many types for damaged files
        raise CorruptFileError(file, f"the frame cannot be decoded ({exc}).") from exc
    frame = to_grey(frame)
    if frame.shape != shape:
        raise InconsistentFramesError(
            file, f"the frame is {frame.shape} but the folder's frames are {shape}."
        )
    return frame
