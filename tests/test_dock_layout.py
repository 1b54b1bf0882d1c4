"""All the plugin's docks together: screen size, tooltips, lifecycle and UI stalls (xvfb-run).

Each dock is checked where users meet it: docked in a 1,280×800 window beside the canvas,
closed or hidden while it works, and opened while the UI thread's heartbeat is watched.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from dock_helpers import (
    TIMEOUT_MS,
    Heartbeat,
    controls_without_tooltip,
    run_in_event_loop,
    set_up_tiny_training,
    wait_idle,
    wait_ready,
)

from napari_pclesr._napari._manifest import dock_titles
from napari_pclesr.data import phantom

pytestmark = pytest.mark.napari

PLUGIN = "napari-pclesr"
DOCKS = dock_titles()
SCREEN = (1280, 800)
#: The longest the UI thread may work without returning to its event loop.
STALL_LIMIT_S = 0.5
LONG_ERROR = (
    "Super-resolution failed: /home/someone/experiments/"
    + "a_very_long_folder_name_" * 12
    + "/best.pt cannot be read as a checkpoint (UnpicklingError: invalid load key). "
    + "Choose best.pt or last.pt of a training run. " * 6
)


def _add_sample(viewer) -> None:
    from napari_pclesr._napari._sample_data import phantom_sample

    for layer_data, attributes, kind in phantom_sample():  # from a test: made at once
        getattr(viewer, f"add_{kind}")(layer_data, **attributes)


def _open_all_docks(viewer, qtbot) -> dict:
    docks = {}
    for name in DOCKS:
        _, docks[name] = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    for dock in docks.values():
        wait_ready(qtbot, dock)
    return docks


def _sizes(viewer) -> tuple[int, int, int]:
    window = viewer.window._qt_window
    canvas = viewer.window._qt_viewer.canvas.native
    return window.width(), window.height(), canvas.width()


def _settle(qtbot) -> None:
    qtbot.wait(300)


def test_all_docks_fit_a_1280_by_800_window_beside_the_canvas(make_napari_viewer, qtbot):
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QDockWidget

    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(*SCREEN)
    _add_sample(viewer)
    docks = _open_all_docks(viewer, qtbot)
    for dock in docks.values():  # the worst case: a long error everywhere
        dock.report(LONG_ERROR, "error")
    _settle(qtbot)
    width, height, canvas = _sizes(viewer)
    assert (width, height) == SCREEN
    assert canvas >= 0.5 * width
    for dock in docks.values():
        assert dock.status.is_elided() and dock.status.toolTip() == LONG_ERROR
        assert dock.status.height() <= 4 * dock.status.fontMetrics().lineSpacing()

    # The plugin's docks open as tabs of one another, each with the full height: the metrics
    # table shows at least three rows.
    ours = [dw for dw in window.findChildren(QDockWidget) if dw.widget() in docks.values()]
    assert len(ours) == len(DOCKS)
    assert all(window.tabifiedDockWidgets(dw) for dw in ours)
    metrics = docks["SR metrics"]
    metrics.parentWidget().raise_()
    _settle(qtbot)
    table = metrics.table_widget
    assert table.viewport().height() >= 3 * table.verticalHeader().defaultSectionSize() - 2

    # Stacked one above the other instead, they still fit: the window does not grow.
    for dock_widget in ours:
        window.addDockWidget(Qt.RightDockWidgetArea, dock_widget, Qt.Vertical)
        dock_widget.show()
    _settle(qtbot)
    assert not any(window.tabifiedDockWidgets(dw) for dw in ours)
    width, height, canvas = _sizes(viewer)
    assert (width, height) == SCREEN
    assert canvas >= 0.5 * width


def test_every_control_of_every_dock_has_a_tooltip(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    _add_sample(viewer)
    for name, dock in _open_all_docks(viewer, qtbot).items():
        assert controls_without_tooltip(dock) == [], name


def _train_on_a_small_layer(viewer, training, tmp_path) -> None:
    """A long run of a tiny network on one 64×64 phantom: quick to set up."""
    viewer.add_image(phantom((64, 64), seed=9), name="small HR")
    training._source.value = "simulated"
    training._hr_layers.value = [viewer.layers["small HR"]]
    set_up_tiny_training(training, tmp_path / "run", iterations=100_000, val_every=100_000)


def _long_jobs(viewer, docks, tmp_path, qtbot) -> dict:
    """Start a job that runs for a while in each dock (training first, until its first
    step); returns the workers by dock name."""
    training = docks["Train an SR model"]
    _train_on_a_small_layer(viewer, training, tmp_path)
    workers = {"Train an SR model": training.start()}
    qtbot.waitUntil(lambda: training._progress.value > 0, timeout=TIMEOUT_MS)

    noise = np.random.default_rng(0).random((3000, 64, 64), dtype=np.float32)
    viewer.add_image(noise, name="long stack")
    simulator = docks["Fibre-bundle simulator"]
    simulator._live.value = False
    simulator._image.value = viewer.layers["long stack"]
    workers["Fibre-bundle simulator"] = simulator.simulate()
    inference = docks["Super-resolve (inference)"]
    inference._device.value = "cpu"
    inference._image.value = viewer.layers["long stack"]
    inference._source.value = "richardson_lucy"
    inference._batch_size.value = 1
    workers["Super-resolve (inference)"] = inference.run()
    mosaic = docks["Mosaic / HR-hat"]
    mosaic._device.value = "cpu"
    mosaic._image.value = viewer.layers["long stack"]
    workers["Mosaic / HR-hat"] = mosaic.run()
    metrics = docks["SR metrics"]
    big = np.tile(noise[:20], (1, 4, 4))
    for name in ("big HR-hat", "big LR", "big SR"):
        viewer.add_image(big, name=name)
    metrics.select(["big SR"], "big HR-hat", "big LR")
    workers["SR metrics"] = metrics.worker
    assert all(worker is not None for worker in workers.values()), workers
    return workers


def test_closing_each_dock_mid_run_then_the_viewer_is_clean(
    make_napari_viewer, qtbot, tmp_path, recwarn
):
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer(show=True)
    docks = _open_all_docks(viewer, qtbot)
    workers = _long_jobs(viewer, docks, tmp_path, qtbot)
    layers_before = [layer.name for layer in viewer.layers]
    records = len(notification_manager.records)
    recwarn.clear()  # napari's own start-up warnings (the Qt backend's deprecation)
    for name, dock in docks.items():
        assert _listeners(viewer, dock), name  # it listened while open
        viewer.window.remove_dock_widget(dock.parentWidget())  # napari's × does this
        assert dock.closed, name
        assert _listeners(viewer, dock) == [], name
    for worker in workers.values():
        qtbot.waitUntil(lambda worker=worker: not worker.is_running, timeout=TIMEOUT_MS)
    qtbot.wait(200)
    # Nothing came back from the closed docks: no layer, and no reaction to the viewer.
    assert [layer.name for layer in viewer.layers] == layers_before
    viewer.add_image(np.zeros((5, 7)), name="SR of another size")
    viewer.dims.set_current_step(0, 3)
    messages = [str(record.message) for record in notification_manager.records[records:]]
    # Only the training run says where it left its model.
    last = tmp_path / "run" / "last.pt"
    assert last.is_file()
    assert len(messages) == 1 and str(last) in messages[0], messages
    viewer.close()
    qtbot.wait(100)
    assert [str(warning.message) for warning in recwarn] == []


def _listeners(viewer, dock) -> list[str]:
    """The viewer and layer events that would still call one of ``dock``'s methods."""
    emitters = [
        getattr(viewer.layers.events, name) for name in ("inserted", "removed", "reordered")
    ]
    emitters.append(viewer.dims.events.current_step)
    for layer in viewer.layers:
        emitters += [layer.events.data, layer.events.name]
    found = []
    for emitter in emitters:
        for callback in emitter.callbacks:  # a bound method is kept as (weakref, name)
            owner = callback[0]() if isinstance(callback, tuple) else None
            if owner is dock:
                found.append(callback[1])
    return found


