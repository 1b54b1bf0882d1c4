"""Cellvizio .mkt reader: round trips, hand-built files, damaged files, laziness and fuzzing."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_pclesr.io import (
    DamagedFileWarning,
    EmptyFileError,
    FrameSizeError,
    LazyFrames,
    MktFormatError,
    PclesrFileError,
    read_mkt,
    read_sequence,
    write_mkt,
)
from napari_pclesr.io.mkt import guess_frame_shape


def _frames(n_frames=3, shape=(580, 576), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-2000, 6000, (n_frames, *shape)).astype(np.int16)


# An independent encoder of the published layout (../shared/REFERENCE.md), written with
# struct only, so the reader is not tested against its own writer alone.
def _chunk(chunk_type: int, payload: bytes) -> bytes:
    header = b"\n<CSTA" + b"O>" + struct.pack(">HI", chunk_type, len(payload)) + b"\r\n"
    trailer = b"<CEND" + b" " * 9 + b"\r\n"
    assert len(header) == len(trailer) == 16
    return header + payload + trailer


def _hand_built(frames: np.ndarray, keys: dict | None, extra_chunk_after: int | None = None):
    data = b""
    index = []
    for k, frame in enumerate(frames):
        payload = frame.astype("<i2").tobytes()
        index.append((2, len(data), len(payload)))
        data += _chunk(2, payload)
        if k == extra_chunk_after:
            data += _chunk(7, b"an unrelated chunk of another type")
    if keys is not None:
        text = "".join(f"{key}={value}\r\n" for key, value in keys.items()).encode()
        entries = b"".join(struct.pack("<III", *entry) for entry in index)
        data += _chunk(5, struct.pack("<I", len(index)) + entries + text)
    return data


def test_round_trip_keeps_int16_values_and_metadata(tmp_path):
    frames = _frames()
    frames[0, 0, :4] = [-32768, -1, 0, 32767]
    path = write_mkt(tmp_path / "a.mkt", frames, frame_rate=11.8, metadata={"fovx": 240})
    read, meta = read_mkt(path)
    assert read.dtype == np.int16 and read.shape == frames.shape
    np.testing.assert_array_equal(read, frames)
    assert not read.flags.writeable  # a read-only view of the file
    assert meta["frame_rate"] == pytest.approx(11.8)
    assert meta["pixel_size_um"] == pytest.approx(240 / 576)
    assert meta["raw"] == {"width": "576", "height": "580", "framerate": "11.8", "fovx": "240"}
    assert meta["frame_shape_source"] == "metadata"


def test_hand_built_file_with_index_and_foreign_chunk(tmp_path):
    frames = _frames(4, (64, 96), seed=1)
    keys = {"width": 96, "height": 64, "framerate": 12, "fovx": 300, "mask_level": 40}
    path = tmp_path / "hand.mkt"
    path.write_bytes(_hand_built(frames, keys, extra_chunk_after=1))
    read, meta = read_mkt(path)
    # A foreign chunk breaks the fixed stride, so frames are read through their offsets.
    assert isinstance(read, LazyFrames)
    np.testing.assert_array_equal(np.asarray(read), frames)
    np.testing.assert_array_equal(read[2, 5:9, -3:], frames[2, 5:9, -3:])
    assert meta["raw"]["mask_level"] == "40"
    assert meta["frame_rate"] == 12.0 and meta["pixel_size_um"] == pytest.approx(300 / 96)


@pytest.mark.parametrize("shape", [(580, 576), (578, 576), (576, 576), (512, 512)])
def test_old_files_without_index_guess_the_known_shapes(tmp_path, shape):
    frames = _frames(2, shape, seed=2)
    path = tmp_path / "old.mkt"
    path.write_bytes(_hand_built(frames, keys=None))
    read, meta = read_mkt(path)
    assert read.shape == (2, *shape) and meta["frame_shape_source"] == "guessed"
    np.testing.assert_array_equal(read, frames)
    assert meta["raw"] == {} and meta["frame_rate"] is None
    # Old readers seek to 16 + k·(size + 32); the view must agree with that rule.
    raw = np.frombuffer(path.read_bytes(), np.uint8)
    size = frames[0].nbytes
    second = raw[16 + (size + 32) : 16 + (size + 32) + size].view("<i2").reshape(shape)
    np.testing.assert_array_equal(read[1], second)


def test_guess_frame_shape_rule():
    assert guess_frame_shape(2 * 576 * 580) == (580, 576)
    assert guess_frame_shape(2 * 512 * 512) == (512, 512)
    # 576 × 577: size / (2·576) is odd, and 577·576 is not a multiple of 512 either.
    with pytest.raises(FrameSizeError, match="fits no known"):
        guess_frame_shape(2 * 576 * 577, "x.mkt")
    with pytest.raises(FrameSizeError):
        guess_frame_shape(2 * 100 * 100 + 1)


def test_truncated_file_opens_complete_frames_and_warns(tmp_path):
    frames = _frames(4)
    path = write_mkt(tmp_path / "full.mkt", frames, frame_rate=12)
    data = path.read_bytes()
    cut = tmp_path / "cut.mkt"
    cut.write_bytes(data[: 16 + 3 * (frames[0].nbytes + 32) + 1000])  # inside frame 3
    with pytest.warns(DamagedFileWarning, match="truncated frame 3"):
        read, _ = read_mkt(cut)
    np.testing.assert_array_equal(read, frames[:3])


def test_truncated_inside_first_frame_is_an_error(tmp_path):
    path = write_mkt(tmp_path / "a.mkt", _frames(1))
    cut = tmp_path / "cut.mkt"
    cut.write_bytes(path.read_bytes()[:5000])
    with pytest.warns(DamagedFileWarning), pytest.raises(MktFormatError, match="no complete"):
        read_mkt(cut)


def test_wrong_magic(tmp_path):
    path = write_mkt(tmp_path / "a.mkt", _frames(1))
    data = bytearray(path.read_bytes())
    data[1:6] = b"XXXXX"
    path.write_bytes(bytes(data))
    with pytest.raises(MktFormatError, match="wrong magic") as error:
        read_mkt(path)
    assert str(path) in str(error.value)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.mkt"
    path.touch()
    with pytest.raises(EmptyFileError, match="empty") as error:
        read_sequence(path)
    assert str(path) in str(error.value) and isinstance(error.value, OSError)


def test_frame_size_that_fits_no_width(tmp_path):
    path = tmp_path / "odd.mkt"
    path.write_bytes(_hand_built(_frames(2, (100, 100)), keys=None))
    with pytest.raises(FrameSizeError, match="fits no known") as error:
        read_mkt(path)
    assert str(path) in str(error.value)


def test_metadata_that_contradicts_the_frames_falls_back_to_the_guess(tmp_path):
    frames = _frames(2, (576, 576))
    path = tmp_path / "bad_meta.mkt"
    path.write_bytes(_hand_built(frames, {"width": 500, "height": 500}))
    with pytest.warns(DamagedFileWarning, match="does not match"):
        read, meta = read_mkt(path)
    assert meta["frame_shape_source"] == "guessed"
    np.testing.assert_array_equal(read, frames)


def test_frames_of_different_sizes_are_an_error(tmp_path):
    path = tmp_path / "mixed.mkt"
    path.write_bytes(
        _hand_built(_frames(1, (576, 576)), None) + _hand_built(_frames(1, (512, 512)), None)
    )
    with pytest.raises(MktFormatError, match="share one size"):
        read_mkt(path)


def test_read_sequence_adds_the_fov_of_a_circular_recording(tmp_path):
    shape = (580, 576)
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    disc = (rows - 290) ** 2 + (cols - 288) ** 2 <= 270**2
    rng = np.random.default_rng(3)
    frames = np.where(disc, rng.integers(200, 3000, (3, *shape)), -5).astype(np.int16)
    path = write_mkt(tmp_path / "disc.mkt", frames, frame_rate=12)
    _, meta = read_sequence(path)
    row, col, radius = meta["fov_circle"]
    assert abs(row - 290) < 1 and abs(col - 288) < 1 and abs(radius - 270) < 1.5
    assert meta["fov_mask"].shape == shape
    assert not meta["fov_mask"][~disc].any()
    assert meta["fov_mask"][disc].mean() > 0.98


def test_opening_is_lazy_and_memory_stays_flat(tmp_path):
    """Opening a 200 MB file and touching one frame costs memory of the order of a frame."""
    frame_shape = (580, 576)
    n_frames = 300  # 300 × 668 kB ≈ 200 MB
    base = _frames(4, frame_shape, seed=4)
    path = write_mkt(tmp_path / "big.mkt", (base[k % 4] for k in range(n_frames)))
    script = textwrap.dedent(
        f"""
        import resource, numpy as np
        from napari_pclesr.io import read_sequence
        def rss_mb():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * resource.getpagesize() / 2**20
        before = rss_mb()
        frames, meta = read_sequence({str(path)!r})
        opened = rss_mb()
        value = float(np.asarray(frames[n := {n_frames} // 2]).astype(np.float64).sum())
        touched = rss_mb()
        print(frames.shape[0], opened - before, touched - opened, value)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    count, open_mb, touch_mb, value = result.stdout.split()
    assert int(count) == n_frames
    assert float(value) == pytest.approx(float(base[(n_frames // 2) % 4].astype(np.float64).sum()))
    frame_mb = np.prod(frame_shape) * 2 / 2**20
    assert float(open_mb) < 30  # the FoV reads 8 frames; the whole file is 200 MB
    assert float(touch_mb) < 4 * frame_mb + 2


# -- fuzzing: only our documented exception types may escape ---------------------------------


FUZZ_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _open_quietly(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DamagedFileWarning)
        return read_mkt(path)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=4096), with_magic=st.booleans())
def test_fuzz_random_bytes(tmp_path, data, with_magic):
    path = tmp_path / "fuzz.mkt"
    path.write_bytes((b"\n<CSTA" if with_magic else b"") + data)
    try:
        frames, _ = _open_quietly(path)
    except PclesrFileError as error:
        assert str(path) in str(error)
    else:
        np.asarray(frames)  # whatever opened must also read


# A truncated file loses its index at the end, so its frame shape must be a guessable one.
_VALID = _hand_built(_frames(3, (512, 512), seed=5), {"width": 512, "height": 512, "framerate": 9})


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cut=st.integers(min_value=0, max_value=len(_VALID) - 1))
def test_fuzz_truncations_open_the_complete_frames(tmp_path, cut):
    path = tmp_path / "cut.mkt"
    path.write_bytes(_VALID[:cut])
    frame_bytes = 512 * 512 * 2
    complete = sum(16 + k * (frame_bytes + 32) + frame_bytes <= cut for k in range(3))
    try:
        frames, _ = _open_quietly(path)
    except PclesrFileError:
        assert complete == 0
    else:
        expected = _frames(3, (512, 512), seed=5)[:complete]
        np.testing.assert_array_equal(np.asarray(frames), expected)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(position=st.integers(min_value=0, max_value=len(_VALID) - 1), value=st.integers(0, 255))
def test_fuzz_corrupted_bytes(tmp_path, position, value):
    data = bytearray(_VALID)
    data[position] = value
    path = tmp_path / "corrupt.mkt"
    path.write_bytes(bytes(data))
    try:
        frames, _ = _open_quietly(path)
    except PclesrFileError as error:
        assert str(path) in str(error)
    else:
        assert np.asarray(frames).ndim == 3
