"""One entry point for every recording format: :func:`read_sequence`."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np

from napari_pclesr.io.errors import UnsupportedFormatError
from napari_pclesr.io.folder import list_frame_files, read_folder
from napari_pclesr.io.fov import FieldOfView, estimate_fov
from napari_pclesr.io.layout import LAYOUT_SUFFIXES
from napari_pclesr.io.mkt import read_mkt
from napari_pclesr.io.tiff import TIFF_SUFFIXES, read_tiff
from napari_pclesr.io.video import VIDEO_SUFFIXES, VideoFrames, read_video

#: Frames spread over a recording that the FoV is estimated from.
FOV_SAMPLE_FRAMES = 8
#: For videos, the first frames are used instead (seeking costs more than decoding in order).
FOV_SAMPLE_VIDEO_FRAMES = 24

_READERS = {"mkt": read_mkt, "video": read_video, "tiff": read_tiff, "folder": read_folder}


def detect_format(path: str | os.PathLike) -> str | None:
    """Name the format of ``path`` from its suffix (or folder content), without reading it.

    Returns
    -------
    str or None
        ``"mkt"``, ``"video"``, ``"tiff"``, ``"folder"`` (a folder holding PNG/TIFF frames),
        ``"layout"`` (``.csv``/``.npy``/``.npz``) or None for anything else.
    """
    path = Path(path)
    if path.is_dir():
        try:
            return "folder" if list_frame_files(path) else None
        except OSError:
            return None
    suffix = path.suffix.lower()
    if suffix == ".mkt":
        return "mkt"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in TIFF_SUFFIXES:
        return "tiff"
    if suffix in LAYOUT_SUFFIXES:
        return "layout"
    return None


def read_sequence(path: str | os.PathLike, *, background=None) -> tuple[object, dict]:
    """Open a pCLE recording as (T, H, W) frames and its metadata.

    Parameters
    ----------
    path : str or os.PathLike
        A Cellvizio ``.mkt`` file, a video export (``.mpeg``, ``.mpg``, ``.mp4``, ``.avi``), a
        TIFF image or stack (OME-TIFF and 16-bit included) or a folder of PNG/TIFF frames.
    background : str, os.PathLike or array_like, optional
        Flat-field frame of a fibre bundle (a file or an (H, W) array). When given, the frames
        are raw bundle camera frames: the cores are detected in the background and every
        frame is reconstructed through them (see :mod:`napari_pclesr.io.raw`), lazily.

    Returns
    -------
    frames : array-like
        (T, H, W), a single image has T = 1. Lazy for files: a read-only memory map
        (``.mkt``, uncompressed TIFF) or a :class:`~napari_pclesr.io.lazy.LazyFrames` (video,
        folders, compressed TIFF, reconstructions). Values keep the file's type and scale
        (``.mkt`` int16 with negatives, video uint8, TIFF as stored); use ``np.asarray``
        or slicing to load frames.
    meta : dict
        ``frame_rate`` (frames/s), ``pixel_size_um``, ``format``, ``fov_mask`` (bool (H, W),
        True inside the field of view), ``fov_circle`` (``(row, col, radius)`` or None),
        ``raw`` (the format's own metadata, e.g. every ``.mkt`` key=value pair),
        ``converted_to_grey``, ``path``; and with ``background`` also ``fibre_layout`` (the
        detected :class:`~napari_pclesr.FibreLayout`) and ``reconstructed_from_raw`` (True).
        Unknown values are None.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    napari_pclesr.io.PclesrFileError
        A subclass naming the file and the problem: ``EmptyFileError``,
        ``UnsupportedFormatError``, ``CorruptFileError``, ``MktFormatError``,
        ``FrameSizeError``, ``InconsistentFramesError``.

    Warns
    -----
    DamagedFileWarning
        For a truncated ``.mkt``: its complete frames are opened.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "no such file or folder", os.fspath(path))
    kind = detect_format(path)
    if kind not in _READERS:
        what = "not a format"
        if kind == "layout":
            what = "a fibre-layout file type (open layouts with read_layout), not a format"
        raise UnsupportedFormatError(
            path,
            f"{what} that read_sequence opens (.mkt, .mpeg/.mpg/.mp4/.avi, .tif/.tiff, or a "
            "folder of PNG/TIFF frames).",
        )
    frames, meta = _READERS[kind](path)
    meta = {"converted_to_grey": False, **meta, "path": os.fspath(path)}
    if background is not None:
        frames, meta = _reconstruct(frames, meta, background)
    if "fov_mask" not in meta:
        fov = _field_of_view(frames, meta.get("fov_circle"))
        meta["fov_mask"], meta["fov_circle"] = fov.mask, fov.circle
    return frames, meta


def sample_frames(frames, n_frames: int = FOV_SAMPLE_FRAMES) -> np.ndarray:
    """A few frames spread evenly over a stack (the first ones for a video), as one array."""
    if isinstance(frames, VideoFrames):
        return np.asarray(frames[: min(len(frames), FOV_SAMPLE_VIDEO_FRAMES)])
    indices = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), n_frames)).round())
    return np.stack([np.asarray(frames[int(index)]) for index in indices])


def _field_of_view(frames, circle) -> FieldOfView:
    if circle is not None:
        return FieldOfView.from_circle(frames.shape[-2:], circle)
    return estimate_fov(sample_frames(frames))


def _reconstruct(frames, meta: dict, background) -> tuple[object, dict]:
    from napari_pclesr.io.raw import RawBundleReconstructor

    background_path = None
    if isinstance(background, (str, os.PathLike)):
        background_path = os.fspath(background)
        background_frames, _ = read_sequence(background)
        background = np.asarray(background_frames[0])
    if np.shape(background) != tuple(frames.shape[1:]):
        raise ValueError(
            f"{meta['path']}: the frames are {tuple(frames.shape[1:])} but the background is "
            f"{np.shape(background)}; use a background taken with the same camera settings."
        )
    reconstructor = RawBundleReconstructor(background)
    meta = {
        **meta,
        "fibre_layout": reconstructor.layout,
        "background": background_path,
        "reconstructed_from_raw": True,
        "fov_mask": reconstructor.fov_mask,
        "fov_circle": None,
    }
    return reconstructor.reconstruct_lazily(frames), meta
