"""Make the README's screenshots: each of the plugin's docks in use, in a 1,280×800 window.

    xvfb-run -a -s "-screen 0 1280x800x24" python scripts/screenshots.py --out docs/images

Opens the phantom sample, tunes the noise of its LR in the simulator dock, trains FSRCNN for
a few dozen steps in the training dock (live plot and preview), super-resolves the LR with
the Wiener baseline and the trained model in the inference dock, scores both in the
metrics dock, and registers the phantom sequence in the mosaic dock. After each step the
window is saved as ``<out>/<dock>.png``. Takes a few minutes on a CPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

PLUGIN = "napari-pclesr"
WINDOW = (1280, 800)


def wait(condition, timeout_s: float = 900.0) -> None:
    """Run the Qt event loop until ``condition()`` holds."""
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the dock did not finish in time")
        QApplication.processEvents()
        time.sleep(0.02)


def settle(seconds: float = 0.5) -> None:
    start = time.monotonic()
    wait(lambda: time.monotonic() - start > seconds)


def save(viewer, dock, path: Path) -> None:
    """Bring ``dock`` to the front and save the whole window (without napari's pop-ups, whose
    messages the dock's status line shows too)."""
    from qtpy.QtWidgets import QWidget

    window = viewer.window._qt_window
    for popup in window.findChildren(QWidget):
        if type(popup).__name__ == "NapariQtNotification":
            popup.close()
    dock.parentWidget().raise_()
    settle()
    window.grab().save(str(path))
    print(f"wrote {path}")


def main() -> None:
    import napari

    from napari_pclesr._napari._sample_data import phantom_sample, sequence_layers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--iterations", type=int, default=60, help="training steps")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="pclesr-screenshots-"))

    viewer = napari.Viewer()
    viewer.window._qt_window.resize(*WINDOW)
    for data, attributes, kind in phantom_sample():
        getattr(viewer, f"add_{kind}")(data, **attributes)

    def dock(name):
        _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        wait(lambda: widget.ready)
        return widget

    simulator = dock("Fibre-bundle simulator")
    simulator._image.value = viewer.layers["HR (phantom)"]
    simulator._sigma_mult.value = 0.08
    wait(lambda: simulator.worker is None and simulator.status.message.startswith("Simulated"))
    save(viewer, simulator, args.out / "simulator.png")

    training = dock("Train an SR model")
    training._source.value = "sample"
    training._iterations.value = args.iterations
    training._val_every.value = max(1, args.iterations // 4)
    training._batch_size.value = 8
    training._patch_size.value = 32
    training._learning_rate.value = "1e-3"
    training._out_dir.value = run_dir
    training.start()
    wait(lambda: training.worker is None)
    viewer.reset_view()  # the preview layers lie right of the phantom
    save(viewer, training, args.out / "training.png")
    viewer.reset_view()

    inference = dock("Super-resolve (inference)")
    inference._image.value = viewer.layers["LR (simulated)"]
    inference._source.value = "wiener"
    inference.run()
    wait(lambda: inference.worker is None)
    training.open_in_inference("best")
    inference.run()
    wait(lambda: inference.worker is None)
    inference._advanced.set_expanded(True)
    save(viewer, inference, args.out / "inference.png")

    metrics = dock("SR metrics")
    metrics.select(["SR · fsrcnn", "SR · wiener"], "HR (phantom)", "LR (simulated)")
    wait(lambda: not metrics.is_busy() and metrics.current_table is not None)
    save(viewer, metrics, args.out / "metrics.png")

    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    for data, attributes, kind in sequence_layers():
        getattr(viewer, f"add_{kind}")(data, **attributes)
    mosaic = dock("Mosaic / HR-hat")
    mosaic._image.value = viewer.layers["LR (simulated sequence)"]
    mosaic.run()
    wait(lambda: mosaic.worker is None)
    viewer.reset_view()
    save(viewer, mosaic, args.out / "mosaic.png")
    viewer.close()


if __name__ == "__main__":
    main()
