"""Readers and writers for pCLE recordings and fibre layouts.

* :func:`read_sequence` opens Cellvizio ``.mkt`` files, video exports, TIFF stacks, folders
  of PNG/TIFF frames and (with a background) raw fibre-bundle camera frames, lazily.
* :func:`read_layout` / :func:`write_layout` handle fibre layouts (``.csv``, ``.npy``,
  ``.npz``).
* :func:`write_image` saves a frame or stack as float32 TIFF with our metadata.

Every bad file raises a :class:`PclesrFileError` subclass (an ``OSError``) whose message names
the file and the problem; bad layout values raise :class:`LayoutFileError`, which is also a
``ValueError``. All writes are atomic.
"""

from napari_pclesr.io.errors import (
    CorruptFileError,
    DamagedFileWarning,
    EmptyFileError,
    FrameSizeError,
    InconsistentFramesError,
    LayoutFileError,
    MktFormatError,
    PclesrFileError,
    UnsupportedFormatError,
)
from napari_pclesr.io.fov import FieldOfView, estimate_fov
from napari_pclesr.io.layout import read_layout, write_layout
from napari_pclesr.io.lazy import LazyFrames
from napari_pclesr.io.mkt import read_mkt, write_mkt
from napari_pclesr.io.raw import RawBundleReconstructor, find_background, looks_like_raw_bundle
from napari_pclesr.io.sequence import detect_format, read_sequence
from napari_pclesr.io.tiff import write_image

__all__ = [
    "CorruptFileError",
    "DamagedFileWarning",
    "EmptyFileError",
    "FieldOfView",
    "FrameSizeError",
    "InconsistentFramesError",
    "LayoutFileError",
    "LazyFrames",
    "MktFormatError",
    "PclesrFileError",
    "RawBundleReconstructor",
    "UnsupportedFormatError",
    "detect_format",
    "estimate_fov",
    "find_background",
    "looks_like_raw_bundle",
    "read_layout",
    "read_mkt",
    "read_sequence",
    "write_image",
    "write_layout",
    "write_mkt",
]
