"""How long napari's UI thread stalls when the plugin's docks open and its files load.

Run under a display: ``xvfb-run -a python benchmarks/bench_ui_stalls.py``.

Target (issue 12): the UI never blocks for more than 0.5 s. A QTimer ticks every 10 ms in the
UI thread while each action runs from inside the event loop (as a menu entry would); for every
gap between ticks the script records its wall time and the UI thread's own CPU time. On a
shared machine the wall time also counts waiting for a CPU or for the GIL held by a worker
thread; the CPU time is the work done in the UI thread. Side by side in the same run, the
references: napari docking a plain widget and opening its own "camera" sample, and importing
torch in the UI thread and in a worker thread (our docks import it in a worker).
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _timing import print_table

from napari_pclesr._napari._manifest import dock_titles

PLUGIN = "napari-pclesr"
DOCKS = dock_titles()


class Heartbeat:
    """Longest wall and UI-thread CPU gap between ticks of a 10 ms QTimer."""

    def __init__(self):
        from qtpy.QtCore import QTimer

        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self.tick)
        self.reset()

    def reset(self) -> None:
        self.wall = self.cpu = 0.0
        self.last = (time.perf_counter(), time.thread_time())

    def tick(self) -> None:
        now = (time.perf_counter(), time.thread_time())
        self.wall = max(self.wall, now[0] - self.last[0])
        self.cpu = max(self.cpu, now[1] - self.last[1])
        self.last = now


def measure(heartbeat: Heartbeat, action, settle_s: float = 3.0, until=None) -> tuple:
    """Run ``action`` from inside the event loop; the longest gaps until it settled."""
    from qtpy.QtCore import QEventLoop, QTimer

    heartbeat.reset()
    loop = QEventLoop()
    QTimer.singleShot(0, action)
    QTimer.singleShot(int(settle_s * 1000), loop.quit)
    loop.exec_()
    while until is not None and not until():
        QTimer.singleShot(50, loop.quit)
        loop.exec_()
    return heartbeat.wall, heartbeat.cpu


def torch_import_gap(in_worker: bool) -> float:
    """Longest UI-thread gap while torch is imported (in a fresh interpreter)."""
    import subprocess

    code = f"""
import threading, time
gaps, last, done = [], [time.perf_counter()], threading.Event()
def load():
    import torch
    done.set()
if {in_worker}:
    threading.Thread(target=load).start()
    while not done.is_set():
        time.sleep(0.005); now = time.perf_counter(); gaps.append(now - last[0]); last[0] = now
    print(max(gaps))
else:
    start = time.perf_counter(); load(); print(time.perf_counter() - start)
"""
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return float(output.stdout.strip().splitlines()[-1])


def main() -> None:
    import napari
    from qtpy.QtWidgets import QLabel

    from napari_pclesr.io import write_mkt

    rows = [
        ("import torch in the UI thread", torch_import_gap(False), float("nan")),
        ("import torch in a worker (our docks)", torch_import_gap(True), float("nan")),
    ]
    viewer = napari.Viewer()
    viewer.window._qt_window.resize(1280, 800)
    heartbeat = Heartbeat()
    heartbeat.timer.start()
    wall, cpu = measure(heartbeat, lambda: viewer.open_sample("napari", "camera"))
    rows.append(("reference: napari's camera sample", wall, cpu))
    viewer.layers.clear()
    wall, cpu = measure(
        heartbeat,
        lambda: viewer.open_sample(PLUGIN, "phantom"),
        until=lambda: "fibre layout" in viewer.layers,
    )
    rows.append(("pCLE phantom sample (576², 30,000 fibres)", wall, cpu))
    wall, cpu = measure(heartbeat, lambda: viewer.window.add_dock_widget(QLabel("plain")))
    rows.append(("reference: napari docks a plain widget", wall, cpu))
    for name in DOCKS:
        wall, cpu = measure(
            heartbeat, lambda name=name: viewer.window.add_plugin_dock_widget(PLUGIN, name)
        )
        rows.append((f"dock: {name}", wall, cpu))
        print(rows[-1], flush=True)
    with tempfile.TemporaryDirectory() as folder:
        frames = np.random.default_rng(0).integers(0, 2000, (600, 580, 576), dtype=np.int16)
        path = write_mkt(Path(folder) / "long.mkt", frames, frame_rate=12)
        count = len(viewer.layers)
        wall, cpu = measure(
            heartbeat,
            lambda: viewer.open(str(path), plugin=None),
            until=lambda: len(viewer.layers) > count,
        )
        rows.append(("open a 600-frame .mkt (400 MB)", wall, cpu))
    heartbeat.timer.stop()
    viewer.close()
    print_table(
        "Longest UI-thread stall (target: < 0.5 s)",
        ("action", "wall [s]", "UI-thread CPU [s]"),
        rows,
    )
    print(f"\n{threading.active_count()} thread(s) left; load average {_load()}")


def _load() -> str:
    try:
        with open("/proc/loadavg", encoding="ascii") as stream:
            return stream.read().split()[0]
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
