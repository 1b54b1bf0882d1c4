"""Procedural phantoms, phantom sequences and local natural images."""

import numpy as np
import pytest
from scipy import ndimage

from napari_pclesr import FibreLayout, Simulator
from napari_pclesr.data import NATURAL_IMAGES, natural_image, phantom, phantom_sequence


@pytest.mark.parametrize("kind", ["colon", "oesophagus", "mixed"])
def test_phantom_is_seeded_grey_and_in_range(kind):
    image = phantom((96, 120), kind=kind, seed=4)
    assert image.shape == (96, 120) and image.dtype == np.float32
    assert image.min() >= 0 and image.max() <= 1
    assert image.std() > 0.1  # real structure, not a flat field
    assert np.array_equal(image, phantom((96, 120), kind=kind, seed=4))
    assert not np.array_equal(image, phantom((96, 120), kind=kind, seed=5))


def test_colon_phantom_has_dark_lumens_inside_bright_rings():
    image = phantom((400, 400), kind="colon", seed=0)
    dark = image < 0.12
    labels, n_regions = ndimage.label(dark)
    sizes = ndimage.sum(dark, labels, range(1, n_regions + 1))
    lumens = np.flatnonzero(sizes > 80) + 1
    assert len(lumens) >= 3
    lumen = np.isin(labels, lumens)
    ring = ndimage.binary_dilation(lumen, iterations=18) & ~ndimage.binary_dilation(
        lumen, iterations=5
    )
    assert image[ring].mean() > image[lumen].mean() + 0.4
    assert image[ring].mean() > image.mean() + 0.1


def test_phantom_holds_detail_finer_than_the_fibre_pitch():
    """The bundle (pitch ~3 px) must lose detail that the HR phantom has."""
    shape = (192, 192)
    hr = phantom(shape, seed=1)
    layout = FibreLayout.synthetic(shape, n_fibres=round(30000 * (192 / 576) ** 2), seed=1)
    simulator = Simulator(layout)
    lr = simulator.simulate(hr, sigma_mult=0, sigma_add=0)
    inner = (slice(40, 152), slice(40, 152))

    def fine_energy(image):
        detail = image - ndimage.gaussian_filter(image, 1.5)
        return np.mean(detail[inner] ** 2)

    assert fine_energy(lr) < 0.5 * fine_energy(hr)


def test_phantom_rejects_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        phantom((64, 64), kind="liver")
    with pytest.raises(ValueError, match="at least"):
        phantom((4, 64))


def test_phantom_sequence_frames_are_crops_of_the_canvas_at_the_offsets():
    sequence = phantom_sequence(n_frames=6, shape=(80, 96), seed=3, speed=5.0)
    assert sequence.frames.shape == (6, 80, 96)
    assert sequence.offsets.shape == (6, 2)
    steps = np.linalg.norm(np.diff(sequence.offsets, axis=0), axis=1)
    assert np.allclose(steps, 5.0)
    rows, cols = np.indices((80, 96), dtype=np.float64)
    for frame, (row, col) in zip(sequence.frames, sequence.offsets, strict=True):
        expected = ndimage.map_coordinates(sequence.canvas, [rows + row, cols + col], order=3)
        assert np.abs(frame - np.clip(expected, 0, 1))[4:-4, 4:-4].max() < 0.02
    assert sequence.frames.dtype == np.float32


def test_integer_offsets_give_exact_canvas_crops():
    sequence = phantom_sequence(n_frames=3, shape=(40, 40), seed=0, speed=0.0)
    row, col = sequence.offsets[0]
    assert row == int(row) and col == int(col)
    crop = sequence.canvas[int(row) : int(row) + 40, int(col) : int(col) + 40]
    assert np.allclose(sequence.frames[0], crop, atol=1e-6)


def test_phantom_sequence_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_frames"):
        phantom_sequence(n_frames=0)
    with pytest.raises(ValueError, match="speed"):
        phantom_sequence(n_frames=2, speed=-1)


@pytest.mark.parametrize("name", NATURAL_IMAGES)
def test_natural_images_are_grey_and_local(name):
    image = natural_image(name)
    assert image.ndim == 2 and image.dtype == np.float32
    assert image.min() >= 0 and image.max() <= 1


def test_unknown_natural_image():
    with pytest.raises(ValueError, match="immunohistochemistry"):
        natural_image("lena")


def test_image_sequence_crops_the_image_at_its_offsets():
    from napari_pclesr.data import image_sequence

    canvas = np.random.default_rng(0).random((120, 140)).astype(np.float32)
    still = image_sequence(canvas, n_frames=3, shape=(48, 40), seed=2, speed=0.0)
    top, left = still.offsets[0].astype(int)
    assert np.all(still.offsets == still.offsets.round())  # a still probe: whole pixels
    for frame in still.frames:
        np.testing.assert_allclose(frame, canvas[top : top + 48, left : left + 40], atol=1e-6)
    moving = image_sequence(canvas, n_frames=5, shape=(48, 40), seed=2, speed=3.0)
    assert moving.frames.shape == (5, 48, 40)
    assert np.ptp(moving.offsets, axis=0).max() > 5
    with pytest.raises(ValueError, match="too small"):
        image_sequence(canvas, n_frames=5, shape=(118, 40), seed=2, speed=3.0)