def test_closing_the_viewer_mid_run_stops_every_job(make_napari_viewer, qtbot, tmp_path, recwarn):
    viewer = make_napari_viewer(show=True)
    docks = _open_all_docks(viewer, qtbot)
    workers = _long_jobs(viewer, docks, tmp_path, qtbot)
    recwarn.clear()  # napari's own start-up warnings (the Qt backend's deprecation)
    viewer.close()  # waits (bounded) for the jobs to stop
    assert all(dock.closed for dock in docks.values())
    assert not any(worker.is_running for worker in workers.values())
    assert (tmp_path / "run" / "last.pt").is_file()
    qtbot.wait(100)
    assert [str(warning.message) for warning in recwarn] == []


def test_hiding_the_training_dock_stops_the_run_and_says_where_the_model_is(
    make_napari_viewer, qtbot, tmp_path
):
    viewer = make_napari_viewer(show=True)
    _, training = viewer.window.add_plugin_dock_widget(PLUGIN, "Train an SR model")
    wait_ready(qtbot, training)
    _train_on_a_small_layer(viewer, training, tmp_path)
    training.start()
    qtbot.waitUntil(lambda: training._progress.value > 0, timeout=TIMEOUT_MS)
    training.parentWidget().close()  # the dock's "hide this panel" button
    wait_idle(qtbot, training)
    assert not training.closed  # hidden, not closed: it can be shown again
    last = tmp_path / "run" / "last.pt"
    assert last.is_file()
    assert training.status.message.startswith("Stopped at step")
    assert str(last) in training.status.message


