"""TIFF, frame folders, videos, layouts, the FoV estimate and the float32 TIFF writer."""

from __future__ import annotations

import os

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from skimage.color import rgb2gray

from napari_pclesr import FibreLayout
from napari_pclesr.io import (
    CorruptFileError,
    EmptyFileError,
    InconsistentFramesError,
    LayoutFileError,
    LazyFrames,
    UnsupportedFormatError,
    detect_format,
    estimate_fov,
    read_layout,
    read_sequence,
    write_image,
    write_layout,
)
from napari_pclesr.io import tiff as tiff_module
from napari_pclesr.io.fov import circle_mask
from napari_pclesr.io.video import ffmpeg_reason


def _stack(n_frames=3, shape=(40, 48), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random((n_frames, *shape)).astype(np.float32)


# -- the float32 TIFF writer and the TIFF reader ---------------------------------------------


def test_write_image_round_trip_with_metadata(tmp_path):
    stack = _stack()
    stack[0, 0, 0] = np.nan  # TIFF keeps NaN; the writer must not drop it
    path = write_image(
        tmp_path / "out.tif",
        stack,
        frame_rate=12.5,
        pixel_size_um=0.45,
        fov_circle=(20, 24, 15),
        layout="bundle.csv",
        simulator={"sigma_mult": 0.05, "sigma_add": 0.01, "seed": np.int64(3)},
        model="edsr",
        extra={"offsets": np.array([[0.5, 1.0]])},
    )
    frames, meta = read_sequence(path)
    assert frames.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(frames), stack)
    assert meta["frame_rate"] == 12.5 and meta["pixel_size_um"] == pytest.approx(0.45)
    saved = meta["raw"]["pclesr"]
    assert saved["layout"] == "bundle.csv" and saved["model"] == "edsr"
    assert saved["simulator"] == {"sigma_mult": 0.05, "sigma_add": 0.01, "seed": 3}
    assert saved["offsets"] == [[0.5, 1.0]]
    assert meta["fov_circle"] == (20.0, 24.0, 15.0)
    np.testing.assert_array_equal(meta["fov_mask"], circle_mask((40, 48), (20, 24, 14)))
    # Other software sees the pixel size through the standard resolution tags.
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].resolution[0] == pytest.approx(1e4 / 0.45)


def test_write_image_single_frame_and_integer_input(tmp_path):
    frame = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    frames, _ = read_sequence(write_image(tmp_path / "one.tif", frame))
    assert frames.shape == (1, 3, 4) and frames.dtype == np.float32
    np.testing.assert_array_equal(frames[0], frame.astype(np.float32))


def test_write_image_rejects_rgb_other_suffixes_and_odd_metadata(tmp_path):
    with pytest.raises(ValueError, match="RGB"):
        write_image(tmp_path / "rgb.tif", np.zeros((32, 32, 3)))
    with pytest.raises(UnsupportedFormatError, match="TIFF only"):
        write_image(tmp_path / "out.png", np.zeros((8, 8)))
    with pytest.raises(ValueError, match="JSON"):
        write_image(tmp_path / "out.tif", np.zeros((8, 8)), extra={"what": object()})
    assert not (tmp_path / "out.tif").exists()


def test_write_image_is_atomic(tmp_path, monkeypatch):
    target = write_image(tmp_path / "keep.tif", np.ones((4, 4)))
    before = target.read_bytes()

    def broken_imwrite(path, data, **kwargs):
        with open(path, "wb") as stream:
            stream.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", broken_imwrite)
    with pytest.raises(OSError, match="disk full"):
        write_image(target, np.zeros((4, 4)))
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["keep.tif"]  # no temporary file left


def test_write_image_streams_a_lazy_stack(tmp_path):
    stack = _stack(7)
    lazy = LazyFrames(lambda indices: stack[list(indices)], 7, stack.shape[1:], np.float32)
    path = write_image(tmp_path / "lazy.tif", lazy, batch_frames=3)
    np.testing.assert_array_equal(tifffile.imread(path), stack)
    mapped = tifffile.memmap(path, mode="r")[2]  # a memory-mapped single frame
    np.testing.assert_array_equal(
        tifffile.imread(write_image(tmp_path / "2d.tif", mapped)), stack[2]
    )


