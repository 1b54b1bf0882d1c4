"""The "Mosaic / HR-hat" dock: register a sequence layer, fuse it and map HR-hat back.

Everything heavy runs in a worker thread (:func:`napari_pclesr.registration.iter_mosaic`); the
GUI thread only draws progress and adds the results: a mosaic layer, a lazily computed HR-hat
stack layer aligned with the input, and a per-frame quality plot in the dock, with rejected
frames marked and a click on a frame's point moving the viewer to that frame.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from magicgui.widgets import ComboBox, FloatSpinBox, ProgressBar, PushButton

from napari_pclesr._napari._docks import (
    FOV_MASK_KEY,
    ROLE_KEY,
    PclesrDock,
    add_or_update_image,
    device_choices,
    image_frames,
    layer_fov_mask,
    percentile_limits,
    pick_default,
    set_choices,
    tip,
)
from napari_pclesr._napari._plots import LinePlot

LAYOUT_KEY = "fibre_layout"
#: Stage names shown in the status line.
STAGES = {"register": "Registering", "affine": "Refining (affine)", "mosaic": "Fusing"}
KEPT_COLOUR = "#4e9ae8"
REJECTED_COLOUR = "#f0605a"


@dataclass(frozen=True)
class MosaicFinished:
    """What the worker returns: the pipeline's result and the warnings it raised."""

    result: object
    source_name: str
    messages: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    true_offsets: np.ndarray | None = None


