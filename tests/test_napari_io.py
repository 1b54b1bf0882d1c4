"""The napari reader, writer and sample-data contributions, in a real viewer (xvfb-run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_pclesr import FibreLayout
from napari_pclesr._napari._reader import get_reader
from napari_pclesr.io import read_layout, read_sequence, write_layout, write_mkt

PLUGIN = "napari-pclesr"


def _disc_recording(tmp_path: Path) -> Path:
    shape = (96, 96)
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    disc = (rows - 48) ** 2 + (cols - 48) ** 2 <= 44**2
    rng = np.random.default_rng(0)
    frames = np.where(disc, rng.integers(-50, 2000, (5, *shape)), -3).astype(np.int16)
    return write_mkt(tmp_path / "rec.mkt", frames, frame_rate=12, metadata={"fovx": 240})


# -- get_reader without a viewer -----------------------------------------------------------------


def test_get_reader_declines_what_it_does_not_read(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "table.csv").write_text("x,y,z\n1,2,3\n")
    np.save(tmp_path / "image.npy", np.zeros((4, 4, 4)))
    np.savez(tmp_path / "other.npz", image=np.zeros(3))
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    (tmp_path / "empty_folder").mkdir()
    for name in ["notes.txt", "table.csv", "image.npy", "other.npz", "broken.npz", "missing.mkt"]:
        assert get_reader(str(tmp_path / name)) is None, name
    assert get_reader(str(tmp_path / "empty_folder")) is None
    assert get_reader([str(tmp_path / "a.mkt"), str(tmp_path / "b.mkt")]) is None
    assert get_reader(12345) is None


def test_get_reader_accepts_recordings_and_layouts(tmp_path):
    recording = _disc_recording(tmp_path)
    layout = write_layout(tmp_path / "bundle.csv", FibreLayout.synthetic((64, 64), 200))
    (tmp_path / "empty.mkt").touch()
    for path in [recording, layout, tmp_path / "empty.mkt"]:
        assert callable(get_reader(str(path))), path


def _disc(shape=(96, 96), radius=40) -> np.ndarray:
    rows, cols = np.indices(shape)
    return np.hypot(rows - shape[0] / 2, cols - shape[1] / 2) <= radius


def test_get_reader_declines_ordinary_images_and_claims_pcle_ones(tmp_path):
    import imageio.v3 as iio
    from skimage import data

    from napari_pclesr.io import write_image

    rng = np.random.default_rng(3)
    camera = data.camera()
    iio.imwrite(tmp_path / "plain.png", camera)
    tifffile.imwrite(tmp_path / "plain.tif", camera)  # a grey image filling its frame
    tifffile.imwrite(tmp_path / "colour.tif", data.astronaut())
    stack = (rng.random((3, 96, 96)) * 200 + 50).astype(np.uint8)
    tifffile.imwrite(tmp_path / "cells.tif", stack)  # lit everywhere: no field of view
    tifffile.imwrite(tmp_path / "pcle.tif", np.where(_disc(), stack, 0))  # circular FoV
    write_image(tmp_path / "ours.tif", rng.random((2, 32, 32)).astype(np.float32))
    for name in ["plain.png", "plain.tif", "colour.tif", "cells.tif"]:
        assert get_reader(str(tmp_path / name)) is None, name
    for name in ["pcle.tif", "ours.tif"]:
        assert callable(get_reader(str(tmp_path / name))), name


def test_get_reader_claims_grey_videos_with_a_field_of_view_only(tmp_path):
    import imageio_ffmpeg

    frames = {
        "pcle.mp4": np.where(_disc((96, 96), 40)[..., None], 180, 0),
        "colour.mp4": np.stack(
            [np.full((96, 96), 200), np.zeros((96, 96)), np.full((96, 96), 90)], -1
        ),
        "grey_full.mp4": np.full((96, 96, 3), 160),
    }
    for name, frame in frames.items():
        writer = imageio_ffmpeg.write_frames(str(tmp_path / name), (96, 96), fps=10)
        writer.send(None)
        for _ in range(6):
            writer.send(np.ascontiguousarray(np.broadcast_to(frame, (96, 96, 3)), np.uint8))
        writer.close()
    assert callable(get_reader(str(tmp_path / "pcle.mp4")))
    assert get_reader(str(tmp_path / "colour.mp4")) is None
    assert get_reader(str(tmp_path / "grey_full.mp4")) is None


def test_get_reader_claims_the_shared_raw_frames_and_recording(shared_dir):
    data = shared_dir / "data"
    for name in ["tissue_paper.tif", "pcle_colorectal_S01V01.mpeg"]:
        path = data / name
        if not path.is_file():
            pytest.skip(f"{path} not found")
        assert callable(get_reader(str(path))), name


def test_the_manifest_names_our_formats_only():
    import yaml

    manifest = yaml.safe_load(
        (Path(__file__).parents[1] / "src/napari_pclesr/napari.yaml").read_text(encoding="utf-8")
    )
    [reader] = manifest["contributions"]["readers"]
    patterns = reader["filename_patterns"]
    assert "*" not in patterns and "*.png" not in patterns
    assert {"*.mkt", "*.tif", "*.tiff", "*.mpeg", "*.csv", "*.npz"} <= set(patterns)
    assert reader["accepts_directories"] is True


def test_image_layer_has_percentile_contrast_and_fov(tmp_path):
    path = _disc_recording(tmp_path)
    [(data, attributes, kind)] = get_reader(str(path))(str(path))
    frames, meta = read_sequence(path)
    assert kind == "image" and data.shape == (5, 96, 96)
    inside = np.asarray(frames)[:, meta["fov_mask"]]
    expected = np.percentile(inside, [0.5, 99.5])
    np.testing.assert_allclose(attributes["contrast_limits"], expected)
    np.testing.assert_array_equal(attributes["metadata"]["fov_mask"], meta["fov_mask"])
    assert attributes["metadata"]["frame_rate"] == 12
    assert attributes["metadata"]["raw"]["fovx"] == "240"


def test_npe2_validate_passes():
    npe2 = Path(sys.executable).with_name("npe2")
    result = subprocess.run(
        [str(npe2), "validate", PLUGIN], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in (result.stdout + result.stderr).lower()


# -- through a real viewer -----------------------------------------------------------------------


@pytest.mark.napari
def test_open_recording_and_layout_in_the_viewer(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    recording = _disc_recording(tmp_path)
    layout = FibreLayout.synthetic((64, 64), 200, seed=2)
    layout_path = write_layout(tmp_path / "bundle.npz", layout)
    [image] = viewer.open(str(recording), plugin=PLUGIN)
    [points] = viewer.open(str(layout_path), plugin=PLUGIN)
    assert image._type_string == "image" and image.data.shape == (5, 96, 96)
    assert image.metadata["fov_mask"].shape == (96, 96)
    assert points._type_string == "points"
    np.testing.assert_allclose(points.data, layout.positions)
    assert points.metadata["fibre_layout"] == layout
    viewer.dims.set_current_step(0, 3)  # the slider reaches a lazily read frame
    np.testing.assert_array_equal(
        np.asarray(image._slice.image.raw), np.asarray(read_sequence(recording)[0][3])
    )


@pytest.mark.napari
def test_damaged_files_raise_without_breaking_the_viewer(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    (tmp_path / "empty.mkt").touch()
    bad_layout = tmp_path / "bad.csv"
    bad_layout.write_text("row,col\n1,2\nnan,3\n4,5\n")
    for path, problem in [(tmp_path / "empty.mkt", "empty"), (bad_layout, "NaN")]:
        with pytest.raises(Exception) as error:  # napari wraps our error in its own type
            viewer.open(str(path), plugin=PLUGIN)
        chain = f"{error.value} {error.value.__cause__}"
        assert path.name in chain and problem in chain
    assert len(viewer.layers) == 0
    viewer.add_image(np.zeros((8, 8)))  # still usable
    assert len(viewer.layers) == 1


@pytest.mark.napari
def test_writers_round_trip_through_the_viewer(make_napari_viewer, tmp_path):
    import napari

    viewer = make_napari_viewer()
    stack = np.random.default_rng(1).random((3, 32, 40)).astype(np.float32)
    image = viewer.add_image(
        stack,
        metadata={
            "frame_rate": 24.0,
            "model": "fsrcnn",
            "simulator": {"seed": 4},
            "fibre_layout": FibreLayout.synthetic((32, 40), 100),
            "layout_path": "bundle.csv",
        },
    )
    written = napari.save_layers(str(tmp_path / "out.tif"), [image], plugin=PLUGIN)
    assert written == [str(tmp_path / "out.tif")]
    frames, meta = read_sequence(tmp_path / "out.tif")
    np.testing.assert_array_equal(np.asarray(frames), stack)
    saved = meta["raw"]["pclesr"]
    assert meta["frame_rate"] == 24.0 and saved["model"] == "fsrcnn"
    assert saved["simulator"] == {"seed": 4} and saved["layout"] == "bundle.csv"
    assert saved["fibre_layout"] == {"n_fibres": 100, "shape": [32, 40]}

    layout = FibreLayout.synthetic((50, 60), 150, seed=3)
    points = viewer.add_points(layout.positions, metadata={"fibre_layout": layout})
    for suffix in (".csv", ".npz"):
        target = str(tmp_path / f"cores{suffix}")
        assert napari.save_layers(target, [points], plugin=PLUGIN) == [target]
        assert read_layout(target) == layout  # shape kept from the layout in metadata
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        assert tif.pages[0].dtype == np.float32


@pytest.mark.napari
def test_napari_opens_plain_images_and_our_files_without_asking(make_napari_viewer, tmp_path):
    import imageio.v3 as iio

    viewer = make_napari_viewer()
    iio.imwrite(
        tmp_path / "plain.png", (np.random.default_rng(0).random((16, 16)) * 255).astype(np.uint8)
    )
    # plugin=None is what a dropped file gets: the only compatible reader, else a question.
    [png] = viewer.open(str(tmp_path / "plain.png"), plugin=None)
    assert png.source.reader_plugin != PLUGIN
    [recording] = viewer.open(str(_disc_recording(tmp_path)), plugin=None)
    assert recording.source.reader_plugin == PLUGIN
    assert "fov_mask" in recording.metadata


@pytest.mark.napari
def test_interactive_opening_reads_in_a_worker(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from napari_pclesr._napari import _background

    viewer = make_napari_viewer()
    monkeypatch.setattr(_background, "ui_loop_running", lambda: True)  # as from the menu
    path = _disc_recording(tmp_path)
    assert viewer.open(str(path), plugin=PLUGIN) == []  # napari's "layers come later"
    qtbot.waitUntil(lambda: len(viewer.layers) == 1, timeout=30000)
    [layer] = viewer.layers
    assert layer.name == "rec.mkt" and layer.metadata["fov_mask"].shape == (96, 96)
    np.testing.assert_array_equal(np.asarray(layer.data[2]), np.asarray(read_sequence(path)[0][2]))

    viewer.layers.clear()
    viewer.open_sample(PLUGIN, "phantom")
    assert [layer.name for layer in viewer.layers] == ["HR (phantom)"]
    assert not viewer.layers["HR (phantom)"].data.any()  # a black placeholder, at once
    qtbot.waitUntil(lambda: "fibre layout" in viewer.layers, timeout=60000)
    assert [layer.name for layer in viewer.layers] == [
        "HR (phantom)",
        "LR (simulated)",
        "fibre layout",
    ]
    hr = viewer.layers["HR (phantom)"]
    assert hr.data.any() and "pclesr_pending" not in hr.metadata
    assert hr.metadata["fov_mask"].shape == (576, 576)


@pytest.mark.napari
def test_sample_data(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "phantom")
    names = [layer.name for layer in viewer.layers]
    assert names == ["HR (phantom)", "LR (simulated)", "fibre layout"]
    hr, lr, points = viewer.layers
    layout = points.metadata["fibre_layout"]
    assert layout.n_fibres == 30000 and hr.data.shape == lr.data.shape == (576, 576)
    assert lr.metadata["fibre_layout"] is layout
    assert np.all(lr.data[~lr.metadata["fov_mask"]] == 0)
    assert (
        np.corrcoef(hr.data[lr.metadata["fov_mask"]], lr.data[lr.metadata["fov_mask"]])[0, 1] > 0.8
    )

    viewer.layers.clear()
    viewer.open_sample(PLUGIN, "sequence")
    truth, simulated, _layout = viewer.layers
    assert truth.data.ndim == 3 and truth.data.shape == simulated.data.shape
    offsets = simulated.metadata["true_offsets"]
    assert offsets.shape == (truth.data.shape[0], 2) and np.ptp(offsets, axis=0).max() > 5


@pytest.mark.napari
def test_lazy_stacks_display_in_the_viewer(make_napari_viewer, tmp_path):
    import imageio.v3 as iio
    import imageio_ffmpeg

    viewer = make_napari_viewer()
    folder = tmp_path / "frames"
    folder.mkdir()
    stack = (np.random.default_rng(2).random((4, 24, 32)) * 255).astype(np.uint8)
    for index, frame in enumerate(stack):
        iio.imwrite(folder / f"f{index}.png", frame)
    writer = imageio_ffmpeg.write_frames(str(tmp_path / "v.mp4"), (32, 32), fps=10)
    writer.send(None)
    disc = _disc((32, 32), 14)
    for level in range(25, 275, 25):  # grey frames in a circular field of view: pCLE
        writer.send(np.repeat(np.where(disc, level, 0)[..., None], 3, axis=-1).astype(np.uint8))
    writer.close()

    [frames_layer] = viewer.open(str(folder), plugin=PLUGIN)
    [video_layer] = viewer.open(str(tmp_path / "v.mp4"), plugin=PLUGIN)
    assert frames_layer.data.shape == (4, 24, 32) and video_layer.data.shape == (10, 32, 32)
    viewer.dims.set_current_step(0, 2)
    np.testing.assert_array_equal(np.asarray(frames_layer._slice.image.raw), stack[2])
    shown = np.asarray(video_layer._slice.image.raw)
    assert abs(float(shown[_disc((32, 32), 10)].mean()) - 75) < 4  # the third frame's level