@pytest.mark.parametrize("action", [*DOCKS, "phantom sample"])
def test_docking_or_opening_never_stalls_the_ui_thread(make_napari_viewer, qtbot, action):
    """The UI thread's own work between two heartbeats stays under 0.5 s.

    The heartbeat also measures the wall time of each gap, but on a shared 2-core machine
    that includes waiting for the CPU; the UI thread's CPU time per gap is what our code
    puts on it. torch and scipy are imported first: a session imports them once, in a worker
    thread (their import time is measured by benchmarks/bench_ui_stalls.py).
    """
    import scipy.stats  # noqa: F401
    import torch  # noqa: F401

    import napari_pclesr.baselines
    import napari_pclesr.train  # noqa: F401

    viewer = make_napari_viewer(show=True)
    if action != "phantom sample":
        _add_sample(viewer)
    else:  # napari's one-time set-up of its first image and points layers is not ours
        viewer.add_image(np.zeros((8, 8)))
        viewer.add_points(np.zeros((1, 2)))
        viewer.layers.clear()

    def act():
        if action == "phantom sample":
            viewer.open_sample(PLUGIN, "phantom")
        else:
            viewer.window.add_plugin_dock_widget(PLUGIN, action)

    heartbeat = Heartbeat()
    heartbeat.start()
    run_in_event_loop(qtbot, act, settle_ms=1500)
    if action == "phantom sample":
        qtbot.waitUntil(lambda: "fibre layout" in viewer.layers, timeout=TIMEOUT_MS)
        assert viewer.layers["LR (simulated)"].data.any()  # the placeholder was filled
    heartbeat.stop()
    print(
        f"{action}: longest gap {heartbeat.longest_wall:.3f} s wall, "
        f"{heartbeat.longest_cpu:.3f} s UI-thread CPU"
    )
    assert heartbeat.longest_cpu < STALL_LIMIT_S


def test_status_line_wraps_elides_and_never_widens():
    from qtpy.QtGui import QFontMetrics

    from napari_pclesr._napari._docks import STATUS_LINES, StatusLine, wrap_text

    status = StatusLine()
    metrics = QFontMetrics(status.font())
    width = 200
    lines = wrap_text(LONG_ERROR, metrics, width, STATUS_LINES)
    assert len(lines) == STATUS_LINES
    assert all(metrics.horizontalAdvance(line) <= width for line in lines)
    assert lines[-1].endswith("…")
    short = wrap_text("Stopped at step 12.\nModel so far: /tmp/run/last.pt.", metrics, 400, 3)
    assert short == ["Stopped at step 12.", "Model so far: /tmp/run/last.pt."]
    status.resize(width, 50)
    status.set_message(LONG_ERROR, "error")
    assert status.message == LONG_ERROR == status.toolTip()
    assert status.is_elided() and status.level == "error"
    assert status.minimumSizeHint().width() < 50
    status.set_message("Done.")
    assert not status.is_elided()
    assert status.height() < 2 * metrics.lineSpacing()


def test_plot_ticks_and_bars(qtbot):  # qtbot: a QApplication for the widgets
    from napari_pclesr._napari._plots import Bar, BarChart, LinePlot, nice_ticks, tick_label

    assert nice_ticks(0.0, 1.0) == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    # The step is the smallest round one giving at most ``target`` intervals.
    assert nice_ticks(0.013, 0.047) == pytest.approx([0.02, 0.03, 0.04])
    assert nice_ticks(-3.0, 12.0) == pytest.approx([0, 5, 10])
    assert tick_label(0.25, [0.0, 0.25]) == "0.25" and tick_label(200.0, [0.0, 100.0]) == "200"
    plot = LinePlot("step", "loss", log_y=True)
    plot.add_series("train", "training")
    plot.resize(300, 200)
    for step, loss in enumerate(np.geomspace(1.0, 0.01, 20)):
        plot.append("train", step, loss)
    plot.append("train", 20, 0.0)  # not on a log axis: left out of the drawing, kept in data
    assert plot.n_points("train") == 21
    plot.grab()
    # The 20 positive points are drawn left to right, each lower than the one before (a
    # falling loss); the zero is not drawn on the log axis.
    drawn = [(px, py, x) for px, py, x, key, _ in plot._drawn if key == "train"]
    assert [x for _, _, x in drawn] == list(range(20))
    assert all(b[0] > a[0] and b[1] > a[1] for a, b in itertools.pairwise(drawn))
    chart = BarChart("SSIM")
    chart.set_bars([Bar("LR", 0.55, 0.02), Bar("SR · fsrcnn", 0.33, float("nan"))], digits=2)
    assert chart.describe(chart.bars[0]) == "LR: 0.55 ± 0.02"
    assert chart.describe(chart.bars[1]) == "SR · fsrcnn: 0.33"
    chart.resize(300, 200)
    chart.grab()
    assert (
        len(chart._bar_rects) == 2 and chart._bar_rects[0].height() > chart._bar_rects[1].height()
    )
