"""A folder of PNG/TIFF frames, read lazily in natural sort order (frame2 before frame10)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

from napari_pclesr.io._grey import to_grey
from napari_pclesr.io.errors import (
    CorruptFileError,
    EmptyFileError,
    InconsistentFramesError,
    UnsupportedFormatError,
)
from napari_pclesr.io.lazy import LazyFrames
from napari_pclesr.io.tiff import frame_layout, read_tiff, tifffile_log

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
        Folder whose PNG/TIFF files are the frames, in natural sort order. A multi-page TIFF
        contributes all its frames, in page order.

    Returns
    -------
    frames : LazyFrames
        (T, H, W); colour frames become grey float32 (BT.709 luma, values unscaled).
    meta : dict
        ``format`` (``"frame-folder"``), ``raw`` (``{"files": [...names...],
        "frames_per_file": [...]}``), ``frame_rate`` and ``pixel_size_um`` None.

    Raises
    ------
    UnsupportedFormatError
        If the folder holds no PNG/TIFF file, or a TIFF that is not a stack of frames.
    InconsistentFramesError
        If the frames differ in size or in type (e.g. 8-bit and float files, whose values are
        on different scales); the message names the first odd file.
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
    first = infos[0]
    for file, info in zip(files, infos, strict=True):
        if info.shape != first.shape:
            raise InconsistentFramesError(
                folder,
                f"frames differ in size: {files[0].name} is {first.shape[1]}×{first.shape[0]} "
                f"(W×H) but {file.name} is {info.shape[1]}×{info.shape[0]}; all frames of a "
                "sequence must share one size.",
            )
        if info.dtype != first.dtype:
            raise InconsistentFramesError(
                folder,
                f"frames differ in type: {files[0].name} is {first.dtype} but {file.name} is "
                f"{info.dtype}, so their values are on different scales; convert them to one "
                "type first.",
            )
    colour = any(info.colour for info in infos)
    dtype = np.float32 if colour else first.dtype
    counts = np.array([info.n_frames for info in infos])
    # File k holds the frames firsts[k] .. firsts[k + 1] - 1.
    firsts = np.concatenate([[0], np.cumsum(counts)])

    def load(indices):
        indices = np.asarray(indices)
        owners = np.searchsorted(firsts, indices, side="right") - 1
        parts = []
        for owner in np.unique(owners):
            pages = indices[owners == owner] - firsts[owner]
            parts.append(_read_frames(files[owner], pages, first.shape).astype(dtype))
        return np.concatenate(parts)

    frames = LazyFrames(load, int(firsts[-1]), first.shape, dtype)
    meta = {
        "frame_rate": None,
        "pixel_size_um": None,
        "format": "frame-folder",
        "raw": {"files": [file.name for file in files], "frames_per_file": counts.tolist()},
        "converted_to_grey": colour,
    }
    return frames, meta


class _FileInfo(NamedTuple):
    shape: tuple[int, int]
    dtype: np.dtype
    colour: bool
    n_frames: int


def _frame_info(file: Path) -> _FileInfo:
    """Frame shape (H, W), stored type, colour and frame count of a file, from its header."""
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
        return _FileInfo((height, width), dtype, _PNG_CHANNELS.get(colour_type, 1) > 1, 1)
    import tifffile

    try:
        with tifffile_log() as log, tifffile.TiffFile(file) as tif:
            series = tif.series[0]
            layout = frame_layout(file, series)
            dtype = np.dtype(series.dtype)
    except UnsupportedFormatError:
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        cause = log[-1] if log else f"{type(exc).__name__}: {exc}"
        raise CorruptFileError(file, f"cannot be read as TIFF ({cause}).") from exc
    return _FileInfo(layout["frame_shape"], dtype, layout["colour"], layout["n_frames"])


def _read_frames(file: Path, pages: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Frames ``pages`` of a file, grey, as (len(pages), H, W)."""
    try:
        if file.suffix.lower() == ".png":
            import imageio.v3 as iio

            stack = to_grey(iio.imread(file))[None]
        else:
            frames, _ = read_tiff(file)
            stack = np.asarray(frames[pages])
    except (EmptyFileError, UnsupportedFormatError, CorruptFileError):
        raise
    except Exception as exc:  # decoders raise many types for damaged files
        raise CorruptFileError(file, f"the frame cannot be decoded ({exc}).") from exc
    if stack.shape[1:] != shape:
        raise InconsistentFramesError(
            file, f"the frame is {stack.shape[1:]} but the folder's frames are {shape}."
        )
    return stack
