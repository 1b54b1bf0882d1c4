"""The "Mosaic / HR-hat" dock: register a sequence layer, fuse it and map HR-hat back.

Everything heavy runs in a worker thread (:func:`napari_pclesr.registration.iter_mosaic`); the
GUI thread only draws progress and adds the results: a mosaic layer, a lazily computed HR-hat
stack layer aligned with the input, and a per-frame quality plot (matplotlib) in the dock, with
rejected frames marked and a click on a frame's point moving the viewer to that frame.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from magicgui.widgets import ComboBox, FloatSpinBox, Label, ProgressBar, PushButton, create_widget

from napari_pclesr._napari._docks import (
    FOV_MASK_KEY,
    WorkerDock,
    device_choices,
    image_frames,
    layer_fov_mask,
    report,
)

LAYOUT_KEY = "fibre_layout"
#: Stage names shown in the status line.
STAGES = {"register": "Registering", "affine": "Refining (affine)", "mosaic": "Fusing"}


@dataclass(frozen=True)
class MosaicFinished:
    """What the worker returns: the pipeline's result and the warnings it raised."""

    result: object
    source_name: str
    messages: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    true_offsets: np.ndarray | None = None


class MosaicWidget(WorkerDock):
    """Build a mosaic and HR-hat (pseudo ground truth) from a sequence layer.

    Pick a (T, H, W) image layer, the motion model, the fusion method (``fibre`` needs a layer
    with a ``FibreLayout`` in ``metadata["fibre_layout"]``, as simulated layers carry) and the
    device, then *Run*. The results are ``"<input> mosaic"`` (the largest segment),
    ``"<input> HR-hat"`` (NaN for rejected frames) and the quality plot: each frame's best
    normalised cross-correlation, rejected frames as red crosses; click a point to go there.
    """

    def __init__(self, napari_viewer):
        self.viewer = napari_viewer
        self._image = create_widget(annotation="napari.layers.Image", label="sequence")
        self._model = ComboBox(label="motion model", choices=["translation", "affine"])
        self._method = ComboBox(label="fusion", choices=["mosaic", "fibre"])
        self._min_ncc = FloatSpinBox(label="min NCC", min=-1.0, max=1.0, step=0.05, value=0.7)
        self._device = ComboBox(label="device", choices=device_choices())
        self._run = PushButton(text="Run")
        self._stop = PushButton(text="Stop", enabled=False)
        self._progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self._status = Label(value="")
        super().__init__(
            widgets=[
                self._image,
                self._model,
                self._method,
                self._min_ncc,
                self._device,
                self._run,
                self._stop,
                self._progress,
                self._status,
            ]
        )
        self.plot = QualityPlot(self._go_to_frame)
        self.native.layout().addWidget(self.plot.canvas)
        self.registration = None
        self._run.changed.connect(self.run)
        self._stop.changed.connect(self.stop)
        self.viewer.dims.events.current_step.connect(self._on_step)

    # -- public API (also used by tests and scripts) --------------------------------------------

    def run(self):
        """Start the pipeline in a worker thread; returns the worker, or None on bad input."""
        if self.worker is not None:
            return self.worker
        try:
            job = self._prepare()
        except ValueError as exc:
            report(self._status, str(exc), error=True)
            return None
        self.worker = self._start_worker(job)
        return self.worker

    def stop(self):
        """Stop at the next batch of frames; nothing is added."""
        if self.worker is not None:
            self.worker.quit()
            self._status.value = "Stopping…"

    def _abandon(self) -> None:
        self.worker.quit()

    # -- internals ------------------------------------------------------------------------------

    def _prepare(self) -> dict:
        layer = self._image.value
        frames = image_frames(layer, "sequence")
        if len(frames.shape) != 3 or frames.shape[0] < 2:
            raise ValueError(
                f"Layer '{layer.name}' is a single frame; a mosaic needs a sequence (T, H, W) "
                "of at least 2 frames."
            )
        layout = None
        if self._method.value == "fibre":
            layout = layer.metadata.get(LAYOUT_KEY)
            if layout is None:
                raise ValueError(
                    f"Fibre-level fusion needs the fibre layout of '{layer.name}' "
                    "(metadata['fibre_layout'], as simulated layers have); use 'mosaic'."
                )
        offsets = layer.metadata.get("true_offsets")
        return {
            "frames": frames,
            "mask": layer_fov_mask(layer, frames.shape[-2:]),
            "layout": layout,
            "name": layer.name,
            "options": {
                "model": self._model.value,
                "method": self._method.value,
                "device": self._device.value,
                "min_ncc": float(self._min_ncc.value),
            },
            "true_offsets": None if offsets is None else np.asarray(offsets, dtype=float),
        }

    def _start_worker(self, job: dict):
        from napari.qt.threading import thread_worker

        worker = thread_worker(_run_pipeline, ignore_errors=True)(job)
        self._connect(worker.yielded, self._on_progress)
        self._connect(worker.returned, self._on_result)
        self._connect(worker.errored, self._on_error)
        self._connect(worker.aborted, self._on_aborted)
        worker.finished.connect(self._on_finished)
        self._run.enabled, self._stop.enabled = False, True
        self._progress.max, self._progress.value = len(job["frames"]), 0
        self._status.value = f"Registering {job['name']} ({len(job['frames'])} frames)…"
        worker.start()
        return worker

    def _on_progress(self, event) -> None:
        self._progress.max = max(event.total, 1)
        self._progress.value = event.done
        stage = STAGES.get(event.stage, event.stage)
        self._status.value = f"{stage}: {event.done}/{event.total} frames…"

    def _on_result(self, finished: MosaicFinished) -> None:
        result = finished.result
        registration = result.registration
        self.registration = registration
        self.plot.show(registration)
        summary = registration.summary()
        name = finished.source_name
        mask = registration.fov_mask
        if result.mosaics:
            largest = registration.largest_segment()
            mosaic = next(m for m in result.mosaics if m.segment == largest)
            covered = mosaic.image[mosaic.weight > 0.5]
            limits = _limits(covered)
            # Mosaic pixel p is point p + origin of the segment's first frame: translated so,
            # the mosaic lies under that frame in the viewer.
            self._add_or_update(
                f"{name} mosaic",
                mosaic.image,
                {"origin": mosaic.origin, "segment": largest, "weight": mosaic.weight},
                limits,
                translate=tuple(float(v) for v in mosaic.origin),
            )
            self._add_or_update(
                f"{name} HR-hat",
                result.hr_hat,
                {FOV_MASK_KEY: mask, "registration": registration},
                limits,
            )
        message = (
            f"Done in {finished.elapsed_s:.1f} s: {summary['kept']}/{summary['frames']} frames "
            f"kept, {len(result.mosaics)} mosaic(s); pair residual RMS "
            f"{summary['pair_residual_px'].get('rms', float('nan')):.2f} px"
        )
        accuracy = _truth_error(registration, finished.true_offsets)
        if accuracy is not None:
            message += f"; offsets vs truth RMS {accuracy:.3f} px"
        for text in finished.messages:
            report(self._status, text, error=True)
        self._status.value = message + (f". {finished.messages[0]}" if finished.messages else ".")
        if not result.mosaics:
            report(self._status, "Every frame was rejected; see the plot for why.", error=True)

    def _add_or_update(self, name, data, metadata, limits, translate=None) -> None:
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = data
            layer.metadata.update(metadata)
            layer.contrast_limits = limits
            if translate is not None:
                layer.translate = translate
        else:
            options = {} if translate is None else {"translate": translate}
            self.viewer.add_image(
                data, name=name, metadata=metadata, contrast_limits=limits, **options
            )

    def _on_error(self, exc: Exception) -> None:
        report(self._status, f"Mosaic failed: {exc}", error=True)

    def _on_aborted(self) -> None:
        self._status.value = "Stopped; no layer added."

    def _on_finished(self) -> None:
        self.worker = None
        if self.closed:
            return
        self._run.enabled, self._stop.enabled = True, False

    def _go_to_frame(self, index: int) -> None:
        layer = self._image.value
        if layer is None:
            return
        axis = self.viewer.dims.ndim - 3  # the time axis of a (T, H, W) layer, in world order
        step = list(self.viewer.dims.current_step)
        step[axis] = int(index)
        self.viewer.dims.current_step = tuple(step)

    def _on_step(self, _event=None) -> None:
        if self.closed or self.registration is None:
            return
        axis = self.viewer.dims.ndim - 3
        if axis >= 0:
            self.plot.mark(self.viewer.dims.current_step[axis])


