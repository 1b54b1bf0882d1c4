"""Reading and writing fibre layouts as ``.csv``, ``.npy`` and ``.npz``."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

from napari_pclesr._atomic import atomic_path

SUFFIXES = (".csv", ".npy", ".npz")
_SHAPE_COMMENT = re.compile(r"#\s*shape\s*=\s*(\d+)\s*,\s*(\d+)")


def read_layout_file(path: Path) -> tuple[np.ndarray, tuple[int, int] | None]:
    """Return ``(positions, shape)`` from a layout file; ``shape`` is None when not stored."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"{path}: unknown fibre-layout format {path.suffix!r}; "
            f"use one of {', '.join(SUFFIXES)}."
        )
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such fibre-layout file.")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty (0 bytes); it holds no fibre layout.")
    reader = {".csv": _read_csv, ".npy": _read_npy, ".npz": _read_npz}[suffix]
    try:
        positions, shape = reader(path)
    except (OSError, ValueError, TypeError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path}: not a readable fibre layout ({exc}).") from None
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 2:
        raise ValueError(
            f"{path}: positions must be an (N, 2) table of row, col; got shape {positions.shape}."
        )
    if not np.all(np.isfinite(positions)):
        rows = np.flatnonzero(~np.isfinite(positions).all(axis=1))
        raise ValueError(
            f"{path}: {len(rows)} fibre positions are NaN or empty (first at entry {rows[0]}); "
            "fix or remove those rows."
        )
    return positions, shape


def write_layout_file(path: Path, positions: np.ndarray, shape: tuple[int, int]) -> None:
    """Write a layout atomically in the format named by ``path``'s suffix."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"{path}: cannot save a fibre layout as {path.suffix!r}; "
            f"use one of {', '.join(SUFFIXES)}."
        )
    with atomic_path(path) as temporary:
        if suffix == ".csv":
            header = f"# shape={shape[0]},{shape[1]}\nrow,col"
            np.savetxt(temporary, positions, fmt="%.17g", delimiter=",", header=header, comments="")
        elif suffix == ".npy":
            np.save(temporary, positions)
        else:
            np.savez(temporary, positions=positions, shape=np.asarray(shape, dtype=np.int64))


def _read_csv(path: Path):
    with open(path, encoding="utf-8") as stream:
        lines = stream.read().splitlines()
    shape = None
    if lines and (match := _SHAPE_COMMENT.match(lines[0].strip())):
        shape = (int(match.group(1)), int(match.group(2)))
    lines = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise ValueError("no header line 'row,col'")
    columns = [name.strip().lower() for name in lines[0].split(",")]
    missing = [name for name in ("row", "col") if name not in columns]
    if missing:
        raise ValueError(
            f"missing column(s) {', '.join(missing)} in header {lines[0]!r}; "
            "the first line must name the columns 'row,col'"
        )
    if len(lines) < 2:
        raise ValueError("the table has no fibre rows")
    table = np.genfromtxt(lines[1:], delimiter=",", dtype=np.float64, ndmin=2)
    if table.shape[1] != len(columns):
        raise ValueError(f"rows have {table.shape[1]} values but the header names {len(columns)}")
    return table[:, [columns.index("row"), columns.index("col")]], shape


def _read_npy(path: Path):
    return np.load(path, allow_pickle=False), None


def _read_npz(path: Path):
    with np.load(path, allow_pickle=False) as archive:
        if "positions" not in archive:
            raise ValueError(f"no 'positions' array (found {', '.join(archive.files) or 'none'})")
        return archive["positions"], _grid_shape(archive["shape"]) if "shape" in archive else None


def _grid_shape(stored: np.ndarray) -> tuple[int, int]:
    """The (H, W) stored in a layout file, or ``ValueError`` if it is not two whole numbers."""
    whole = stored.dtype.kind in "iu" or (
        stored.dtype.kind == "f" and np.all(np.isfinite(stored)) and np.all(stored % 1 == 0)
    )
    if stored.shape != (2,) or not whole:
        raise ValueError(
            f"its 'shape' must be the grid's two sides (H, W), got {stored.tolist()!r}; save "
            "the layout again with FibreLayout.save"
        )
    return int(stored[0]), int(stored[1])
