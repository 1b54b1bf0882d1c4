"""LazyFrames: reads in any order and size, with any cache size, equal a plain array."""

from __future__ import annotations

import mmap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_pclesr.io.lazy import LazyFrames, iter_frame_batches, release_pages, select_frames

N_FRAMES, SHAPE = 12, (3, 4)
STACK = np.arange(N_FRAMES * SHAPE[0] * SHAPE[1], dtype=np.int16).reshape(N_FRAMES, *SHAPE)
FRAME_BYTES = SHAPE[0] * SHAPE[1] * STACK.itemsize


class CountingLoader:
    """Loads frames of STACK and records every call, to check what LazyFrames asks for."""

    def __init__(self):
        self.calls: list[list[int]] = []

    def __call__(self, indices):
        indices = list(indices)
        self.calls.append(indices)
        return STACK[indices]


def lazy_stack(cache_frames: int) -> tuple[LazyFrames, CountingLoader]:
    loader = CountingLoader()
    frames = LazyFrames(
        loader, N_FRAMES, SHAPE, STACK.dtype, cache_bytes=cache_frames * FRAME_BYTES
    )
    return frames, loader


reads = st.lists(st.integers(0, N_FRAMES - 1), min_size=0, max_size=3 * N_FRAMES)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(cache_frames=st.integers(1, N_FRAMES + 2), sequence=st.lists(reads, min_size=1, max_size=6))
def test_any_reads_with_any_cache_equal_a_plain_array(cache_frames, sequence):
    frames, loader = lazy_stack(cache_frames)
    for indices in sequence:
        np.testing.assert_array_equal(frames.read(indices), STACK[indices])
    for call in loader.calls:
        assert call == sorted(set(call)), "the loader gets sorted, duplicate-free indices"
    assert len(frames._cache) <= cache_frames


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    cache_frames=st.integers(1, 4),
    start=st.integers(-N_FRAMES, N_FRAMES),
    stop=st.integers(-N_FRAMES, N_FRAMES),
    step=st.sampled_from([1, 2, 3, -1, -2]),
)
def test_slices_after_a_partial_read_equal_numpy(cache_frames, start, stop, step):
    frames, _ = lazy_stack(cache_frames)
    frames.read(range(min(N_FRAMES, cache_frames + 1)))  # fill the cache, as a FoV estimate does
    np.testing.assert_array_equal(frames[start:stop:step], STACK[start:stop:step])
    np.testing.assert_array_equal(
        frames[start % N_FRAMES, 1:, ::2], STACK[start % N_FRAMES, 1:, ::2]
    )


def test_full_read_larger_than_the_cache_after_a_partial_read():
    """The pattern that failed on a real MPEG: a FoV sample, then the whole recording."""
    frames, loader = lazy_stack(cache_frames=4)
    frames.read(range(3))
    np.testing.assert_array_equal(np.asarray(frames), STACK)
    assert loader.calls[1] == list(range(3, N_FRAMES)), "cached frames are not loaded again"
    assert list(frames._cache) == list(range(N_FRAMES - 4, N_FRAMES))


def test_cached_frames_do_not_keep_the_loaded_batch_alive():
    frames, _ = lazy_stack(cache_frames=2)
    frames.read(range(N_FRAMES))
    for frame in frames._cache.values():
        assert frame.base is None


def test_out_of_range_and_bad_loader_are_clear_errors():
    frames, _ = lazy_stack(cache_frames=2)
    with pytest.raises(IndexError, match="frame index 12 out of range for 12 frames"):
        frames.read([0, 12])
    with pytest.raises(IndexError, match="out of range"):
        frames[-13]
    broken = LazyFrames(lambda indices: STACK[:1], N_FRAMES, SHAPE, STACK.dtype)
    with pytest.raises(ValueError, match=r"returned shape \(1, 3, 4\), expected \(2, 3, 4\)"):
        broken.read([0, 1])


def test_batches_of_a_memory_map_are_copies_and_release_their_pages(tmp_path):
    path = tmp_path / "frames.bin"
    big = np.arange(6 * 64 * 64, dtype=np.float32).reshape(6, 64, 64)  # 16 KiB per frame
    big.tofile(path)
    mapped = np.memmap(path, np.float32, "r", shape=big.shape)
    batches = list(iter_frame_batches(mapped, 4))
    assert [len(batch) for batch in batches] == [4, 2]
    np.testing.assert_array_equal(np.concatenate(batches), big)
    assert all(not isinstance(batch, np.memmap) and batch.base is None for batch in batches)
    # Released pages are read again from the file on the next access, unchanged.
    release_pages(mapped[1:3])
    np.testing.assert_array_equal(mapped, big)
    release_pages(big)  # not memory-mapped: nothing to do
    with open(path, "rb") as handle:
        buffer = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    view = np.ndarray(big.shape, np.float32, buffer=buffer)
    release_pages(view[2:])
    np.testing.assert_array_equal(view, big)


@pytest.mark.parametrize(
    "key", [slice(None), slice(2, 9, 3), slice(None, None, -1), slice(5, 0, -2)]
)
def test_select_frames_keeps_stacks_lazy(key):
    indices = range(N_FRAMES)[key]
    view = select_frames(STACK, indices)
    assert np.shares_memory(view, STACK)
    np.testing.assert_array_equal(view, STACK[key])
    frames, loader = lazy_stack(cache_frames=2)
    selected = select_frames(frames, indices)
    assert isinstance(selected, LazyFrames) and not loader.calls
    np.testing.assert_array_equal(selected[1:], STACK[key][1:])