class QualityPlot:
    """Per-frame NCC with rejected frames marked; a click on a point calls ``on_pick(frame)``."""

    def __init__(self, on_pick):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4, 2.2), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(180)
        self.axes = self.figure.add_subplot()
        self.axes.set_xlabel("frame")
        self.axes.set_ylabel("best NCC")
        self.kept = self.rejected = self.cursor = None
        self._on_pick = on_pick
        self.canvas.mpl_connect("pick_event", self._picked)

    def show(self, registration) -> None:
        axes = self.axes
        axes.clear()
        frames = np.arange(registration.n_frames)
        ncc = np.nan_to_num(registration.quality.ncc, nan=0.0)
        rejected = registration.rejected
        axes.plot(frames, ncc, color="0.7", linewidth=0.8, zorder=1)
        self.kept = axes.scatter(frames[~rejected], ncc[~rejected], s=12, picker=5, zorder=2)
        self.rejected = axes.scatter(
            frames[rejected], ncc[rejected], s=30, marker="x", color="red", picker=5, zorder=3
        )
        threshold = registration.parameters.get("min_ncc")
        if threshold is not None:
            axes.axhline(threshold, color="red", linewidth=0.6, linestyle="--")
        self.cursor = axes.axvline(0, color="0.3", linewidth=0.6)
        axes.set_xlabel("frame")
        axes.set_ylabel("best NCC")
        axes.set_title(
            f"{int((~rejected).sum())} kept, {int(rejected.sum())} rejected (x)", fontsize=9
        )
        self.canvas.draw_idle()

    def mark(self, frame: int) -> None:
        if self.cursor is not None:
            self.cursor.set_xdata([frame, frame])
            self.canvas.draw_idle()

    def _picked(self, event) -> None:
        if event.artist not in (self.kept, self.rejected) or not len(event.ind):
            return
        frame = event.artist.get_offsets()[event.ind[0]][0]
        self._on_pick(int(np.rint(frame)))


