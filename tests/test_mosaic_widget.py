"""The Mosaic / HR-hat dock in a real napari viewer (run under xvfb-run)."""

import numpy as np
import pytest

from napari_pclesr import FibreLayout, Simulator
from napari_pclesr.data import phantom_sequence
from napari_pclesr.fibre import fibre_count_for

pytestmark = pytest.mark.napari

SIZE = 128


@pytest.fixture(scope="module")
def sequence():
    truth = phantom_sequence(10, (SIZE, SIZE), seed=2, speed=3.0)
    simulator = Simulator(
        FibreLayout.synthetic((SIZE, SIZE), fibre_count_for((SIZE, SIZE)), seed=0)
    )
    hr = truth.frames.copy()
    hr[6] = 0.01  # a dark frame
    return truth, simulator, simulator.simulate(hr, seed=0)


@pytest.fixture
def dock(make_napari_viewer, qtbot, sequence):
    from napari_pclesr._napari._mosaic_widget import MosaicWidget

    truth, simulator, lr = sequence
    viewer = make_napari_viewer()
    metadata = {
        "fov_mask": simulator.fov_mask,
        "fibre_layout": simulator.layout,
        "true_offsets": truth.offsets,
    }
    viewer.add_image(lr, name="seq", metadata=metadata)
    widget = MosaicWidget(viewer)
    viewer.window.add_dock_widget(widget)
    qtbot.waitUntil(lambda: widget.ready, timeout=60000)
    assert widget._image.value is viewer.layers["seq"]  # the only LR-like layer
    widget._device.value = "cpu"
    return viewer, widget


def status(widget) -> str:
    return widget.status.message


def wait_for(qtbot, widget):
    assert widget.worker is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60000)


def test_run_adds_mosaic_hr_hat_and_a_clickable_quality_plot(dock, qtbot, sequence):
    viewer, widget = dock
    lr = sequence[2]
    progress = []
    worker = widget.run()
    worker.yielded.connect(progress.append)
    assert not widget._run.enabled and widget._stop.enabled
    wait_for(qtbot, widget)

    assert "Done in" in status(widget) and "9/10 frames kept" in status(widget)
    assert "offsets vs truth RMS" in status(widget)
    assert progress and progress[-1].stage == "mosaic"
    hr_hat = viewer.layers["seq HR-hat"]
    assert hr_hat.data.shape == lr.shape
    assert np.isnan(np.asarray(hr_hat.data[6])).all()
    assert np.isfinite(np.asarray(hr_hat.data[5])).all()
    mosaic = viewer.layers["seq mosaic"]
    assert mosaic.data.ndim == 2 and mosaic.data.shape[0] > SIZE
    # Placed under frame 0 (the first frame of the only segment) in the viewer.
    assert tuple(mosaic.translate) == tuple(float(v) for v in mosaic.metadata["origin"])

    plot = widget.plot
    assert plot.n_points("kept") == 9
    assert plot.series["rejected"].xs == [6]
    assert plot.h_lines == [(pytest.approx(0.7), plot.series["rejected"].colour)]
    # A click on frame 6's cross moves the viewer there, and the cursor follows.
    from qtpy.QtCore import Qt

    plot.grab()  # lays the points out
    qtbot.mouseClick(plot, Qt.LeftButton, pos=plot.pixel_of("rejected", 0).toPoint())
    assert viewer.dims.current_step[0] == 6
    assert plot.cursor_x == 6
    assert widget._run.enabled and not widget._stop.enabled


def test_fibre_fusion_uses_the_layer_layout(dock, qtbot):
    viewer, widget = dock
    widget._method.value = "fibre"
    widget.run()
    wait_for(qtbot, widget)
    assert "seq HR-hat" in viewer.layers and "Done in" in status(widget)


def test_stop_ends_the_run_without_adding_layers(dock, qtbot):
    viewer, widget = dock
    widget._model.value = "affine"
    worker = widget.run()
    widget.stop()
    wait_for(qtbot, widget)
    assert worker.abort_requested
    assert [layer.name for layer in viewer.layers] == ["seq"]
    assert widget._run.enabled


def test_bad_input_is_reported_not_raised(dock, qtbot):
    viewer, widget = dock
    viewer.add_image(np.zeros((32, 32)), name="frame")
    widget._image.value = viewer.layers["frame"]
    assert widget.run() is None
    assert "single frame" in status(widget)
    viewer.add_image(np.zeros((4, 32, 32)), name="blank")
    widget._image.value = viewer.layers["blank"]
    widget.run()
    wait_for(qtbot, widget)
    assert "Mosaic failed" in status(widget) and "dark or blank" in status(widget)
