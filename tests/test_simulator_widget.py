"""The simulator dock in a real napari viewer (run under xvfb-run)."""

import numpy as np
import pytest
from dock_helpers import wait_idle

from napari_pclesr import FibreLayout, Simulator
from napari_pclesr.data import phantom
from napari_pclesr.fibre import fibre_count_for
from napari_pclesr.io import write_layout

pytestmark = pytest.mark.napari


@pytest.fixture
def dock(make_napari_viewer):
    from napari_pclesr._napari._simulator_widget import SimulatorWidget

    viewer = make_napari_viewer()
    widget = SimulatorWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget


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
    wait_idle(qtbot, widget)

    layer = viewer.layers["LR (simulated)"]
    layout = FibreLayout.synthetic((72, 80), fibre_count_for((72, 80)), seed=0)
    expected = Simulator(layout).simulate(hr, 0.1, 0.02, seed=np.random.default_rng(7))
    assert np.array_equal(layer.data, expected)
    assert layer.metadata["simulator"]["sigma_mult"] == pytest.approx(0.1)
    assert layer.metadata["simulated_from"] == "hr"
    assert np.array_equal(layer.metadata["fov_mask"], expected != 0)
    assert "Simulated 'hr' through" in widget.status.message


def test_live_update_rewrites_the_same_layer(dock, qtbot):
    viewer, widget = dock
    viewer.add_image(phantom((48, 48), seed=1), name="hr")
    widget._image.value = viewer.layers["hr"]
    widget.simulate()
    wait_idle(qtbot, widget)
    first = viewer.layers["LR (simulated)"].data.copy()
    widget._sigma_mult.value = 0.2  # live: starts a worker by itself
    wait_idle(qtbot, widget)
    qtbot.waitUntil(
        lambda: not np.array_equal(viewer.layers["LR (simulated)"].data, first), timeout=30000
    )
    assert len([layer for layer in viewer.layers if "simulated" in layer.name]) == 1


def test_the_layout_chooser_lists_points_layers_and_files_only(dock, qtbot, tmp_path):
    viewer, widget = dock
    layout = FibreLayout.synthetic((40, 40), n_fibres=200, seed=3)
    viewer.add_points(layout.positions, name="fibres", metadata={"fibre_layout": layout})
    # An image layer carrying a layout (as a simulated LR does) is not a layout to choose.
    viewer.add_image(phantom((40, 40), seed=0), name="hr", metadata={"fibre_layout": layout})
    viewer.add_image(phantom((50, 40), seed=0), name="wrong size")
    combo = widget._layout_source.native
    labels = [combo.itemText(index) for index in range(combo.count())]
    assert labels == ["synthetic bundle", "layout file…", "fibres"]

    widget._live.value = False
    widget._layout_source.value = viewer.layers["fibres"]
    widget._image.value = viewer.layers["hr"]
    widget.simulate()
    wait_idle(qtbot, widget)
    assert viewer.layers["LR (simulated)"].metadata["fibre_layout"] is layout

    widget._image.value = viewer.layers["wrong size"]
    assert widget.simulate() is None
    assert "(40, 40) grid" in widget.status.message

    # A layout file, chosen in the dock.
    path = write_layout(tmp_path / "bundle.csv", layout)
    widget._layout_source.value = "file"
    assert widget._layout_file.native.isVisibleTo(widget)
    widget._layout_file.value = path
    widget._image.value = viewer.layers["hr"]
    widget.simulate()
    wait_idle(qtbot, widget)
    simulated = viewer.layers["LR (simulated)"]
    assert simulated.metadata["fibre_layout"] == layout
    expected = Simulator(layout).simulate(
        viewer.layers["hr"].data, 0.05, 0.01, seed=np.random.default_rng(0)
    )
    np.testing.assert_array_equal(simulated.data, expected)


def test_plain_points_on_the_image_grid_serve_as_a_layout(dock, qtbot):
    viewer, widget = dock
    layout = FibreLayout.synthetic((40, 40), n_fibres=200, seed=4)
    viewer.add_points(layout.positions, name="my points")
    viewer.add_image(phantom((40, 40), seed=5), name="hr")
    widget._live.value = False
    widget._layout_source.value = viewer.layers["my points"]
    widget._image.value = viewer.layers["hr"]
    widget.simulate()
    wait_idle(qtbot, widget)
    used = viewer.layers["LR (simulated)"].metadata["fibre_layout"]
    np.testing.assert_allclose(used.positions, layout.positions)
    assert used.shape == (40, 40)


def test_rgb_layer_gets_a_clear_message(dock):
    viewer, widget = dock
    viewer.add_image(np.zeros((32, 32, 3), np.uint8), name="colour", rgb=True)
    widget._live.value = False
    widget._image.value = viewer.layers["colour"]
    assert widget.simulate() is None
    assert "RGB" in widget.status.message and widget.status.level == "error"
    assert len(viewer.layers) == 1


def test_stop_ends_a_long_stack_early(dock, qtbot):
    viewer, widget = dock
    viewer.add_image(np.zeros((400, 48, 48), np.float32), name="stack")
    widget._live.value = False
    widget._image.value = viewer.layers["stack"]
    widget.simulate()
    widget.stop()
    wait_idle(qtbot, widget)
    assert "LR (simulated)" not in viewer.layers
    assert widget._run.enabled
    assert widget.status.message.startswith("Stopped")