def _run_pipeline(job: dict):
    """The worker's generator: the whole pipeline, yielding its progress events."""
    from napari_pclesr.registration import SegmentWarning, iter_mosaic

    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SegmentWarning)
        result = yield from iter_mosaic(
            job["frames"], job["mask"], layout=job["layout"], **job["options"]
        )
    messages = [str(w.message) for w in caught if issubclass(w.category, SegmentWarning)]
    return MosaicFinished(
        result=result,
        source_name=job["name"],
        messages=messages,
        elapsed_s=time.perf_counter() - start,
        true_offsets=job["true_offsets"],
    )


def _limits(values: np.ndarray) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not values.size:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(values, (0.5, 99.5)))
    return low, high if high > low else low + 1.0


def _truth_error(registration, true_offsets) -> float | None:
    """RMS offset error against known offsets (phantom sample data), when they apply: one
    segment that starts at frame 0 (true offsets are canvas positions, made relative here)."""
    if true_offsets is None or true_offsets.shape != (registration.n_frames, 2):
        return None
    members = registration.kept_in(0) if registration.segments else np.empty(0, int)
    if not members.size or registration.segments[0][0] != 0:
        return None
    error = registration.offsets[members] - (true_offsets[members] - true_offsets[0])
    return float(np.sqrt(np.mean(np.sum(error**2, axis=1))))