class MosaicWidget(PclesrDock):
    """Build a mosaic and HR-hat (pseudo ground truth) from a sequence layer.

    Pick a (T, H, W) image layer, the motion model, the fusion method (``fibre`` needs a layer
    with a ``FibreLayout`` in ``metadata["fibre_layout"]``, as simulated layers carry) and the
    device, then *Run*. The results are ``"<input> mosaic"`` (the largest segment),
    ``"<input> HR-hat"`` (NaN for rejected frames) and the quality plot: each frame's best
    normalised cross-correlation, rejected frames as red crosses; click a point to go there.
    """

    title = "Mosaic / HR-hat"
    stopping_message = "Stopping at the next batch of frames; nothing is added…"

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self._image = tip(
            ComboBox(label="Recording (sequence of frames)", choices=self._image_choices),
            "A pCLE recording or simulated sequence (T frames, at least 2) over which the "
            "probe moves. The most recent LR-like layer is picked when it appears.",
        )
        self._model = tip(
            ComboBox(
                label="Motion model",
                choices=[("Shifts only (translation)", "translation"), ("Affine", "affine")],
            ),
            "How frames move relative to each other: shifts only (fast, usual for pCLE), or "
            "affine (each frame refined against the mosaic for rotation and stretch; slower).",
        )
        self._method = tip(
            ComboBox(
                label="Fusion",
                choices=[("Average of frames (mosaic)", "mosaic"), ("Fibre samples", "fibre")],
            ),
            "How aligned frames are combined: an average of the resampled frames, or a pool of "
            "the fibres' raw samples (needs a layer carrying its fibre layout, as simulated "
            "layers do).",
        )
        self._min_ncc = tip(
            FloatSpinBox(label="Minimum match (NCC)", min=-1.0, max=1.0, step=0.05, value=0.7),
            "Frames whose best normalised cross-correlation with a neighbour is below this "
            "are rejected (dashed line on the plot). 0.5–0.9; 0.7 by default.",
        )
        self._device = tip(
            ComboBox(label="Device", choices=[("auto", "auto")], value="auto"),
            "Where the Fourier transforms run: auto picks a GPU when there is one.",
        )
        self._run = tip(PushButton(text="Run"), "Register the recording and build HR-hat.")
        self._stop = tip(
            PushButton(text="Stop", enabled=False),
            "Stop at the next batch of frames; no layer is added.",
        )
        self._progress = tip(
            ProgressBar(label="Progress", min=0, max=1, value=0), "Frames processed so far."
        )
        self.plot = LinePlot(x_label="frame", y_label="best match (NCC)")
        self.plot.add_series("kept", "kept", KEPT_COLOUR, marker="dot", joined=False)
        self.plot.add_series("rejected", "rejected", REJECTED_COLOUR, marker="cross", joined=False)
        self.plot.empty_text = "Each frame's match quality appears here after a run."
        self.plot.setToolTip(
            "Each frame's best match with another frame (normalised cross-correlation, 1 is "
            "perfect). Red crosses: rejected frames; dashed: the minimum match. Click a point "
            "to show that frame."
        )
        self.plot.setMinimumHeight(140)
        self.plot.on_click = self._go_to_frame
        self.add_rows([self._image, self._model, self._method])
        self.add_advanced([self._min_ncc, self._device])
        self.add_widget(self.plot, stretch=1)
        self.add_actions(self._run, self._stop)
        self.add_footer(self._progress)
        self.report("Pick a recording, then press Run.")
        self.registration = None
        self._run.changed.connect(self.run)
        self._stop.changed.connect(self.stop)
        self.follow_layers()
        self.listen(self.viewer.dims.events.current_step, self._on_step)
        self.refresh_choices()
        self.load_in_background(device_choices, self._fill_devices, controls=(self._device,))

    # -- public API (also used by tests and scripts) --------------------------------------------

    def run(self):
        """Start the pipeline in a worker thread; returns the worker, or None on bad input."""
        if self.worker is not None:
            return self.worker
        try:
            job = self._prepare()
        except ValueError as exc:
            self.report(str(exc), "error")
            return None
        total = len(job["frames"])
        return self.start_job(
            _run_pipeline, job, total, f"Registering {job['name']} ({total} frames)…"
        )

    def refresh_choices(self, *_event) -> None:
        super().refresh_choices()
        pick_default(self._image, self.viewer, ("lr", "raw"))

    # -- internals ------------------------------------------------------------------------------

    def _fill_devices(self, devices: list) -> None:
        set_choices(self._device, devices)
        self._device.value = "auto"

    def _prepare(self) -> dict:
        layer = self._image.value
        frames = image_frames(layer, "recording")
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
                    f"Fibre-sample fusion needs the fibre layout of '{layer.name}' "
                    "(metadata['fibre_layout'], as simulated layers have); use the average."
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

    def _on_progress(self, event) -> None:
        self._progress.max = max(event.total, 1)
        self._progress.value = event.done
        stage = STAGES.get(event.stage, event.stage)
        self.report(f"{stage}: {event.done}/{event.total} frames…")

    def _on_result(self, finished: MosaicFinished) -> None:
        result = finished.result
        registration = result.registration
        self.registration = registration
        self._plot_quality(registration)
        summary = registration.summary()
        name = finished.source_name
        mask = registration.fov_mask
        if result.mosaics:
            largest = registration.largest_segment()
            mosaic = next(m for m in result.mosaics if m.segment == largest)
            limits = percentile_limits(mosaic.image[mosaic.weight > 0.5])
            # Mosaic pixel p is point p + origin of the segment's first frame: translated so,
            # the mosaic lies under that frame in the viewer.
            add_or_update_image(
                self.viewer,
                f"{name} mosaic",
                mosaic.image,
                metadata={"origin": mosaic.origin, "segment": largest, "weight": mosaic.weight},
                contrast_limits=limits,
                translate=tuple(float(v) for v in mosaic.origin),
            )
            add_or_update_image(
                self.viewer,
                f"{name} HR-hat",
                result.hr_hat,
                metadata={FOV_MASK_KEY: mask, ROLE_KEY: "hr", "registration": registration},
                contrast_limits=limits,
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
            self.notify(text, "warning")
        message += f". {finished.messages[0]}" if finished.messages else "."
        self.report(message, "warning" if finished.messages else "info")
        if not result.mosaics:
            self.report("Every frame was rejected; see the plot for why.", "error")

    def _plot_quality(self, registration) -> None:
        frames = np.arange(registration.n_frames)
        ncc = np.nan_to_num(registration.quality.ncc, nan=0.0)
        rejected = registration.rejected
        self.plot.set_points("kept", frames[~rejected], ncc[~rejected])
        self.plot.set_points("rejected", frames[rejected], ncc[rejected])
        threshold = registration.parameters.get("min_ncc")
        self.plot.h_lines = [] if threshold is None else [(float(threshold), REJECTED_COLOUR)]
        self._on_step()

    def _on_error(self, exc: Exception) -> None:
        self.report(f"Mosaic failed: {exc}", "error")

    def _on_aborted(self) -> None:
        self.report("Stopped; no layer added.")

    def _on_finished(self) -> None:
        self._run.enabled, self._stop.enabled = True, False

    def _go_to_frame(self, index: float) -> None:
        axis = self.viewer.dims.ndim - 3  # the time axis of a (T, H, W) layer, in world order
        if axis < 0:
            return
        step = list(self.viewer.dims.current_step)
        step[axis] = round(index)
        self.viewer.dims.current_step = tuple(step)

    def _on_step(self, _event=None) -> None:
        axis = self.viewer.dims.ndim - 3
        if self.registration is not None and axis >= 0:
            self.plot.set_cursor(self.viewer.dims.current_step[axis])


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