def test_uint16_tiff_is_memory_mapped_and_faithful(tmp_path):
    stack = (np.random.default_rng(1).random((4, 30, 20)) * 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")
    frames, meta = read_sequence(tmp_path / "s.tif")
    assert isinstance(frames, np.memmap) and frames.dtype == np.uint16
    np.testing.assert_array_equal(frames, stack)
    assert meta["format"] == "tiff" and meta["frame_rate"] is None


def test_ome_tiff_metadata(tmp_path):
    stack = (np.arange(3 * 20 * 30) % 4096).astype(np.uint16).reshape(3, 20, 30)
    metadata = {"axes": "TYX", "PhysicalSizeX": 0.7, "TimeIncrement": 0.125}
    tifffile.imwrite(tmp_path / "s.ome.tif", stack, ome=True, metadata=metadata)
    frames, meta = read_sequence(tmp_path / "s.ome.tif")
    np.testing.assert_array_equal(frames, stack)
    assert meta["format"] == "ome-tiff"
    assert meta["pixel_size_um"] == pytest.approx(0.7) and meta["frame_rate"] == pytest.approx(8)


def test_imagej_tiff_metadata(tmp_path):
    stack = np.zeros((2, 10, 10), np.uint8)
    tifffile.imwrite(
        tmp_path / "ij.tif",
        stack,
        imagej=True,
        resolution=(2.0, 2.0),
        metadata={"axes": "TYX", "finterval": 0.1, "unit": "micron"},
    )
    _, meta = read_sequence(tmp_path / "ij.tif")
    assert meta["format"] == "imagej-tiff"
    assert meta["frame_rate"] == pytest.approx(10) and meta["pixel_size_um"] == pytest.approx(0.5)


@pytest.mark.parametrize("eager_limit", [tiff_module.EAGER_LIMIT_BYTES, 0])
def test_compressed_stack_read_at_once_or_page_by_page(tmp_path, monkeypatch, eager_limit):
    monkeypatch.setattr(tiff_module, "EAGER_LIMIT_BYTES", eager_limit)
    stack = (np.random.default_rng(2).random((5, 24, 32)) * 1000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "z.tif", stack, compression="zlib")
    frames, _ = read_sequence(tmp_path / "z.tif")
    assert isinstance(frames, LazyFrames) == (eager_limit == 0)
    np.testing.assert_array_equal(np.asarray(frames), stack)
    np.testing.assert_array_equal(frames[3], stack[3])


def test_rgb_tiff_becomes_grey_like_skimage(tmp_path):
    rgb = (np.random.default_rng(3).random((20, 30, 3)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    frames, meta = read_sequence(tmp_path / "rgb.tif")
    assert meta["converted_to_grey"] and frames.shape == (1, 20, 30)
    np.testing.assert_allclose(frames[0], rgb2gray(rgb) * 255, atol=1e-3)


def test_corrupt_tiff(tmp_path):
    tifffile.imwrite(tmp_path / "good.tif", _stack(2))
    data = bytearray((tmp_path / "good.tif").read_bytes())
    data[4:8] = b"\xff\xff\xff\x7f"  # the first IFD offset now points far past the end
    bad = tmp_path / "bad.tif"
    bad.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="cannot be read as TIFF") as error:
        read_sequence(bad)
    assert str(bad) in str(error.value)
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"this is not a TIFF at all")
    with pytest.raises(CorruptFileError):
        read_sequence(garbage)


def test_empty_and_unsupported_files(tmp_path):
    (tmp_path / "empty.tif").touch()
    with pytest.raises(EmptyFileError):
        read_sequence(tmp_path / "empty.tif")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UnsupportedFormatError, match="not a format"):
        read_sequence(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError):
        read_sequence(tmp_path / "missing.mkt")
    tifffile.imwrite(
        tmp_path / "tc.tif", np.zeros((3, 2, 8, 8), np.uint8), metadata={"axes": "TCYX"}
    )
    with pytest.raises(UnsupportedFormatError, match="axes"):
        read_sequence(tmp_path / "tc.tif")


# -- folders of frames ---------------------------------------------------------------------------


