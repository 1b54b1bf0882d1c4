"""The simulator dock in a real napari viewer (run under xvfb-run)."""

import numpy as np
import pytest

from napari_pclesr import FibreLayout, Simulator
from napari_pclesr.data import phantom

pytestmark = pytest.mark.napari


@pytest.fixture
def dock(make_napari_viewer):
    from napari_pclesr._napari._simulator_widget import SimulatorWidget

    viewer = make_napari_viewer()
    widget = SimulatorWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget


def wait_for(qtbot, widget):
    """Wait until the widget's worker has finished and the widget has handled it.

    (Waiting for the worker's own ``finished`` signal would miss one that came already.)
    """
    assert widget.worker is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30000)


def test_simulates_the_selected_layer_with_the_chosen_sigmas(dock, qtbot):
    viewer, widget = dock
    hr = phantom((72, 80), seed=2)
    viewer.add_image(hr, name="hr")
    widget._live.value = False
    widget._image.value = viewer.layers["hr"]
    widget._sigma_mult.value = 0.1
    widget._sigma_add.value = 0.02
    widget._seed.value = 7
    widget.simulate()
    wait_for(qtbot, widget)

    layer = viewer.layers["hr LR (simulated)"]
    layout = FibreLayout.synthetic((72, 80), round(30000 * 72 * 80 / 576**2), seed=0)
    expected = Simulator(layout).simulate(hr, 0.1, 0.02, seed=np.random.default_rng(7))
    assert np.array_equal(layer.data, expected)
    assert layer.metadata["simulator"]["sigma_mult"] == pytest.approx(0.1)
    assert np.array_equal(layer.metadata["fov_mask"], expected != 0)
    assert "Simulated through" in widget._status.value


def test_live_update_rewrites_the_same_layer(dock, qtbot):
    viewer, widget = dock
    viewer.add_image(phantom((48, 48), seed=1), name="hr")
    widget._image.value = viewer.layers["hr"]
    widget.simulate()
    wait_for(qtbot, widget)
    first = viewer.layers["hr LR (simulated)"].data.copy()
    widget._sigma_mult.value = 0.2  # live: starts a worker by itself
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30000)
    qtbot.waitUntil(
        lambda: not np.array_equal(viewer.layers["hr LR (simulated)"].data, first), timeout=30000
    )
    assert len([layer for layer in viewer.layers if "simulated" in layer.name]) == 1


def test_uses_a_layout_from_a_points_layer_and_checks_its_grid(dock, qtbot):
    viewer, widget = dock
    layout = FibreLayout.synthetic((40, 40), n_fibres=200, seed=3)
    viewer.add_points(layout.positions, name="fibres", metadata={"fibre_layout": layout})
    viewer.add_image(phantom((40, 40), seed=0), name="hr")
    viewer.add_image(phantom((50, 40), seed=0), name="wrong size")
    widget.reset_choices()
    widget._live.value = False
    widget._layout_source.value = "fibres"
    widget._image.value = viewer.layers["hr"]
    widget.simulate()
    wait_for(qtbot, widget)
    assert viewer.layers["hr LR (simulated)"].metadata["fibre_layout"] is layout

    widget._image.value = viewer.layers["wrong size"]
    assert widget.simulate() is None
    assert "(40, 40) grid" in widget._status.value


def test_rgb_layer_gets_a_clear_message(dock):
    viewer, widget = dock
    viewer.add_image(np.zeros((32, 32, 3), np.uint8), name="colour", rgb=True)
    widget._live.value = False
    widget._image.value = viewer.layers["colour"]
    assert widget.simulate() is None
    assert "RGB" in widget._status.value
    assert len(viewer.layers) == 1


def test_stop_ends_a_long_stack_early(dock, qtbot):
    viewer, widget = dock
    viewer.add_image(np.zeros((400, 48, 48), np.float32), name="stack")
    widget._live.value = False
    widget._image.value = viewer.layers["stack"]
    widget.simulate()
    widget.stop()
    wait_for(qtbot, widget)
    assert "stack LR (simulated)" not in viewer.layers
    assert widget._run.enabled
