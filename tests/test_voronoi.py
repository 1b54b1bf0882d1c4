"""Voronoi vectorisation in torch, fibre values read back from frames, and ``--layout auto``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from napari_pclesr import FibreLayout, Simulator
from napari_pclesr.data import phantom, phantom_sequence
from napari_pclesr.fibre.auto import estimate_fibre_pitch, layout_for_recording
from napari_pclesr.simulate import FibreSignalReader, VoronoiPooling, pool_slots


@pytest.fixture(scope="module")
def layout():
    return FibreLayout.synthetic((48, 48), n_fibres=300, seed=2)


@pytest.fixture(scope="module")
def pooling(layout):
    return VoronoiPooling(layout)


@pytest.fixture(scope="module")
def owner(layout):
    return brute_force_owner(layout)


def brute_force_owner(layout: FibreLayout) -> np.ndarray:
    """Nearest fibre of every pixel centre (−1 beyond the simulator's cell radius), by loops."""
    radius = 2 * np.median(layout.nearest_neighbour_distances())
    owner = np.full(layout.shape, -1)
    for row in range(layout.shape[0]):
        for col in range(layout.shape[1]):
            distance = np.hypot(*(layout.positions - [row, col]).T)
            if distance.min() <= radius:
                owner[row, col] = int(np.argmin(distance))
    return owner


def test_full_frame_pooling_is_the_cell_mean_and_the_simulators_signals(layout, pooling, owner):
    image = phantom(layout.shape, seed=4)
    pooled = pooling(torch.from_numpy(image)[None, None])[0].numpy()
    np.testing.assert_allclose(pooled, Simulator(layout).fibre_signals(image), atol=1e-6)
    for fibre in range(0, layout.n_fibres, 7):
        cell = owner == fibre
        if cell.any():
            assert pooled[fibre] == pytest.approx(image[cell].mean(), abs=1e-5)


def test_the_gradient_of_a_cell_mean_is_one_over_the_cell_size(layout, pooling, owner):
    image = torch.rand(1, 1, *layout.shape, requires_grad=True)
    pooled = pooling(image)
    for fibre in (10, 150, 299):
        (gradient,) = torch.autograd.grad(pooled[0, fibre], image, retain_graph=True)
        cell = owner == fibre
        expected = np.where(cell, 1.0 / cell.sum(), 0.0)
        np.testing.assert_allclose(gradient[0, 0].numpy(), expected, atol=1e-7)


def test_patch_vectors_hold_exactly_the_cells_inside_the_patch(layout, pooling, owner):
    size = 16
    origins = np.array([[0, 0], [10, 20], [30, 31], [16, 16]])
    images = torch.rand(len(origins), 1, size, size)
    means, valid = pooling.patches(images, origins, size)
    k = pooling.max_fibres_per_patch(size)
    assert means.shape == valid.shape == (len(origins), k)
    fibres = pooling.patch_fibres(origins, size)
    counts = valid.sum(1).tolist()
    assert len(set(counts)) > 1  # the batch mixes patches with different fibre counts
    for index, (row, col) in enumerate(origins):
        window = np.zeros(layout.shape, bool)
        window[row : row + size, col : col + size] = True
        inside = [
            f for f in range(layout.n_fibres) if (owner == f).any() and window[owner == f].all()
        ]
        assert fibres[index, : counts[index]].tolist() == inside
        assert (
            np.all(fibres[index, counts[index] :] == -1) and not valid[index, counts[index] :].any()
        )
        frame = np.zeros(layout.shape, np.float32)
        frame[row : row + size, col : col + size] = images[index, 0].numpy()
        for slot, fibre in enumerate(inside):
            assert float(means[index, slot]) == pytest.approx(
                frame[owner == fibre].mean(), abs=1e-6
            )


def test_k_is_the_most_cells_any_window_holds(layout, pooling, owner):
    size = 12
    fibres = [f for f in range(layout.n_fibres) if (owner == f).any()]
    pixels = [np.nonzero(owner == f) for f in fibres]
    rows_min, rows_max = (np.array([op(r) for r, _ in pixels]) for op in (np.min, np.max))
    cols_min, cols_max = (np.array([op(c) for _, c in pixels]) for op in (np.min, np.max))
    best = 0
    for top in range(layout.shape[0] - size + 1):
        for left in range(layout.shape[1] - size + 1):
            inside = (rows_min >= top) & (rows_max < top + size)
            inside &= (cols_min >= left) & (cols_max < left + size)
            best = max(best, int(inside.sum()))
    assert pooling.max_fibres_per_patch(size) == best


def test_slot_maps_follow_flips_and_rotations(pooling):
    size = 16
    maps = torch.from_numpy(pooling.slot_maps([[8, 8]], size).astype(np.int64))
    k = pooling.max_fibres_per_patch(size)
    image = torch.rand(1, 1, size, size)
    means, valid = pool_slots(image, maps, k)
    turned, turned_valid = pool_slots(
        image.rot90(1, (-2, -1)).flip(-1), maps.rot90(1, (-2, -1)).flip(-1), k
    )
    torch.testing.assert_close(turned, means)
    assert torch.equal(turned_valid, valid)


def test_pooling_rejects_frames_off_the_layouts_grid(pooling):
    with pytest.raises(ValueError, match=r"\(B, 1, 48, 48\)"):
        pooling(torch.rand(1, 1, 40, 40))
    with pytest.raises(ValueError, match="does not fit"):
        pooling.patch_fibres([[40, 40]], 16)


def test_the_reader_recovers_simulated_fibre_signals_exactly():
    layout = FibreLayout.synthetic((64, 64), n_fibres=500, seed=1)
    simulator = Simulator(layout)
    rng = np.random.default_rng(0)
    signals = rng.random((3, layout.n_fibres)).astype(np.float32)
    frames = simulator.interpolate(signals)
    reader = FibreSignalReader(layout, simulator.fov_mask)
    assert reader.resolved.all()
    np.testing.assert_allclose(reader.read(frames), signals, atol=1e-4)
    # Bilinear sampling of the grid at the fibre centres is far off; the reader is not.
    from scipy.ndimage import map_coordinates

    bilinear = map_coordinates(frames[0], layout.positions.T, order=1)
    assert np.abs(bilinear - signals[0]).max() > 0.1


# -- --layout auto ------------------------------------------------------------------------------


def hexagonal_pitch(layout: FibreLayout) -> float:
    """Pitch of the hexagonal lattice with the layout's density in its FoV disc."""
    radius = 0.98 * (min(layout.shape) - 1) / 2
    return float(np.sqrt(2 * np.pi * radius**2 / (np.sqrt(3) * layout.n_fibres)))


@pytest.mark.parametrize(("n_fibres", "seed"), [(4000, 0), (2200, 1)])
def test_layout_auto_measures_the_pitch_of_a_simulated_recording_within_5_percent(n_fibres, seed):
    shape = (224, 224)
    layout = FibreLayout.synthetic(shape, n_fibres=n_fibres, seed=seed)
    simulator = Simulator(layout)
    recording = simulator.simulate(phantom_sequence(8, shape, seed=seed).frames, seed=seed)
    estimate = estimate_fibre_pitch(recording, simulator.fov_mask)
    assert estimate.measured
    assert estimate.pitch == pytest.approx(hexagonal_pitch(layout), rel=0.05)
    choice = layout_for_recording(recording, simulator.fov_mask, seed=3)
    assert "measured" in choice.message
    assert choice.layout.n_fibres == pytest.approx(n_fibres, rel=0.1)
    assert choice.layout.shape == shape


def test_layout_auto_falls_back_to_the_standard_geometry_without_a_fibre_pattern():
    shape = (420, 420)
    smooth = phantom_sequence(4, shape, seed=0).frames  # HR phantoms: no interpolation mesh
    rows, cols = np.indices(shape)
    mask = np.hypot(rows - 209.5, cols - 209.5) < 200
    estimate = estimate_fibre_pitch(smooth, mask)
    assert not estimate.measured and estimate.peak_ratio < 1.3
    choice = layout_for_recording(smooth, mask, (209.5, 209.5, 200.0))
    assert "standard geometry, 30,000 fibres" in choice.message
    assert abs(choice.layout.n_fibres - 30_000) < 300  # a few fall off the grid's edge
    inside = cKDTree(choice.layout.positions).query([209.5, 209.5])[0] < 3
    assert inside
    given = layout_for_recording(smooth, mask, (209.5, 209.5, 200.0), n_fibres=5000)
    assert given.estimate is None and "5,000 fibres in the FoV disc, as given" in given.message


def test_layout_auto_ignores_the_mpeg_block_grid():
    # An 8 × 8 blocky pattern, as MPEG coding leaves, is not a fibre pitch.
    rng = np.random.default_rng(0)
    blocks = np.kron(rng.random((4, 32, 32)), np.ones((8, 8))).astype(np.float32)
    assert not estimate_fibre_pitch(blocks).measured


def test_layout_auto_refuses_the_real_mpeg_export(shared_dir):
    from napari_pclesr.io import read_sequence

    path = shared_dir / "data" / "pcle_colorectal_S01V01.mpeg"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    frames, meta = read_sequence(path)
    estimate = estimate_fibre_pitch(np.asarray(frames[0:240:30]), meta["fov_mask"])
    assert not estimate.measured  # smoothed and compressed: no fibre pattern left