def test_folder_natural_order_and_laziness(tmp_path):
    values = {"frame_10.png": 10, "frame_2.png": 2, "frame_1.png": 1, "frame_9.tif": 9}
    for name, value in values.items():
        frame = np.full((6, 8), value, np.uint8)
        (tifffile.imwrite if name.endswith(".tif") else iio.imwrite)(tmp_path / name, frame)
    (tmp_path / "notes.txt").write_text("not a frame")
    assert detect_format(tmp_path) == "folder"
    frames, meta = read_sequence(tmp_path)
    assert isinstance(frames, LazyFrames) and frames.shape == (4, 6, 8)
    assert meta["raw"]["files"] == ["frame_1.png", "frame_2.png", "frame_9.tif", "frame_10.png"]
    assert [int(frames[k][0, 0]) for k in range(4)] == [1, 2, 9, 10]


def test_folder_with_mixed_sizes(tmp_path):
    iio.imwrite(tmp_path / "a1.png", np.zeros((6, 8), np.uint8))
    iio.imwrite(tmp_path / "a2.png", np.zeros((6, 9), np.uint8))
    with pytest.raises(InconsistentFramesError, match=r"a1\.png is 8×6 .* a2\.png is 9×6") as error:
        read_sequence(tmp_path)
    assert str(tmp_path) in str(error.value)


def test_folder_of_rgb_frames_and_a_broken_frame(tmp_path):
    rgb = (np.random.default_rng(4).random((2, 6, 8, 3)) * 255).astype(np.uint8)
    for k in range(2):
        iio.imwrite(tmp_path / f"c{k}.png", rgb[k])
    frames, meta = read_sequence(tmp_path)
    assert meta["converted_to_grey"] and frames.dtype == np.float32
    np.testing.assert_allclose(np.asarray(frames), rgb2gray(rgb) * 255, atol=1e-3)
    (tmp_path / "c2.png").touch()
    with pytest.raises(EmptyFileError, match=r"c2\.png"):
        read_sequence(tmp_path)


def test_folder_of_multi_page_tiffs_reads_every_page(tmp_path):
    counts = [3, 1, 2]
    stacks = [
        (10 * k + np.arange(n)[:, None, None] + np.zeros((6, 8))).astype(np.uint16)
        for k, n in enumerate(counts)
    ]
    for k, stack in enumerate(stacks):
        tifffile.imwrite(tmp_path / f"part{k}.tif", stack, photometric="minisblack")
    frames, meta = read_sequence(tmp_path)
    assert frames.shape == (6, 6, 8) and frames.dtype == np.uint16
    assert meta["raw"]["frames_per_file"] == [3, 1, 2]
    np.testing.assert_array_equal(np.asarray(frames), np.concatenate(stacks))
    np.testing.assert_array_equal(frames[[5, 0, 3]], np.concatenate(stacks)[[5, 0, 3]])


def test_folder_mixing_types_is_refused(tmp_path):
    iio.imwrite(tmp_path / "f1.png", np.full((6, 8), 200, np.uint8))
    tifffile.imwrite(tmp_path / "f2.tif", np.full((6, 8), 0.8, np.float32))
    with pytest.raises(InconsistentFramesError, match=r"f1\.png is uint8 but f2\.tif is float32"):
        read_sequence(tmp_path)


def test_folder_of_tiffs_with_odd_axes_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "f1.tif", np.zeros((6, 8), np.uint8))
    tifffile.imwrite(
        tmp_path / "f2.tif",
        np.zeros((2, 3, 6, 8), np.uint8),
        photometric="minisblack",
        metadata={"axes": "TCYX"},
    )
    with pytest.raises(UnsupportedFormatError, match=r"f2\.tif: has axes"):
        read_sequence(tmp_path)


def test_damaged_tiff_error_gives_tifffile_s_reason_and_prints_nothing(tmp_path, capfd):
    (tmp_path / "broken.tif").write_bytes(b"II*\0" + b"\xff" * 8)
    with pytest.raises(CorruptFileError, match=r"invalid offset to first page"):
        read_sequence(tmp_path / "broken.tif")
    assert capfd.readouterr().err == ""


