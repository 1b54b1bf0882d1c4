"""The "Super-resolve" dock: run a trained network or a baseline on an image layer.

The work runs in a worker generator that calls :func:`napari_pclesr.infer.super_resolve` on a
few frames at a time and yields an :class:`InferenceProgress` after each chunk, so the viewer
stays responsive and *Stop* ends the run between two chunks. The output layer is added only
when every frame is done.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, FileEdit, ProgressBar, PushButton, SpinBox

from napari_pclesr._napari._docks import (
    FOV_MASK_KEY,
    ROLE_KEY,
    PclesrDock,
    image_frames,
    image_layer_choices,
    layer_fov_mask,
    percentile_limits,
    pick_default,
    set_choices,
    tip,
    unwrapped,
)

CHECKPOINT_SOURCE = "checkpoint"
CHECKPOINT_FILTER = "*.pt *.pth *.ckpt"
HALF_CHOICES = {"auto": None, "on": True, "off": False}
SCALES = (1, 2, 4, 8)
#: Plain names of the baselines; the registry name follows in brackets.
BASELINE_NAMES = {
    "wiener": "Wiener deconvolution",
    "unsharp": "Unsharp mask (sharpening)",
    "richardson_lucy": "Richardson–Lucy deconvolution",
    "tv": "Total-variation deconvolution",
    "bicubic": "Bicubic interpolation",
    "bilinear": "Bilinear interpolation",
    "nearest": "Nearest-neighbour interpolation",
}
RESULT_PREFIX = "SR · "

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


def baseline_choices(names) -> list[tuple[str, str]]:
    """(label, name) of each baseline, its plain name first."""
    return [(f"{BASELINE_NAMES.get(name, name)} ({name})", name) for name in names]


def _load_catalogue() -> dict:
    from napari_pclesr import baselines
    from napari_pclesr._napari._docks import device_choices

    return {"baselines": baselines.available(), "devices": device_choices()}


class InferenceWidget(PclesrDock):
    """Super-resolve an image layer with a trained model or a baseline.

    Choose the input (LR) layer, a frame or a stack; by default the most recent LR-like layer
    (a recording, a simulated LR). The method is a checkpoint written by training (``.pt``)
    or a baseline at a chosen upscaling. Device, tiling and precision are under *Advanced*.
    The result is the layer "SR · <model>" (re-running the same model on the same input
    updates it), with the model, checkpoint, settings and FoV mask in its metadata; for a ×s
    model its ``scale`` and ``translate`` make it overlay the input.
    """

    title = "Super-resolve"

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self._image = tip(
            ComboBox(label="Input image (LR)", choices=self._image_choices),
            "The pCLE image to sharpen: a grey frame or stack. The most recent recording or "
            "simulated LR is picked when it appears.",
        )
        self._source = tip(
            ComboBox(
                label="Method",
                choices=[("Trained model (checkpoint file)", CHECKPOINT_SOURCE)],
            ),
            "A network you trained (its best.pt or last.pt), or a classical baseline to compare "
            "with.",
        )
        self._checkpoint = tip(
            FileEdit(label="Model file (.pt)", mode="r", filter=CHECKPOINT_FILTER, nullable=True),
            "A checkpoint written by the training dock or pclesr train: best.pt or last.pt.",
        )
        self._baseline_scale = tip(
            ComboBox(label="Upscaling (baselines)", choices=list(SCALES), value=1),
            "How many times larger a baseline makes the image: 1 keeps the pCLE grid, as in the "
            "seed papers; 2, 4 or 8 enlarge it. A trained model brings its own.",
        )
        self._device = tip(
            ComboBox(label="Device", choices=[("auto", "auto")], value="auto"),
            "Where the network runs: auto picks a GPU when there is one (its name is shown), "
            "else the CPU.",
        )
        self._tile = tip(
            SpinBox(label="Tile size in pixels (0: whole frames)", min=0, max=16384, step=32),
            "Process large frames in square tiles of this many pixels, to fit a small GPU; 0 "
            "processes whole frames. Try 256–512; it must exceed twice the overlap.",
        )
        self._overlap = tip(
            SpinBox(label="Tile overlap in pixels", min=0, max=1024, value=16),
            "How much neighbouring tiles overlap; they are blended there so no seam shows. "
            "16–64 pixels.",
        )
        self._batch_size = tip(
            SpinBox(label="Frames per batch", min=1, max=1024, value=8),
            "Frames (or tiles) processed together: more is faster on a GPU and needs more "
            "memory. Stop acts between two batches. 1–32.",
        )
        self._half = tip(
            ComboBox(label="Half precision", choices=list(HALF_CHOICES), value="auto"),
            "auto: 16-bit arithmetic on a CUDA GPU only (faster, same result to the eye); "
            "on: also on the CPU (bfloat16); off: full 32-bit precision.",
        )
        self._run = tip(PushButton(text="Run"), "Super-resolve the input image now.")
        self._stop = tip(
            PushButton(text="Stop", enabled=False),
            "Stop after the current batch of frames; no layer is added.",
        )
        self._progress = tip(
            ProgressBar(label="Progress", min=0, max=1, value=0), "Frames super-resolved so far."
        )
        self.add_rows([self._image, self._source, self._checkpoint, self._baseline_scale])
        self._advanced = self.add_advanced(
            [self._device, self._tile, self._overlap, self._batch_size, self._half]
        )
        self.add_actions(self._run, self._stop)
        self.add_footer(self._progress)
        self.report("Pick the input image and a method, then press Run.")

        self._source.changed.connect(self._show_source_options)
        self._run.changed.connect(self.run)
        self._stop.changed.connect(self.stop)
        for event in ("inserted", "removed", "reordered"):
            self.listen(getattr(self.viewer.layers.events, event), self.refresh_choices)
        self.refresh_choices()
        self._show_source_options()
        self.load_in_background(
            _load_catalogue, self._fill_catalogue, controls=(self._source, self._device, self._run)
        )
        _LIVE_WIDGETS.add(self)

    # -- public API (also used by the training dock, tests and scripts) --------------------------

    def run(self):
        """Start super-resolution in a worker thread; returns it, or None on bad input."""
        if self.worker is not None:
            return self.worker
        try:
            job = self._prepare()
        except ValueError as exc:
            self.report(str(exc), "error")
            return None
        total = 1 if job["frames"].ndim == 2 else len(job["frames"])
        self._progress.max, self._progress.value = total, 0
        self._run.enabled, self._stop.enabled = False, True
        self.report(f"Super-resolving '{job['layer'].name}' ({total} frame(s))…")
        return self.start_worker(
            _super_resolve_in_chunks,
            job,
            yielded=self._on_progress,
            returned=self._on_result,
            errored=self._on_error,
            aborted=self._on_aborted,
            finished=self._on_finished,
        )

    def stop(self):
        """Stop the running job after its current chunk of frames; no layer is added."""
        if self.worker is not None:
            super().stop()
            self.report("Stopping after the current frames…")

    def use_checkpoint(self, path) -> None:
        """Select the checkpoint file ``path`` as the model (e.g. a finished training's best)."""
        self._source.value = CHECKPOINT_SOURCE
        self._checkpoint.value = Path(path)
        self.report(f"Model {Path(path).name} selected ({path}); pick the input and press Run.")

    def refresh_choices(self, *_event) -> None:
        super().refresh_choices()
        pick_default(self._image, self.viewer, ("lr",))

    # -- internals ------------------------------------------------------------------------------

    def _image_choices(self, _widget=None):
        return image_layer_choices(self.viewer)

    def _fill_catalogue(self, catalogue: dict) -> None:
        chosen = self._source.value
        set_choices(
            self._source,
            [
                ("Trained model (checkpoint file)", CHECKPOINT_SOURCE),
                *baseline_choices(catalogue["baselines"]),
            ],
        )
        self._source.value = chosen
        set_choices(self._device, catalogue["devices"])
        self._device.value = "auto"

    def _show_source_options(self, _value=None) -> None:
        from_file = self._source.value == CHECKPOINT_SOURCE
        self.set_row_visible(self._checkpoint, from_file)
        self.set_row_visible(self._baseline_scale, not from_file)

    def _prepare(self) -> dict:
        layer = self._image.value
        frames = image_frames(layer, "input (LR)")
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
                    "Choose a model file (best.pt or last.pt of a training run), or pick a "
                    f"baseline as the method{f'; {path} does not exist' if path else ''}."
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

    def _on_progress(self, event: InferenceProgress) -> None:
        self._progress.value = event.done
        rate = event.done / max(event.elapsed_s, 1e-9)
        eta = (event.total - event.done) / rate
        self.report(
            f"{event.done}/{event.total} frames on {event.device} · {rate:.2f} frames/s · "
            f"about {eta:.0f} s left"
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
        metadata = {
            FOV_MASK_KEY: result.fov_mask,
            ROLE_KEY: "sr",
            "sr_model": result.model_label,
            "sr_checkpoint": None if result.checkpoint is None else str(result.checkpoint),
            "sr_scale": result.scale,
            "sr_device": result.device,
            "sr_source_layer": layer.name,
            "sr_settings": result.settings,
        }
        attributes = {
            "metadata": metadata,
            "contrast_limits": percentile_limits(result.data, result.fov_mask),
            "scale": scale,
            "translate": translate,
        }
        previous = self._previous_result(metadata)
        if previous is not None:
            previous.data = result.data
            for key, value in attributes.items():
                setattr(previous, key, value)
            name = previous.name
        else:
            name = self.viewer.add_image(
                result.data, name=RESULT_PREFIX + result.model_label, **attributes
            ).name
        frames = 1 if result.data.ndim == 2 else len(result.data)
        self.report(
            f"Done: '{name}', {frames} frame(s) with {result.model_label} (×{result.scale}) on "
            f"{result.device} in {result.elapsed_s:.1f} s. Score it in the SR metrics dock."
        )

    def _previous_result(self, metadata: dict):
        """The layer an earlier run of the same model on the same input made, if any."""
        same = ("sr_model", "sr_checkpoint", "sr_scale", "sr_source_layer")
        for candidate in self.viewer.layers:
            if candidate.metadata.get(ROLE_KEY) == "sr" and all(
                candidate.metadata.get(key) == metadata[key] for key in same
            ):
                return candidate
        return None

    def _on_error(self, exc: Exception) -> None:
        message = f"Super-resolution failed: {exc}"
        if "out of memory" in str(exc).lower():
            message += " Try a tile size (e.g. 256), fewer frames per batch, or the CPU."
        self.report(message, "error")

    def _on_aborted(self) -> None:
        self.report(
            f"Stopped after {self._progress.value}/{self._progress.max} frames; no layer added."
        )

    def _on_finished(self) -> None:
        self._run.enabled, self._stop.enabled = True, False


def find_inference_dock(viewer):
    """The open inference dock of ``viewer`` (napari hands each dock its own proxy), if any."""
    target = unwrapped(viewer)
    for widget in list(_LIVE_WIDGETS):
        if unwrapped(widget.viewer) is target and not widget.closed:
            return widget
    return None


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
        model_label = checkpoint["model"].get("name") or "custom"
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
