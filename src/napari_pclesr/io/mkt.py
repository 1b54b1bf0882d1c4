"""Cellvizio ``.mkt`` recordings: a lazy, memory-mapped reader and a small writer.

The layout (reverse-engineered; there is no official specification):

* The file is a series of chunks. A chunk is a 16-byte header, a payload and a 16-byte
  trailer. The header starts with ``b"\\n<CSTA"``; its bytes 8–9 hold the chunk type
  (big-endian uint16) and bytes 10–13 the payload size (big-endian uint32). The trailer
  starts with ``b"<CEND"``.
* Type-2 chunks are frames: H×W little-endian int16, row by row, uncompressed. Frames of one
  file have one size, so the pixels of frame k start at ``16 + k·(size + 32)``.
* A type-5 chunk near the end holds an index (a uint32 LE count n, then n entries
  ``(type, offset, size)`` of uint32 LE, each offset pointing at a chunk header) followed by
  ASCII ``key=value`` lines (``width``, ``height``, ``framerate``, ``fovx``, …).
* Older files have no type-5 chunk; the frame shape is then guessed from the frame size:
  width 576, or 512 when ``size / (2·576)`` is not an even number.

Pixel values are kept exactly as stored, as int16; they can be negative. For display, napari
gets contrast limits at the 0.5 and 99.5 percentiles inside the FoV; for processing, convert
with :func:`napari_pclesr._validation.as_grey_float` (no rescaling) and normalise as the
pipeline needs (e.g. per-frame min-max to [0, 1] inside the FoV).
"""

from __future__ import annotations

import mmap
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from napari_pclesr._atomic import atomic_path
from napari_pclesr.io._values import positive_float
from napari_pclesr.io.errors import (
    DamagedFileWarning,
    EmptyFileError,
    FrameSizeError,
    MktFormatError,
)
from napari_pclesr.io.lazy import LazyFrames

MAGIC = b"\n<CSTA"
TRAILER_MAGIC = b"<CEND"
HEADER_BYTES = 16
TRAILER_BYTES = 16
FRAME_CHUNK = 2
INDEX_CHUNK = 5
#: Frame shapes (H, W) seen in files without metadata; other sizes are guessed, then checked.
KNOWN_FRAME_SHAPES = ((580, 576), (578, 576), (576, 576), (512, 512))
#: Tail windows searched for the type-5 chunk, smallest first.
_INDEX_SEARCH_BYTES = (64 * 2**10, 2**20)


def chunk_header(chunk_type: int, payload_bytes: int) -> bytes:
    """Return the 16-byte header of a chunk of ``chunk_type`` with ``payload_bytes`` bytes."""
    return (
        MAGIC
        + b"\0\0"
        + int(chunk_type).to_bytes(2, "big")
        + int(payload_bytes).to_bytes(4, "big")
        + b"\0\0"
    )


CHUNK_TRAILER = TRAILER_MAGIC.ljust(TRAILER_BYTES, b"\0")


