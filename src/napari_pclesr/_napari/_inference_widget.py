"""The "Super-resolve (inference)" dock: run a trained network or a baseline on an image layer.

The work runs in a ``thread_worker`` generator that calls
:func:`napari_pclesr.infer.super_resolve` on a few frames at a time and yields an
:class:`InferenceProgress` after each chunk, so the viewer stays responsive and *Stop* ends the
run between two chunks. The output layer is added only when every frame is done.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from magicgui.widgets import (
    ComboBox,
    FileEdit,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
    create_widget,
)

from napari_pclesr import baselines
from napari_pclesr._napari._docks import (
    FOV_MASK_KEY,
    WorkerDock,
    device_choices,
    image_frames,
    layer_fov_mask,
    report,
)

CHECKPOINT_SOURCE = "checkpoint file"
CHECKPOINT_FILTER = "*.pt *.pth *.ckpt"
HALF_CHOICES = {"auto": None, "on": True, "off": False}
SCALES = (1, 2, 4, 8)

# Inference docks alive now, so that the training dock can hand them a new checkpoint.
_LIVE_WIDGETS: weakref.WeakSet = weakref.WeakSet()


@dataclass(frozen=True)
class InferenceProgress:
    """A progress event of the inference worker: ``done`` of ``total`` frames finished."""

    done: int
    total: int
    device: str
    elapsed_s: float


@dataclass(frozen=True)
class InferenceResult:
    """A finished super-resolution, ready to become a layer."""

    data: np.ndarray
    source_layer: object
    model_label: str
    checkpoint: Path | None
    scale: int
    fov_mask: np.ndarray
    device: str
    elapsed_s: float
    settings: dict = field(default_factory=dict)


class InferenceWidget(WorkerDock):
    """Super-resolve an image layer with a checkpoint or a baseline.

    Choose the LR image layer (a frame or a stack), the model (a ``.pt`` checkpoint written by
    training, or a baseline from :func:`napari_pclesr.baselines.available` at a chosen scale),
    the device, tiling (tile 0: whole frames) and precision, then *Run*. The result is a new
    layer ``"<input> SR (<model>)"`` with the model, checkpoint and FoV mask in its metadata;
    for a network of scale s its ``scale`` and ``translate`` make it overlay the input.
    """

    def __init__(self, napari_viewer):
        self.viewer = napari_viewer
        self._image = create_widget(annotation="napari.layers.Image", label="LR image")
        self._source = ComboBox(label="model", choices=[CHECKPOINT_SOURCE, *baselines.available()])
        self._checkpoint = FileEdit(
            label="checkpoint", mode="r", filter=CHECKPOINT_FILTER, nullable=True
        )
        self._baseline_scale = ComboBox(label="baseline scale", choices=list(SCALES), value=1)
        self._device = ComboBox(label="device", choices=device_choices())
        self._tile = SpinBox(label="tile (0: none)", min=0, max=16384, step=32, value=0)
        self._overlap = SpinBox(label="tile overlap", min=0, max=1024, value=16)
        self._batch_size = SpinBox(label="batch size", min=1, max=1024, value=8)
        self._half = ComboBox(label="half precision", choices=list(HALF_CHOICES), value="auto")
        self._run = PushButton(text="Run")
        self._stop = PushButton(text="Stop", enabled=False)
        self._progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self._status = Label(value="")
        super().__init__(
            widgets=[
                self._image,
                self._source,
                self._checkpoint,
                self._baseline_scale,
                self._device,
                self._tile,
                self._overlap,
                self._batch_size,
                self._half,
                self._run,
                self._stop,
                self._progress,
                self._status,
            ],
        )
        self._source.changed.connect(self._show_source_options)
        self._run.changed.connect(self.run)
        self._stop.changed.connect(self.stop)
        self._show_source_options()
        _LIVE_WIDGETS.add(self)

    # -- public API (also used by the training dock, tests and scripts) --------------------------

    def run(self):
        """Start super-resolution in a worker thread; returns it, or None on bad input."""
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
        """Stop the running job after its current chunk of frames; no layer is added."""
        if self.worker is not None:
            self.worker.quit()
            self._status.value = "Stopping after the current frames…"

    def _abandon(self) -> None:
        self.worker.quit()

    def use_checkpoint(self, path) -> None:
        """Select the checkpoint file ``path`` as the model (e.g. a finished training's best)."""
        self._source.value = CHECKPOINT_SOURCE
        self._checkpoint.value = Path(path)
        self._status.value = f"Checkpoint {path} selected; pick the LR layer and press Run."

    # -- internals ------------------------------------------------------------------------------

    def _show_source_options(self, _value=None) -> None:
        from_file = self._source.value == CHECKPOINT_SOURCE
        self._checkpoint.visible = from_file
        self._baseline_scale.visible = not from_file

    def _prepare(self) -> dict:
        layer = self._image.value
        frames = image_frames(layer, "LR")
        tile = int(self._tile.value) or None
        settings = {
            "device": self._device.value,
            "tile": tile,
            "overlap": int(self._overlap.value),
            "batch_size": int(self._batch_size.value),
            "half": HALF_CHOICES[self._half.value],
        }
        if tile is not None and tile <= 2 * settings["overlap"]:
            raise ValueError(
                f"The tile ({tile}) must be larger than twice the overlap "
                f"({settings['overlap']}); use a larger tile, a smaller overlap, or tile 0."
            )
        if self._source.value == CHECKPOINT_SOURCE:
            path = self._checkpoint.value
            if path is None or not Path(path).is_file():
                raise ValueError(
                    "Choose a checkpoint file (best.pt or last.pt of a training run), or pick a "
                    f"baseline as the model{f'; {path} does not exist' if path else ''}."
                )
            source, scale = Path(path), None
        else:
            source, scale = self._source.value, int(self._baseline_scale.value)
        return {
            "frames": frames,
            "fov_mask": layer_fov_mask(layer, frames.shape[-2:]),
            "source": source,
            "scale": scale,
            "settings": settings,
            "layer": layer,
        }

    def _start_worker(self, job: dict):
        from napari.qt.threading import thread_worker

        # Errors go to the status line and a notification, not to the Qt event loop.
        worker = thread_worker(_super_resolve_in_chunks, ignore_errors=True)(job)
        self._connect(worker.yielded, self._on_progress)
        self._connect(worker.returned, self._on_result)
        self._connect(worker.errored, self._on_error)
        self._connect(worker.aborted, self._on_aborted)
        self._connect(worker.finished, self._on_finished)
        self._run.enabled, self._stop.enabled = False, True
        total = 1 if job["frames"].ndim == 2 else len(job["frames"])
        self._progress.max, self._progress.value = total, 0
        self._status.value = f"Super-resolving {job['layer'].name} ({total} frame(s))…"
        worker.start()
        return worker

    def _on_progress(self, event: InferenceProgress) -> None:
        self._progress.value = event.done
        rate = event.done / max(event.elapsed_s, 1e-9)
        eta = (event.total - event.done) / rate
        self._status.value = (
            f"{event.done}/{event.total} frames on {event.device} · {rate:.2f} frames/s · "
            f"ETA {eta:.0f} s"
        )

    def _on_result(self, result: InferenceResult) -> None:
        layer = result.source_layer
        lr_scale = np.asarray(layer.scale, dtype=float)
        lr_translate = np.asarray(layer.translate, dtype=float)
        scale, translate = lr_scale.copy(), lr_translate.copy()
        # Output pixel j covers LR coordinate (j + 0.5) / s − 0.5, as in the networks and in
        # interpolation without aligned corners.
        scale[-2:] = lr_scale[-2:] / result.scale
        translate[-2:] = lr_translate[-2:] + (0.5 / result.scale - 0.5) * lr_scale[-2:]
        inside = result.data[..., result.fov_mask]
        values = inside if inside.size else result.data
        low, high = (float(v) for v in np.percentile(values, (0.5, 99.5)))
        metadata = {
            FOV_MASK_KEY: result.fov_mask,
            "sr_model": result.model_label,
            "sr_checkpoint": None if result.checkpoint is None else str(result.checkpoint),
            "sr_scale": result.scale,
            "sr_device": result.device,
            "sr_source_layer": layer.name,
            "sr_settings": result.settings,
        }
        self.viewer.add_image(
            result.data,
            name=f"{layer.name} SR ({result.model_label})",
            metadata=metadata,
            contrast_limits=(low, high if high > low else low + 1.0),
            scale=scale,
            translate=translate,
        )
        frames = 1 if result.data.ndim == 2 else len(result.data)
        self._status.value = (
            f"Done: {frames} frame(s) with {result.model_label} (×{result.scale}) on "
            f"{result.device} in {result.elapsed_s:.1f} s."
        )

    def _on_error(self, exc: Exception) -> None:
        message = f"Super-resolution failed: {exc}"
        if "out of memory" in str(exc).lower():
            message += " Try a tile size (e.g. 256), a smaller batch, or the CPU."
        report(self._status, message, error=True)

    def _on_aborted(self) -> None:
        self._status.value = (
            f"Stopped after {self._progress.value}/{self._progress.max} frames; no layer added."
        )

    def _on_finished(self) -> None:
        self.worker = None
        self._run.enabled, self._stop.enabled = True, False


def _super_resolve_in_chunks(job: dict):
    """Generator run by the worker: super-resolve a few frames at a time, yielding progress."""
    from napari_pclesr.data.patches import fov_from_frames, upscale_mask
    from napari_pclesr.devices import select_device
    from napari_pclesr.infer import super_resolve
    from napari_pclesr.train.checkpoint import load_checkpoint

    start = time.perf_counter()
    settings = job["settings"]
    device = str(select_device(settings["device"]))
    source = job["source"]
    if isinstance(source, Path):
        # Read and check the file once; every chunk reuses the loaded dict.
        checkpoint = load_checkpoint(source)
        spec = checkpoint["model"]
        model_label = f"{spec.get('name') or 'custom'} {source.name}"
        source, checkpoint_path = checkpoint, job["source"]
    else:
        model_label = source if job["scale"] == 1 else f"{source} ×{job['scale']}"
        checkpoint_path = None
    frames = job["frames"]
    stack = frames[np.newaxis] if frames.ndim == 2 else frames
    # One FoV for the whole stack: per chunk it would depend on how frames are grouped.
    mask = job["fov_mask"] if job["fov_mask"] is not None else fov_from_frames(np.asarray(stack))
    chunk = settings["batch_size"]
    outputs = []
    for first in range(0, len(stack), chunk):
        outputs.append(
            super_resolve(
                np.asarray(stack[first : first + chunk]),
                source,
                device=device,
                tile=settings["tile"],
                overlap=settings["overlap"],
                batch_size=settings["batch_size"],
                half=settings["half"],
                fov_mask=mask,
                scale=job["scale"],
            )
        )
        yield InferenceProgress(
            done=min(first + chunk, len(stack)),
            total=len(stack),
            device=device,
            elapsed_s=time.perf_counter() - start,
        )
    output = np.concatenate(outputs)
    scale = output.shape[-1] // stack.shape[-1]
    return InferenceResult(
        data=output[0] if frames.ndim == 2 else output,
        source_layer=job["layer"],
        model_label=model_label,
        checkpoint=checkpoint_path,
        scale=scale,
        fov_mask=upscale_mask(mask, scale),
        device=device,
        elapsed_s=time.perf_counter() - start,
        settings=settings,
    )