def test_folder_without_frames(tmp_path):
    assert detect_format(tmp_path) is None
    with pytest.raises(UnsupportedFormatError):
        read_sequence(tmp_path)


# -- videos --------------------------------------------------------------------------------------


def _write_video(path, frames_rgb, fps=24, **options):
    import imageio_ffmpeg

    height, width = frames_rgb.shape[1:3]
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=fps, macro_block_size=16, **options
    )
    writer.send(None)
    for frame in frames_rgb:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path


def _numbered_frames(n_frames=40, shape=(64, 80)) -> np.ndarray:
    """Grey frames whose frame number is written as a bright bar position and a grey level."""
    frames = np.zeros((n_frames, *shape, 3), np.uint8)
    for k in range(n_frames):
        frames[k] = 20 + 5 * k
        frames[k, 8:24, k : k + 10] = 250
    return frames


@pytest.mark.parametrize(
    ("suffix", "codec"),
    [(".mpg", "mpeg1video"), (".mpeg", "mpeg2video"), (".mp4", "libx264"), (".avi", "mjpeg")],
)
def test_video_random_access_matches_sequential_decoding(tmp_path, suffix, codec):
    source = _numbered_frames()
    options = {"codec": codec, "output_params": ["-g", "12"]}
    if codec != "libx264":
        options["quality"] = 10
    path = _write_video(tmp_path / f"v{suffix}", source, **options)
    frames, meta = read_sequence(path)
    assert frames.shape == (40, 64, 80) and frames.dtype == np.uint8
    assert meta["format"] == "video" and meta["frame_rate"] == pytest.approx(24)
    sequential = np.stack([frame for frame in frames])
    # The grey level identifies each frame despite compression.
    levels = sequential[:, 40:, :].mean(axis=(1, 2))
    np.testing.assert_allclose(levels, 20 + 5 * np.arange(40), atol=4)
    frames.close()
    for index in [37, 3, 25, 11, 39, 0, 30]:  # jumps back and forth restart the decoder
        frames._cache.clear()
        np.testing.assert_array_equal(frames[index], sequential[index])


def test_rgb_video_is_converted_to_grey(tmp_path):
    frames_rgb = np.zeros((6, 48, 64, 3), np.uint8)
    frames_rgb[:, :, :20] = (200, 30, 30)
    frames_rgb[:, :, 20:40] = (30, 200, 30)
    frames_rgb[:, :, 40:] = (30, 30, 200)
    path = _write_video(tmp_path / "rgb.avi", frames_rgb, codec="png", pix_fmt_out="rgb24")
    frames, meta = read_sequence(path)
    assert meta["converted_to_grey"] and meta["raw"]["pix_fmt"].startswith("rgb24")
    luma = frames_rgb[0].astype(np.float64) @ [0.299, 0.587, 0.114]  # ffmpeg: BT.601
    np.testing.assert_allclose(frames[0][:, 2:-2], luma[:, 2:-2], atol=2)