def guess_frame_shape(frame_bytes: int, path: str | os.PathLike = "") -> tuple[int, int]:
    """Guess (H, W) of an ``.mkt`` frame from its size in bytes, for files without metadata.

    Parameters
    ----------
    frame_bytes : int
        Payload size of one frame chunk.
    path : str or os.PathLike
        The file, for error messages.

    Returns
    -------
    tuple of int
        (height, width).

    Raises
    ------
    FrameSizeError
        If the size fits neither width 576 nor 512 with a plausible height.
    """
    pixels, odd_byte = divmod(int(frame_bytes), 2)
    rows_at_576, rest = divmod(pixels, 576)
    if not odd_byte and rest == 0 and rows_at_576 % 2 == 0:
        shape = (rows_at_576, 576)
    else:
        shape = (pixels // 512, 512) if pixels % 512 == 0 and not odd_byte else (0, 0)
    height, width = shape
    if odd_byte or width == 0 or not width // 2 <= height <= 2 * width:
        known = ", ".join(f"{w}×{h}" for h, w in KNOWN_FRAME_SHAPES)
        raise FrameSizeError(
            path,
            f"a frame of {frame_bytes} bytes fits no known .mkt frame width (576 or 512 "
            f"int16 pixels; known sizes W×H: {known}) and the file has no width/height "
            "metadata, so it cannot be decoded.",
        )
    return shape


def read_mkt(path: str | os.PathLike) -> tuple[np.ndarray | LazyFrames, dict]:
    """Open a Cellvizio ``.mkt`` recording without reading its frames.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.mkt`` file.

    Returns
    -------
    frames : numpy.ndarray or LazyFrames
        (T, H, W) int16, memory-mapped: a read-only ``ndarray`` view of the file when the frames
        lie at a fixed stride (always, in files seen so far), else a :class:`LazyFrames`.
    meta : dict
        ``frame_rate``, ``pixel_size_um`` (``fovx / width`` when both are known), ``format``
        (``"mkt"``), ``raw`` (every ``key=value`` pair of the type-5 chunk, as strings, empty
        for old files) and ``frame_shape_source`` (``"metadata"`` or ``"guessed"``). The FoV is
        added by :func:`napari_pclesr.io.read_sequence`.

    Raises
    ------
    EmptyFileError, MktFormatError, FrameSizeError
        For a zero-byte file, a file that breaks the chunk layout or holds no complete frame,
        and a frame size that fits no known width.

    Warns
    -----
    DamagedFileWarning
        When the file ends inside a frame (or inside other data after the frames); the
        complete frames are opened.
    """
    path = Path(path)
    file_bytes = path.stat().st_size
    if file_bytes == 0:
        raise EmptyFileError(path, "the file is empty (0 bytes); it holds no .mkt recording.")
    with open(path, "rb") as handle:
        first = handle.read(HEADER_BYTES)
        if not first.startswith(MAGIC):
            raise MktFormatError(
                path,
                f"wrong magic {first[: len(MAGIC)]!r} at the start (expected {MAGIC!r}); "
                "this is not a Cellvizio .mkt file, or its start is damaged.",
            )
        buffer = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    index = _read_index(buffer)
    frame_chunks = None
    if index is not None:
        frame_chunks = _frames_from_index(buffer, index[0], path)
    if frame_chunks is None:
        frame_chunks = _scan_frames(buffer, path)
    raw = index[1] if index is not None else {}
    offsets, frame_bytes = frame_chunks
    if offsets.size == 0:
        raise MktFormatError(path, "the file holds no complete frame (no type-2 chunk).")
    shape, source = _frame_shape(raw, frame_bytes, path)
    frames = _map_frames(buffer, offsets + HEADER_BYTES, shape)
    meta = {
        "frame_rate": positive_float(raw.get("framerate")),
        "pixel_size_um": None,
        "format": "mkt",
        "raw": raw,
        "frame_shape_source": source,
    }
    fov_x = positive_float(raw.get("fovx"))
    if fov_x is not None:
        meta["pixel_size_um"] = fov_x / shape[1]
    return frames, meta


def _header_at(buffer, offset: int) -> tuple[int, int] | None:
    """(type, payload size) of the chunk header at ``offset``, or None if there is none."""
    header = buffer[offset : offset + HEADER_BYTES]
    if len(header) < HEADER_BYTES or not header.startswith(MAGIC):
        return None
    return int.from_bytes(header[8:10], "big"), int.from_bytes(header[10:14], "big")


def _read_index(buffer) -> tuple[np.ndarray, dict[str, str]] | None:
    """Find the last type-5 chunk near the end; return its index entries and metadata."""
    file_bytes = len(buffer)
    searched_from = file_bytes
    for window in _INDEX_SEARCH_BYTES:
        start = max(0, file_bytes - window)
        position = buffer.rfind(MAGIC, start, searched_from + len(MAGIC) - 1)
        while position >= 0:
            header = _header_at(buffer, position)
            if header is not None and header[0] == INDEX_CHUNK:
                payload_start = position + HEADER_BYTES
                payload_end = payload_start + header[1]
                if payload_end <= file_bytes:
                    return _parse_index(buffer[payload_start:payload_end])
            position = buffer.rfind(MAGIC, start, position + len(MAGIC) - 1)
        if start == 0:
            break
        searched_from = start
    return None


def _parse_index(payload: bytes) -> tuple[np.ndarray, dict[str, str]]:
    count = int.from_bytes(payload[:4], "little") if len(payload) >= 4 else 0
    entries_end = 4 + 12 * count
    if len(payload) < 4 or entries_end > len(payload):
        # No usable index: treat the whole payload as metadata text.
        entries, text = np.zeros((0, 3), np.int64), payload
    else:
        entries = np.frombuffer(payload, "<u4", 3 * count, 4).reshape(count, 3).astype(np.int64)
        text = payload[entries_end:]
    metadata = {}
    for line in text.replace(b"\0", b"\n").replace(b"\r", b"\n").split(b"\n"):
        key, equals, value = line.decode("latin-1").partition("=")
        if equals and key.strip():
            metadata[key.strip()] = value.strip()
    return entries, metadata


def _frames_from_index(buffer, entries: np.ndarray, path: Path):
    """Frame offsets from the index, or None (with a warning) if it disagrees with the file."""
    frames = entries[entries[:, 0] == FRAME_CHUNK]
    if frames.size == 0:
        return None
    offsets, sizes = frames[:, 1], frames[:, 2]
    problem = None
    if np.any(sizes != sizes[0]) or sizes[0] == 0:
        problem = "its frame sizes differ"
    elif np.any(offsets + HEADER_BYTES + sizes[0] > len(buffer)):
        problem = "it points past the end of the file"
    else:
        for offset in (offsets[0], offsets[-1], offsets[len(offsets) // 2]):
            if _header_at(buffer, int(offset)) != (FRAME_CHUNK, int(sizes[0])):
                problem = f"no frame chunk header at offset {int(offset)}"
                break
    if problem is not None:
        warnings.warn(
            f"{path}: the type-5 index is inconsistent ({problem}); scanning the chunks instead.",
            DamagedFileWarning,
            stacklevel=4,
        )
        return None
    return offsets, int(sizes[0])


def _scan_frames(buffer, path: Path) -> tuple[np.ndarray, int]:
    """Walk the chunks from the start; return frame offsets and the frame payload size."""
    file_bytes = len(buffer)
    offsets: list[int] = []
    frame_bytes = None
    position = 0
    while position < file_bytes:
        header = _header_at(buffer, position)
        if header is None:
            _warn_tail(path, position, file_bytes, "is not a chunk header")
            break
        chunk_type, payload_bytes = header
        payload_end = position + HEADER_BYTES + payload_bytes
        if payload_end > file_bytes:
            what = f"frame {len(offsets)}" if chunk_type == FRAME_CHUNK else "a chunk"
            _warn_tail(path, position, file_bytes, f"holds a truncated {what}")
            break
        trailer = buffer[payload_end : payload_end + TRAILER_BYTES]
        if not TRAILER_MAGIC.startswith(trailer[: len(TRAILER_MAGIC)]):
            _warn_tail(path, payload_end, file_bytes, "should be a chunk trailer but is not")
            trailer = b""
        if chunk_type == FRAME_CHUNK:
            if frame_bytes is None:
                frame_bytes = payload_bytes
            elif payload_bytes != frame_bytes:
                raise MktFormatError(
                    path,
                    f"frame {len(offsets)} at byte {position} has {payload_bytes} bytes but "
                    f"frame 0 has {frame_bytes}; frames of one recording must share one size.",
                )
            offsets.append(position)
        if len(trailer) < TRAILER_BYTES:
            break
        position = payload_end + TRAILER_BYTES
    return np.asarray(offsets, np.int64), frame_bytes or 0


def _warn_tail(path: Path, position: int, file_bytes: int, what: str) -> None:
    warnings.warn(
        f"{path}: the data from byte {position} on ({file_bytes - position} bytes) {what}; "
        "the file looks truncated or damaged. The complete frames before it were opened.",
        DamagedFileWarning,
        stacklevel=4,
    )


def _frame_shape(raw: Mapping[str, str], frame_bytes: int, path: Path):
    try:
        width, height = int(raw["width"]), int(raw["height"])
    except (KeyError, ValueError):
        return guess_frame_shape(frame_bytes, path), "guessed"
    if width > 0 and height > 0 and 2 * width * height == frame_bytes:
        return (height, width), "metadata"
    warnings.warn(
        f"{path}: metadata width={width}, height={height} does not match frames of "
        f"{frame_bytes} bytes; guessing the shape from the frame size.",
        DamagedFileWarning,
        stacklevel=3,
    )
    return guess_frame_shape(frame_bytes, path), "guessed"


def _map_frames(buffer, pixel_offsets: np.ndarray, shape: tuple[int, int]):
    """A (T, H, W) int16 view of the memory map, strided when the frames are evenly spaced."""
    height, width = shape
    dtype = np.dtype("<i2")
    steps = np.diff(pixel_offsets)
    if steps.size == 0 or np.all(steps == steps[0]):
        stride = int(steps[0]) if steps.size else height * width * dtype.itemsize
        frames = np.ndarray(
            (pixel_offsets.size, height, width),
            dtype,
            buffer=buffer,
            offset=int(pixel_offsets[0]),
            strides=(stride, width * dtype.itemsize, dtype.itemsize),
        )
        frames.flags.writeable = False
        return frames

    def load(indices):
        return np.stack(
            [
                np.frombuffer(buffer, dtype, height * width, int(pixel_offsets[i])).reshape(shape)
                for i in indices
            ]
        )

    return LazyFrames(load, pixel_offsets.size, shape, dtype)


def write_mkt(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    *,
    frame_rate: float | None = None,
    metadata: Mapping[str, object] | None = None,
    with_index: bool = True,
) -> Path:
    """Write frames as a Cellvizio-style ``.mkt`` file (for tests, fixtures and benchmarks).

    Parameters
    ----------
    path : str or os.PathLike
        Target file; written atomically.
    frames : iterable of numpy.ndarray
        (T, H, W) array or any iterable of (H, W) frames of one shape. Values are stored as
        int16 little-endian; they must fit the int16 range.
    frame_rate : float, optional
        Stored as the ``framerate`` key.
    metadata : mapping, optional
        More ``key=value`` pairs for the type-5 chunk (e.g. ``fovx``).
    with_index : bool
        Write the type-5 index and metadata chunk. Without it the file looks like an old
        recording whose shape readers must guess.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    entries = []
    shape = None
    with atomic_path(path) as temporary, open(temporary, "wb") as out:
        for frame in frames:
            frame = np.asarray(frame)
            if frame.ndim != 2 or (shape is not None and frame.shape != shape):
                raise ValueError(
                    f"every .mkt frame must be 2-D with one shape; got {frame.shape} after {shape}."
                )
            if frame.size and (frame.min() < -32768 or frame.max() > 32767):
                raise ValueError("frame values must fit int16 (-32768..32767).")
            shape = frame.shape
            payload = frame.astype("<i2").tobytes()
            entries.append((FRAME_CHUNK, out.tell(), len(payload)))
            out.write(chunk_header(FRAME_CHUNK, len(payload)) + payload + CHUNK_TRAILER)
        if shape is None:
            raise ValueError("write_mkt needs at least one frame.")
        if with_index:
            keys = {"width": shape[1], "height": shape[0]}
            if frame_rate is not None:
                keys["framerate"] = frame_rate
            keys.update(metadata or {})
            text = "".join(f"{key}={value}\n" for key, value in keys.items()).encode("ascii")
            index = np.asarray(entries, "<u4").tobytes()
            payload = len(entries).to_bytes(4, "little") + index + text
            out.write(chunk_header(INDEX_CHUNK, len(payload)) + payload + CHUNK_TRAILER)
    return Path(path)
