"""Fibre-layout files (``.csv``, ``.npy``, ``.npz``): thin wrappers over :class:`FibreLayout`.

The parsing and writing live in :mod:`napari_pclesr.fibre`; this module gives them the error
types of :mod:`napari_pclesr.io`.
"""

from __future__ import annotations

import os
from pathlib import Path

from napari_pclesr.fibre import FibreLayout
from napari_pclesr.io.errors import EmptyFileError, LayoutFileError, UnsupportedFormatError

LAYOUT_SUFFIXES = (".csv", ".npy", ".npz")


def read_layout(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> FibreLayout:
    """Read a fibre layout from ``.csv``, ``.npy`` or ``.npz``.

    Parameters
    ----------
    path : str or os.PathLike
        The layout file. CSV: header ``row,col``, optionally preceded by ``# shape=H,W``.
        NPZ: arrays ``positions`` (N, 2) and ``shape``. NPY: the (N, 2) positions only.
    shape : tuple of int, optional
        (H, W) of the grid; overrides the stored shape. Without either, the smallest grid
        holding every fibre is used.

    Returns
    -------
    FibreLayout

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    EmptyFileError
        For a zero-byte file.
    UnsupportedFormatError
        For another suffix.
    LayoutFileError
        (also a ``ValueError``) for NaN positions, missing ``row``/``col`` columns, a wrong
        table shape or fibres outside the grid; the message names the file and the problem.
    """
    path = Path(path)
    if path.suffix.lower() not in LAYOUT_SUFFIXES:
        raise UnsupportedFormatError(
            path, f"not a fibre-layout file; use one of {', '.join(LAYOUT_SUFFIXES)}."
        )
    if path.is_file() and path.stat().st_size == 0:
        raise EmptyFileError(path, "the file is empty (0 bytes); it holds no fibre layout.")
    try:
        return FibreLayout.from_file(path, shape=shape)
    except FileNotFoundError:
        raise
    except ValueError as exc:
        problem = str(exc).removeprefix(f"{path}: ")
        raise LayoutFileError(path, problem) from exc


def write_layout(path: str | os.PathLike, layout: FibreLayout) -> Path:
    """Save a fibre layout atomically as ``.csv`` or ``.npz`` (both keep the grid shape).

    ``.npy`` is also accepted but keeps only the positions.

    Raises
    ------
    UnsupportedFormatError
        For another suffix.
    """
    path = Path(path)
    if path.suffix.lower() not in LAYOUT_SUFFIXES:
        raise UnsupportedFormatError(
            path, f"a fibre layout is saved as {', '.join(LAYOUT_SUFFIXES)}; change the suffix."
        )
    return layout.save(path)