def test_damaged_videos(tmp_path):
    (tmp_path / "empty.mp4").touch()
    with pytest.raises(EmptyFileError):
        read_sequence(tmp_path / "empty.mp4")
    (tmp_path / "junk.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(CorruptFileError, match=r"junk\.mp4") as error:
        read_sequence(tmp_path / "junk.mp4")
    # One line with ffmpeg's reason, not its version banner and build configuration.
    message = str(error.value)
    assert "\n" not in message and "ffmpeg version" not in message and "--enable" not in message
    assert message.endswith(
        "(Error opening input files: Invalid data found when processing input)."
    )


def test_ffmpeg_reason_keeps_the_cause_only():
    log = (
        "Could not load meta information\n=== stderr ===\n\nffmpeg version n9 Copyright\n"
        "  built with gcc\n  libavutil 61.1\n[in#0 @ 0x55] Error opening input: Invalid data\n"
        "Error opening input files: Invalid data found when processing input."
    )
    assert (
        ffmpeg_reason(log) == "Error opening input files: Invalid data found when processing input"
    )
    assert ffmpeg_reason("[mpeg @ 0x1] end of file\n") == "end of file"
    assert ffmpeg_reason("") == "no error message"


# -- field of view -----------------------------------------------------------------------------


def _export_like_frames(n_frames=4, shape=(576, 592), circle=(288.0, 296.0, 270.0), seed=5):
    """Frames like a Cellvizio video export: tissue in a disc, logo and scale bar outside."""
    rng = np.random.default_rng(seed)
    inside = circle_mask(shape, circle)
    frames = np.where(inside, rng.uniform(30, 220, (n_frames, *shape)), 0.0)
    frames[:, 10:40, 5:90] = 255  # logo, top-left corner
    frames[:, 550:556, 480:580] = 255  # scale bar, bottom-right corner
    frames[:, 530:545, 500:560] = 200  # its label
    return frames.astype(np.uint8), inside


def test_fov_of_an_export_excludes_the_burnt_in_overlay():
    frames, inside = _export_like_frames()
    fov = estimate_fov(frames)
    row, col, radius = fov.circle
    assert abs(row - 288) < 1 and abs(col - 296) < 1 and abs(radius - 270) < 1.5
    assert not fov.mask[10:40, 5:90].any() and not fov.mask[530:556, 480:580].any()
    assert fov.mask[inside].mean() > 0.98 and not fov.mask[~inside].any()


def test_fov_of_a_compressed_video_export(tmp_path):
    frames, _ = _export_like_frames(n_frames=6)
    rgb = np.repeat(frames[..., None], 3, axis=-1)
    path = _write_video(tmp_path / "export.mpeg", rgb, codec="mpeg2video", quality=8)
    _, meta = read_sequence(path)
    assert meta["fov_circle"] is not None
    assert abs(meta["fov_circle"][2] - 270) < 3
    assert not meta["fov_mask"][10:40, 5:90].any() and not meta["fov_mask"][530:556, 480:580].any()


def test_fov_of_frames_without_a_dark_border_is_the_whole_frame():
    frames = np.random.default_rng(6).uniform(10, 200, (3, 50, 60))
    fov = estimate_fov(frames)
    assert fov.mask.all() and fov.circle is None
    square = np.zeros((64, 64))
    square[8:56, 8:56] = 1
    fov = estimate_fov(square)  # not a disc: the region itself (corners rounded by the opening)
    assert fov.circle is None and not fov.mask[square == 0].any()
    assert fov.mask[square == 1].mean() > 0.98


# -- fibre layouts -------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_layout_round_trip(tmp_path, suffix):
    layout = FibreLayout.synthetic((64, 80), n_fibres=300, seed=1)
    path = write_layout(tmp_path / f"layout{suffix}", layout)
    assert read_layout(path) == layout


def test_layout_errors(tmp_path):
    with_nan = tmp_path / "nan.csv"
    with_nan.write_text("# shape=10,10\nrow,col\n1,2\nnan,3\n4,5\n6,1\n")
    with pytest.raises(LayoutFileError, match="NaN") as error:
        read_layout(with_nan)
    assert isinstance(error.value, ValueError) and isinstance(error.value, OSError)
    assert str(with_nan) in str(error.value)
    missing = tmp_path / "missing.csv"
    missing.write_text("x,y\n1,2\n3,4\n5,1\n")
    with pytest.raises(LayoutFileError, match="missing column"):
        read_layout(missing)
    (tmp_path / "empty.npz").touch()
    with pytest.raises(EmptyFileError):
        read_layout(tmp_path / "empty.npz")
    with pytest.raises(UnsupportedFormatError):
        write_layout(tmp_path / "layout.txt", FibreLayout.synthetic((32, 32), 50, seed=0))


@pytest.mark.filterwarnings("ignore:<tifffile.TiffWriter.write> data with shape")
@pytest.mark.parametrize("n_frames", [3, 4])
def test_short_stacks_written_by_tifffile_defaults_stay_grey_frames(tmp_path, n_frames):
    # tifffile marks any (3|4, H, W) array as planar RGB; it is a stack of grey frames.
    stack = np.random.default_rng(0).random((n_frames, 20, 24)).astype(np.float32)
    tifffile.imwrite(tmp_path / "short.tif", stack)
    frames, _ = read_sequence(tmp_path / "short.tif")
    assert frames.shape == (n_frames, 20, 24)
    np.testing.assert_array_equal(np.asarray(frames[:]), stack)
