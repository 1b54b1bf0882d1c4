"""The fibre-bundle simulator against brute-force and independent references."""

import numpy as np
import pytest
from scipy.interpolate import LinearNDInterpolator

from napari_pclesr import FibreLayout, Simulator, simulate_lr
from napari_pclesr.simulate.noise import add_fibre_noise

SHAPE = (60, 52)


@pytest.fixture(scope="module")
def layout():
    return FibreLayout.synthetic(SHAPE, n_fibres=320, seed=2)


@pytest.fixture(scope="module")
def simulator(layout):
    return Simulator(layout)


def pixel_grid(shape):
    return np.indices(shape).reshape(2, -1).T.astype(np.float64)


def test_constant_image_stays_constant_inside_the_fov(simulator):
    lr = simulator.simulate(np.full(SHAPE, 0.37), sigma_mult=0, sigma_add=0)
    assert np.allclose(lr[simulator.fov_mask], 0.37, atol=1e-6)
    assert np.all(lr[~simulator.fov_mask] == 0)


def test_linear_ramp_is_reproduced_exactly_inside_the_hull(layout, simulator):
    def ramp(rows, cols):
        return 0.3 + 0.011 * rows - 0.007 * cols

    image = simulator.interpolate(ramp(*layout.positions.T))
    rows, cols = np.indices(SHAPE)
    inside = simulator.fov_mask
    assert inside.mean() > 0.5
    assert np.allclose(image[inside], ramp(rows, cols)[inside], atol=2e-6)


def test_interpolation_matches_scipy_linear_nd_interpolator(layout, simulator):
    values = np.random.default_rng(0).random(layout.n_fibres)
    reference = LinearNDInterpolator(layout.positions, values)(pixel_grid(SHAPE)).reshape(SHAPE)
    assert np.array_equal(simulator.fov_mask, np.isfinite(reference))
    image = simulator.interpolate(values)
    assert np.allclose(image[simulator.fov_mask], reference[simulator.fov_mask], atol=1e-6)


def brute_force_voronoi_means(layout, image, cell_radius):
    pixels = pixel_grid(layout.shape)
    distance = np.linalg.norm(pixels[:, None, :] - layout.positions[None], axis=-1)
    owner = distance.argmin(axis=1)
    owned = distance.min(axis=1) <= cell_radius
    values = image.ravel()
    return np.array([values[(owner == fibre) & owned].mean() for fibre in range(layout.n_fibres)])


@pytest.mark.parametrize("cell_radius", [None, np.inf])
def test_voronoi_means_equal_brute_force(layout, cell_radius):
    simulator = Simulator(layout, cell_radius=cell_radius)
    image = np.random.default_rng(1).random(SHAPE)
    expected = brute_force_voronoi_means(layout, image, simulator.cell_radius)
    assert simulator.empty_cells.size == 0
    assert np.allclose(simulator.fibre_signals(image), expected, atol=1e-6)


def test_default_cell_radius_keeps_cells_off_the_outside(layout, simulator):
    image = np.zeros(SHAPE)
    image[simulator.fov_mask] = 1.0
    unbounded = Simulator(layout, cell_radius=np.inf)
    # Unbounded edge cells reach the dark outside; bounded ones mostly do not.
    assert simulator.fibre_signals(image).mean() > unbounded.fibre_signals(image).mean()


def test_empty_voronoi_cell_takes_its_nearest_pixel():
    # The middle fibre sits between two fibres that own every pixel centre around it.
    positions = [[2.0, 2.0], [2.0, 3.0], [2.0, 2.4], [8.0, 3.0], [5.0, 9.0], [9.0, 9.0]]
    layout = FibreLayout(positions, (12, 12))
    simulator = Simulator(layout, cell_radius=np.inf)
    assert simulator.empty_cells.tolist() == [2]
    image = np.arange(144, dtype=float).reshape(12, 12)
    assert simulator.fibre_signals(image)[2] == image[2, 2]


def test_nearest7_signal_is_the_mean_of_the_seven_nearest_pixels(layout):
    simulator = Simulator(layout, signal="nearest7")
    image = np.random.default_rng(3).random(SHAPE)
    pixels = pixel_grid(SHAPE)
    distance = np.linalg.norm(pixels[:, None, :] - layout.positions[None], axis=-1)
    nearest = np.argsort(distance, axis=0, kind="stable")[:7]
    expected = image.ravel()[nearest].mean(axis=0)
    assert np.allclose(simulator.fibre_signals(image), expected, atol=1e-6)


