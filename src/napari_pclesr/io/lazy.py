"""A read-only (T, H, W) array-like that loads frames on demand.

napari, NumPy and our own code can use it wherever an array is expected: it has ``shape``,
``dtype``, ``ndim``, ``len()``, NumPy-style indexing and ``__array__``. Only the frames that an
index touches are read, and a small cache keeps the most recent ones, so scrubbing through a
long recording in napari costs memory of the order of a few frames.
"""

from __future__ import annotations

import mmap
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from numpy.lib.array_utils import byte_bounds

#: Frames kept in each reader's cache, at most this many bytes in all.
DEFAULT_CACHE_BYTES = 64 * 2**20


class LazyFrames:
    """A stack of frames that are read only when indexed.

    Parameters
    ----------
    load : callable
        ``load(indices)`` takes a sorted, duplicate-free sequence of frame indices and returns
        an array of shape ``(len(indices), H, W)`` and type ``dtype``.
    n_frames : int
        Number of frames T.
    frame_shape : tuple of int
        (H, W).
    dtype : numpy dtype
        Type of the frames that ``load`` returns.
    cache_bytes : int
        Upper bound on the memory used to cache recently read frames.
    """

    def __init__(
        self,
        load: Callable[[Sequence[int]], np.ndarray],
        n_frames: int,
        frame_shape: tuple[int, int],
        dtype,
        *,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ):
        self._load = load
        self.shape = (int(n_frames), int(frame_shape[0]), int(frame_shape[1]))
        self.dtype = np.dtype(dtype)
        frame_bytes = max(1, self.shape[1] * self.shape[2] * self.dtype.itemsize)
        self._cache_frames = max(1, cache_bytes // frame_bytes)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        # napari may slice from a worker thread while the GUI thread reads metadata.
        self._lock = threading.RLock()

    ndim = 3

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} shape={self.shape} dtype={self.dtype}>"

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Return the frames at ``indices`` (any order, repeats allowed) as one array.

        Frames found in the cache are taken before anything is loaded, so a read larger than
        the cache never looks up a frame that its own loading has just evicted. Only the last
        frames of a large read are kept in the cache afterwards.
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and not (indices.min() >= 0 and indices.max() < self.shape[0]):
            bad = indices[(indices < 0) | (indices >= self.shape[0])][0]
            raise IndexError(f"frame index {bad} out of range for {self.shape[0]} frames")
        out = np.empty((indices.size, *self.shape[1:]), self.dtype)
        with self._lock:
            found: dict[int, np.ndarray] = {}
            for index in dict.fromkeys(indices.tolist()):
                frame = self._cache.get(index)
                if frame is not None:
                    self._cache.move_to_end(index)
                    found[index] = frame
            missing = sorted(set(indices.tolist()) - found.keys())
            if missing:
                loaded = np.asarray(self._load(missing))
                expected = (len(missing), *self.shape[1:])
                if loaded.shape != expected:
                    raise ValueError(
                        f"the frame loader returned shape {loaded.shape}, expected {expected}."
                    )
                found.update(zip(missing, loaded, strict=True))
                kept = missing[-self._cache_frames :]
                for index in kept:
                    # A copy, so that the cache does not keep the whole loaded batch alive.
                    self._remember(index, np.array(found[index]))
            for position, index in enumerate(indices.tolist()):
                out[position] = found[index]
        return out

    def _remember(self, index: int, frame: np.ndarray) -> None:
        self._cache[index] = frame
        self._cache.move_to_end(index)
        while len(self._cache) > self._cache_frames:
            self._cache.popitem(last=False)

    def __getitem__(self, key):
        frame_key, rest = _split_key(key)
        if isinstance(frame_key, (int, np.integer)):
            index = int(frame_key)
            if not -self.shape[0] <= index < self.shape[0]:
                raise IndexError(f"frame index {index} out of range for {self.shape[0]} frames")
            return self.read([index % self.shape[0]])[0][rest]
        indices = np.arange(self.shape[0])[frame_key]
        return self.read(indices)[(slice(None), *rest)]

    def __array__(self, dtype=None, copy=None):
        array = self.read(range(self.shape[0]))
        return array if dtype is None else array.astype(dtype, copy=False)

    def __iter__(self) -> Iterator[np.ndarray]:
        for index in range(self.shape[0]):
            yield self[index]

    def iter_batches(self, batch_frames: int = 16) -> Iterator[np.ndarray]:
        """Yield consecutive frames in batches of at most ``batch_frames``, in order."""
        for start in range(0, self.shape[0], batch_frames):
            yield self.read(range(start, min(start + batch_frames, self.shape[0])))


