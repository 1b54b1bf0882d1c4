"""Raw fibre-bundle frames: core detection, flat-fielded reconstruction, real frames."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from scipy.interpolate import LinearNDInterpolator

from napari_pclesr import FibreLayout
from napari_pclesr.data import phantom
from napari_pclesr.io import (
    LazyFrames,
    RawBundleReconstructor,
    find_background,
    looks_like_raw_bundle,
    read_sequence,
)

SHAPE = (256, 256)


def render_cores(layout: FibreLayout, brightness: np.ndarray, seed: int) -> np.ndarray:
    """A camera frame of Gaussian cores (sigma 1 px) of the given brightness, black level 0,
    with camera noise (which also gives the detector the dim maxima it separates cores from)."""
    sigma = 1.0
    frame = np.random.default_rng(seed).normal(0.0, 0.01, layout.shape)
    offsets = np.arange(-4, 5)
    d_row, d_col = np.meshgrid(offsets, offsets, indexing="ij")
    centres = np.round(layout.positions).astype(int)
    rows = np.clip(centres[:, :1, None] + d_row, 0, layout.shape[0] - 1)
    cols = np.clip(centres[:, 1:, None] + d_col, 0, layout.shape[1] - 1)
    distance_sq = (rows - layout.positions[:, :1, None]) ** 2
    distance_sq = distance_sq + (cols - layout.positions[:, 1:, None]) ** 2
    spots = brightness[:, None, None] * np.exp(-distance_sq / (2 * sigma**2))
    np.add.at(frame, (rows, cols), spots)
    return frame


@pytest.fixture(scope="module")
def synthetic_raw():
    """(true layout, background, raw frames, object values at the cores) of a 5-px bundle."""
    layout = FibreLayout.synthetic(SHAPE, n_fibres=2300, seed=7, jitter=0.03, warp=0.2)
    rng = np.random.default_rng(7)
    transmission = rng.uniform(0.8, 1.2, layout.n_fibres)  # each core's own gain
    scene = np.stack([phantom(SHAPE, seed=seed) for seed in (1, 2)])
    rows, cols = np.round(layout.positions).astype(int).T
    truth = 0.2 + 0.8 * scene[:, rows, cols]  # what each core sees
    background = render_cores(layout, transmission, seed=0)
    raw = np.stack(
        [render_cores(layout, transmission * v, seed=k + 1) for k, v in enumerate(truth)]
    )
    return layout, background, raw, truth


def test_reconstruction_matches_an_independent_interpolation(synthetic_raw):
    layout, background, raw, truth = synthetic_raw
    reconstructor = RawBundleReconstructor(background)
    found = reconstructor.layout
    assert abs(found.n_fibres - layout.n_fibres) <= 0.02 * layout.n_fibres
    distance, nearest = _match(found, layout)
    assert np.mean(distance < 0.5) > 0.98
    # Flat-fielding removes each core's own transmission: the values are the scene's.
    values = reconstructor.core_values(raw)
    close = distance < 0.5
    np.testing.assert_allclose(values[:, close], truth[:, nearest[close]], atol=0.05)
    assert np.abs(values[:, close] - truth[:, nearest[close]]).mean() < 0.01
    images = reconstructor.reconstruct(raw)
    assert images.shape == (2, *SHAPE) and images.dtype == np.float32
    reference = LinearNDInterpolator(found.positions, values.T, fill_value=0)
    grid = np.indices(SHAPE).reshape(2, -1).T
    expected = reference(grid).T.reshape(2, *SHAPE)
    inside = reconstructor.fov_mask
    np.testing.assert_allclose(images[:, inside], expected[:, inside], atol=1e-4)
    assert np.all(images[:, ~inside] == 0)
    # The background itself reconstructs to 1 everywhere inside the bundle.
    np.testing.assert_allclose(reconstructor.reconstruct(background)[inside], 1, atol=1e-4)


def _match(found: FibreLayout, truth: FibreLayout):
    from scipy.spatial import cKDTree

    return cKDTree(truth.positions).query(found.positions)


def test_detection_heuristic(synthetic_raw):
    _, background, raw, _ = synthetic_raw
    assert looks_like_raw_bundle(background) and looks_like_raw_bundle(raw[0])
    assert not looks_like_raw_bundle(phantom(SHAPE, seed=3))
    assert not looks_like_raw_bundle(np.zeros(SHAPE))


def test_read_sequence_reconstructs_lazily_with_a_background_file(tmp_path, synthetic_raw):
    _, background, raw, _ = synthetic_raw
    tifffile.imwrite(tmp_path / "scan.tif", (raw * 100).astype(np.float32))
    tifffile.imwrite(tmp_path / "scan_back.tif", (background * 100).astype(np.float32))
    assert find_background(tmp_path / "scan.tif") == tmp_path / "scan_back.tif"
    assert find_background(tmp_path / "scan_back.tif") is None
    frames, meta = read_sequence(tmp_path / "scan.tif", background=tmp_path / "scan_back.tif")
    assert isinstance(frames, LazyFrames) and frames.shape == (2, *SHAPE)
    assert meta["reconstructed_from_raw"] and meta["background"].endswith("scan_back.tif")
    direct = RawBundleReconstructor(background * 100).reconstruct(raw[1] * 100)
    np.testing.assert_allclose(frames[1], direct, atol=1e-5)
    np.testing.assert_array_equal(meta["fov_mask"], direct != 0)
    with pytest.raises(ValueError, match="background"):
        read_sequence(tmp_path / "scan.tif", background=np.ones((10, 10)))


def test_real_bundle_frames(raw_bundle_frames):
    raw, background = raw_bundle_frames
    assert looks_like_raw_bundle(background) and looks_like_raw_bundle(raw)
    reconstructor = RawBundleReconstructor(background)
    assert 25000 < reconstructor.layout.n_fibres < 30000  # ~27.5k cores in this bundle
    image = reconstructor.reconstruct(raw)
    inside = reconstructor.fov_mask
    # The bundle is a disc of about 0.5 of the frame; specks outside it are not cores.
    assert 0.4 < inside.mean() < 0.6
    flat = reconstructor.reconstruct(background)
    np.testing.assert_allclose(flat[inside], 1, atol=1e-4)
    assert 0.2 < np.median(image[inside]) < 1.0 and image[inside].max() < 1.6


def test_napari_reader_offers_the_reconstruction(tmp_path, synthetic_raw):
    from napari_pclesr._napari._reader import get_reader

    _, background, raw, _ = synthetic_raw
    tifffile.imwrite(tmp_path / "scan.tif", raw.astype(np.float32))
    with pytest.warns(UserWarning, match="scan_back.tif"):  # no background yet: a hint
        layers = get_reader(str(tmp_path / "scan.tif"))(str(tmp_path / "scan.tif"))
    assert [kind for *_, kind in layers] == ["image"]
    tifffile.imwrite(tmp_path / "scan_back.tif", background.astype(np.float32))
    layers = get_reader(str(tmp_path / "scan.tif"))(str(tmp_path / "scan.tif"))
    assert [kind for *_, kind in layers] == ["image", "image", "points"]
    _, (reconstructed, attributes, _), (cores, points, _) = layers
    assert attributes["name"] == "scan reconstructed" and reconstructed.shape == (2, *SHAPE)
    layout = attributes["metadata"]["fibre_layout"]
    assert points["metadata"]["fibre_layout"] is layout and len(cores) == layout.n_fibres
    np.testing.assert_allclose(
        reconstructed[0], RawBundleReconstructor(background).reconstruct(raw[0]), atol=1e-5
    )
    # The background opened on its own is not reconstructed against itself.
    assert len(get_reader(str(tmp_path / "scan_back.tif"))(str(tmp_path / "scan_back.tif"))) == 1
