"""Work napari asks for in the UI thread (reading a file, making a sample), done in a worker.

napari calls readers and sample-data functions in the UI thread and expects layer data back.
Reconstructing raw bundle frames, counting a long video's frames or simulating the phantom
takes seconds, during which the viewer would freeze. When the viewer's event loop is running
(a file dropped on the window, a menu entry), that work goes to a worker thread, with napari's
activity indicator meanwhile: a reader returns napari's null-layer result and its layers are
added when ready; a sample returns placeholder layers at once, filled in when ready. The
napari layer objects are built in the worker too (the first Points layer of a session costs
seconds to set up), so the UI thread only inserts them. From a script (no running event
loop) everything happens at once, so ``viewer.open(...)`` returns the layers as usual.
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable

#: napari's null-layer result: the file was read, its layers come another way.
NO_LAYERS_YET = [(None,)]
#: Metadata key of a placeholder layer, holding the token of the worker that fills it.
PENDING_KEY = "pclesr_pending"
#: When the viewer closes, it waits at most this long for the plugin's work to stop (a
#: training run finishes its step and writes last.pt), so that nothing runs after the window
#: is gone: a worker signalling after Qt tore its objects down raises RuntimeError.
CLOSE_WAIT_S = 60.0


def ui_loop_running() -> bool:
    """Whether this is the UI thread inside a running Qt event loop (an interactive action)."""
    from qtpy.QtCore import QCoreApplication, QThread

    app = QCoreApplication.instance()
    thread = QThread.currentThread()
    return app is not None and thread is app.thread() and thread.loopLevel() > 0


def viewer_is_open(viewer) -> bool:
    """Whether the viewer's window still exists (napari drops it when the viewer closes)."""
    window = getattr(viewer, "window", None)
    return getattr(window, "_qt_window", None) is not None


def layers_now_or_later(
    make_layers: Callable[[], list], description: str, placeholders: list | tuple = ()
) -> list:
    """Layer tuples for a reader or a sample.

    From a script, ``make_layers()`` at once. In an interactive session, ``placeholders``
    (layer tuples of the right names and shapes, e.g. zeros; or napari's null-layer result)
    at once, while ``make_layers`` runs in a worker: its layers then fill the placeholders of
    the same names, or are added.
    """
    if ui_loop_running():
        from napari import current_viewer

        viewer = current_viewer()
        if viewer is not None:
            token = uuid.uuid4().hex
            names = {attributes["name"] for _data, attributes, _kind in placeholders}
            add_layers_in_background(viewer, make_layers, description, token, names)
            return [_marked(datum, token) for datum in placeholders] or NO_LAYERS_YET
    return make_layers()


def _pending_key(token: str, name: str) -> str:
    # By the name asked for: napari renames a layer whose name is taken ("name [1]").
    return f"{token}:{name}"


def _marked(datum: tuple, token: str) -> tuple:
    data, attributes, kind = datum
    key = _pending_key(token, attributes["name"])
    metadata = {**attributes.get("metadata", {}), PENDING_KEY: key}
    return (data, {**attributes, "metadata": metadata}, kind)


def add_layers_in_background(
    viewer,
    make_layers: Callable[[], list],
    description: str,
    token: str = "",
    placeholder_names: set[str] = frozenset(),
):
    """Run ``make_layers()`` (it returns napari layer-data tuples) in a worker thread, build
    the layers there, and put them in ``viewer`` when done; returns the started worker.

    Layers named in ``placeholder_names`` fill the placeholders marked with ``token``; the
    others are added. A failure becomes an error notification naming ``description``.
    Nothing is added to a viewer closed meanwhile.
    """
    from napari.qt.threading import thread_worker

    done = threading.Event()

    def work():
        try:
            return _build_layers(make_layers(), placeholder_names)
        finally:
            done.set()

    worker = thread_worker(work, progress={"total": 0, "desc": description}, ignore_errors=True)()
    waiter = _wait_at_close(viewer, done)
    if waiter is not None:
        worker.finished.connect(waiter.deleteLater)
    worker.returned.connect(functools.partial(_insert, viewer, token))
    worker.errored.connect(functools.partial(_report_failure, description))
    worker.start()
    return worker


def _wait_at_close(viewer, done: threading.Event):
    """Make the viewer's window wait (bounded) for ``done`` if it closes; returns the waiting
    object (delete it once the work is over), or None without a window."""
    from qtpy.QtCore import QEvent, QObject

    window = getattr(viewer.window, "_qt_window", None)
    if window is None:
        return None

    class CloseWaiter(QObject):
        def eventFilter(self, _watched, event) -> bool:
            if event.type() == QEvent.Close:
                done.wait(CLOSE_WAIT_S)
            return False

    waiter = CloseWaiter(window)  # deleted with the window at the latest
    window.installEventFilter(waiter)
    return waiter


def _build_layers(layer_data: list, placeholder_names) -> list:
    """napari layers for the tuples that fill no placeholder (those stay tuples)."""
    from napari.layers import Layer

    return [
        datum if datum[1].get("name") in placeholder_names else Layer.create(*datum)
        for datum in layer_data
    ]


def _insert(viewer, token: str, built: list) -> None:
    """Put the built layers in the viewer, one per turn of the event loop: napari's own work
    for a new layer (its controls, its texture) is a noticeable pause each."""
    if not built or not viewer_is_open(viewer):
        return
    item, rest = built[0], built[1:]
    if isinstance(item, tuple):
        _fill_placeholder(viewer, token, item)
    else:
        viewer.add_layer(item)
    if rest:
        from qtpy.QtCore import QTimer

        QTimer.singleShot(0, functools.partial(_insert, viewer, token, rest))


def _fill_placeholder(viewer, token: str, datum: tuple) -> None:
    data, attributes, _kind = datum
    key = _pending_key(token, attributes["name"])
    layer = next((lay for lay in viewer.layers if lay.metadata.get(PENDING_KEY) == key), None)
    if layer is None:  # the user deleted the placeholder meanwhile
        return
    layer.data = data
    layer.metadata = dict(attributes.get("metadata", {}))
    for key in ("contrast_limits", "scale", "translate"):
        if key in attributes:
            setattr(layer, key, attributes[key])


def _report_failure(description: str, error: Exception) -> None:
    from napari.utils.notifications import show_error

    show_error(f"{description} failed: {error}")