def _split_key(key) -> tuple[object, tuple]:
    """Split a NumPy index into the part on the frame axis and the part on (H, W)."""
    if not isinstance(key, tuple):
        key = (key,)
    if any(part is Ellipsis for part in key):
        position = next(i for i, part in enumerate(key) if part is Ellipsis)
        fill = 3 - (len(key) - 1)
        key = key[:position] + (slice(None),) * fill + key[position + 1 :]
    if not key:
        return slice(None), ()
    if len(key) > 3:
        raise IndexError(f"too many indices for a 3-D stack: {key!r}")
    return key[0], tuple(key[1:])


def iter_frame_batches(frames, batch_frames: int = 16) -> Iterator[np.ndarray]:
    """Yield consecutive batches of a (T, H, W) array or array-like, reading each once.

    Batches of a memory-mapped stack are copies, and the pages they were read from are handed
    back to the operating system (:func:`release_pages`), so that going through a long
    recording keeps the memory of a batch, not of the file.
    """
    if isinstance(frames, LazyFrames):
        yield from frames.iter_batches(batch_frames)
        return
    for start in range(0, len(frames), batch_frames):
        batch = frames[start : start + batch_frames]
        if memory_map_of(batch) is None:
            yield np.asarray(batch)
        else:
            copy = np.array(batch)
            release_pages(batch)
            yield copy


def select_frames(frames, indices: range):
    """The frames at ``indices`` of a (T, H, W) stack, still lazy: a view of an array or memory
    map, or a :class:`LazyFrames` that reads through ``frames``."""
    if not isinstance(frames, LazyFrames):
        # A range that runs down to frame 0 stops at -1, which a slice reads as the last frame.
        stop = indices.stop if indices.stop >= 0 else None
        return frames[indices.start : stop : indices.step]
    # The wrapper caches one frame; the frames' own cache already keeps recent ones.
    return LazyFrames(
        lambda wanted: frames.read([indices[i] for i in wanted]),
        len(indices),
        frames.shape[1:],
        frames.dtype,
        cache_bytes=0,
    )


def memory_map_of(array) -> mmap.mmap | None:
    """The ``mmap`` that ``array`` is a view of (through any chain of views), or None."""
    while isinstance(array, np.ndarray):
        array = array.base
    if isinstance(array, memoryview):
        array = array.obj
    return array if isinstance(array, mmap.mmap) else None


def release_pages(array) -> None:
    """Drop the memory-mapped file pages behind ``array`` from this process's memory.

    The data stays in the file (and usually in the operating system's file cache); a later
    access reads it again. Reading a memory-mapped recording from start to end would
    otherwise count every page of the file in the process's resident memory. Does nothing for
    arrays that are not memory-mapped, or where ``madvise`` is unavailable (Windows).
    """
    buffer = memory_map_of(array)
    if buffer is None or not hasattr(buffer, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    base = np.frombuffer(buffer, np.uint8).__array_interface__["data"][0]
    low, high = byte_bounds(array)
    start = (low - base) // mmap.PAGESIZE * mmap.PAGESIZE
    end = min(len(buffer), -(-(high - base) // mmap.PAGESIZE) * mmap.PAGESIZE)
    if end > start:
        buffer.madvise(mmap.MADV_DONTNEED, start, end - start)
