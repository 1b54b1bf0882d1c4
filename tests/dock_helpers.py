"""Helpers shared by the dock tests (imported by the test modules, not a test module)."""

from __future__ import annotations

import time

from qtpy.QtWidgets import (
    QAbstractButton,
    QAbstractItemView,
    QAbstractSlider,
    QAbstractSpinBox,
    QComboBox,
    QLineEdit,
    QScrollBar,
    QTextEdit,
    QWidget,
)

TIMEOUT_MS = 60_000
#: The controls a user operates (scroll bars belong to scroll areas, not to our docks).
CONTROL_TYPES = (
    QAbstractButton,
    QComboBox,
    QAbstractSpinBox,
    QLineEdit,
    QAbstractSlider,
    QAbstractItemView,
    QTextEdit,
)


def wait_ready(qtbot, dock) -> None:
    """Wait until the dock has loaded what needs torch (devices, model lists)."""
    qtbot.waitUntil(lambda: dock.ready, timeout=TIMEOUT_MS)


def wait_idle(qtbot, dock) -> None:
    """Wait until the dock's job has ended and the dock has handled it."""
    qtbot.waitUntil(lambda: dock.worker is None, timeout=TIMEOUT_MS)


TINY_FSRCNN = "features=8, shrink_features=4, mapping_layers=1"


def set_up_tiny_training(dock, out_dir, iterations: int, val_every: int) -> None:
    """Settings for a quick CPU run of a tiny FSRCNN (12×12 LR patches, batches of 4)."""
    dock._model.value = "fsrcnn"
    dock._hparams.value = TINY_FSRCNN
    dock._loss.value = "l1"
    dock._iterations.value = iterations
    dock._val_every.value = val_every
    dock._batch_size.value = 4
    dock._patch_size.value = 12
    dock._device.value = "cpu"
    dock._out_dir.value = out_dir


def controls_without_tooltip(dock: QWidget) -> list[str]:
    """Describe every control of ``dock`` that shows no tooltip: neither it nor a parent up to
    the dock has one (Qt shows a parent's tooltip over a child that has none)."""
    missing = []
    for control in dock.findChildren(QWidget):
        if not isinstance(control, CONTROL_TYPES) or isinstance(control, QScrollBar):
            continue
        widget, tip = control, ""
        while widget is not None and widget is not dock and not tip:
            tip = widget.toolTip()
            widget = widget.parentWidget()
        if not tip:
            text = control.text() if hasattr(control, "text") else ""
            missing.append(f"{type(control).__name__} {text!r}")
    return missing


class Heartbeat:
    """A QTimer ticking every ``interval_ms`` in the UI thread, recording for each gap between
    ticks its wall time and the UI thread's own CPU time.

    A gap's wall time is what a user sees frozen; its CPU time is the part spent working in
    the UI thread (the rest is the thread waiting: for the CPU on a loaded machine, or for
    the GIL held by a worker thread).
    """

    def __init__(self, interval_ms: int = 10):
        from qtpy.QtCore import QTimer

        self.gaps: list[tuple[float, float]] = []
        self._timer = QTimer()
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)
        self.restart()

    def restart(self) -> None:
        self.gaps.clear()
        self._wall, self._cpu = time.perf_counter(), time.thread_time()

    def start(self) -> None:
        self.restart()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def _tick(self) -> None:
        wall, cpu = time.perf_counter(), time.thread_time()
        self.gaps.append((wall - self._wall, cpu - self._cpu))
        self._wall, self._cpu = wall, cpu

    @property
    def longest_wall(self) -> float:
        return max((wall for wall, _ in self.gaps), default=0.0)

    @property
    def longest_cpu(self) -> float:
        return max((cpu for _, cpu in self.gaps), default=0.0)


def run_in_event_loop(qtbot, action, settle_ms: int = 1500) -> None:
    """Run ``action`` from inside a running Qt event loop, as a menu entry or a dropped file
    would be, then let the loop run ``settle_ms`` for what it started."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(0, action)
    QTimer.singleShot(settle_ms, loop.quit)
    loop.exec_()