def test_noise_statistics_match_the_sigmas():
    rng = np.random.default_rng(0)
    signals = rng.uniform(0.2, 0.9, size=(4, 100_000)).astype(np.float32)
    spread = signals.max(axis=1, keepdims=True) - signals.min(axis=1, keepdims=True)
    multiplicative = add_fibre_noise(signals, 0.05, 0.0, rng) / signals - 1
    assert multiplicative.mean() == pytest.approx(0, abs=1e-3)
    assert multiplicative.std() == pytest.approx(0.05, rel=0.02)
    additive = (add_fibre_noise(signals, 0.0, 0.01, rng) - signals) / spread
    assert additive.mean() == pytest.approx(0, abs=1e-4)
    assert additive.std() == pytest.approx(0.01, rel=0.02)
    both = add_fibre_noise(signals, 0.05, 0.01, rng) - signals
    expected_var = (0.05 * signals) ** 2 + (0.01 * spread) ** 2
    assert np.mean(both**2 / expected_var) == pytest.approx(1, rel=0.02)


def test_simulated_noise_propagates_through_interpolation(simulator):
    weights = simulator._interpolation_matrix
    per_pixel_gain = np.sqrt(np.asarray(weights.multiply(weights).sum(axis=1))).ravel()
    stack = np.full((200, *SHAPE), 0.5, dtype=np.float32)
    lr = simulator.simulate(stack, sigma_mult=0.05, sigma_add=0, seed=0)
    inside = simulator.fov_mask.ravel()
    z = (lr.reshape(200, -1)[:, inside] - 0.5) / (0.5 * 0.05 * per_pixel_gain[inside])
    assert z.mean() == pytest.approx(0, abs=0.02)
    assert z.std() == pytest.approx(1, rel=0.03)


def test_seed_reproducibility_and_batching(simulator):
    rng = np.random.default_rng(4)
    stack = rng.random((5, *SHAPE)).astype(np.float32)
    first = simulator.simulate(stack, seed=11)
    assert np.array_equal(first, simulator.simulate(stack, seed=11))
    assert not np.array_equal(first, simulator.simulate(stack, seed=12))
    clean_stack = simulator.simulate(stack, sigma_mult=0, sigma_add=0)
    clean_frames = [simulator.simulate(frame, sigma_mult=0, sigma_add=0) for frame in stack]
    assert np.array_equal(clean_stack, np.stack(clean_frames))
    assert first.dtype == np.float32 and first.shape == stack.shape
    assert simulator.fibre_signals(stack).shape == (5, simulator.layout.n_fibres)


def test_integer_input_is_accepted(simulator):
    image = (np.random.default_rng(5).random(SHAPE) * 255).astype(np.uint8)
    lr = simulator.simulate(image, sigma_mult=0, sigma_add=0)
    expected = simulator.simulate(image.astype(np.float32), sigma_mult=0, sigma_add=0)
    assert np.array_equal(lr, expected)


def test_one_shot_form_equals_the_simulator(layout, simulator):
    image = np.random.default_rng(6).random(SHAPE)
    assert np.array_equal(simulate_lr(image, layout, seed=3), simulator.simulate(image, seed=3))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda sim: sim.simulate(np.zeros(SHAPE), sigma_mult=-0.1), "sigma_mult"),
        (lambda sim: sim.simulate(np.zeros(SHAPE), sigma_add=-1), "sigma_add"),
        (lambda sim: sim.simulate(np.zeros((30, 30))), "layout is for"),
        (lambda sim: sim.simulate(np.full(SHAPE, np.nan)), "NaN"),
        (lambda sim: sim.simulate(np.zeros((*SHAPE, 3))), "RGB"),
        (lambda sim: sim.simulate(np.zeros((0, *SHAPE))), "empty"),
        (lambda sim: sim.simulate(np.zeros(7)), "2-D frame"),
        (lambda sim: sim.simulate(np.array(["a"])), "numeric"),
        (lambda sim: sim.interpolate(np.zeros(5)), "fibres"),
    ],
)
def test_bad_input_raises_a_clear_error(simulator, call, message):
    with pytest.raises(ValueError, match=message):
        call(simulator)


def test_bad_construction_raises(layout):
    with pytest.raises(ValueError, match="signal"):
        Simulator(layout, signal="gaussian")
    with pytest.raises(ValueError, match="cell_radius"):
        Simulator(layout, cell_radius=-1)
    with pytest.raises(TypeError, match="FibreLayout"):
        Simulator(np.zeros((10, 2)))
