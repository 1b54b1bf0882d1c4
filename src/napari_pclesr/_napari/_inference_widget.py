"""The "Super-resolve" dock: run a trained, pretrained or baseline model on an image layer.

The work runs in a worker generator that streams the input through
:meth:`napari_pclesr.infer.SuperResolver.iter_batches` (a lazy recording is read batch by
batch) and yields an :class:`InferenceProgress` after each batch, so the viewer stays
responsive and *Stop* ends the run between two batches. The output layer is added only when
every frame is done. When the input has a sharp reference in the viewer (the HR it was
simulated from, or HR-hat), the result and its input are scored against it, and a result
worse than its input is said so.
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
    WORSE_MARGIN,
    PclesrDock,
    add_or_update_image,
    device_choices,
    image_frames,
    layer_fov_mask,
    layer_role,
    percentile_limits,
    pick_default,
    set_choices,
    ssim_in_fov,
    tip,
    unwrapped,
)
from napari_pclesr.pretrained import PREFIX as PRETRAINED_PREFIX

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
#: Frames scored against the reference to check a result (spread over the stack): enough for
#: a clear verdict, few enough to take well under a second.
CHECK_FRAMES = 8

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
    #: Computed in the worker: percentiles of a long stack would freeze the viewer.
    contrast_limits: tuple[float, float] = (0.0, 1.0)
    settings: dict = field(default_factory=dict)
    check: dict | None = None


def baseline_choices(names) -> list[tuple[str, str]]:
    """(label, name) of each baseline, its plain name first."""
    return [(f"{BASELINE_NAMES.get(name, name)} ({name})", name) for name in names]


def pretrained_choices(names) -> list[tuple[str, str]]:
    """(label, source) of each pretrained network: ``pretrained:NAME`` as the source."""
    return [(f"Pretrained: {name}", PRETRAINED_PREFIX + name) for name in names]


def _load_catalogue() -> dict:
    from napari_pclesr import baselines, pretrained

    return {
        "baselines": baselines.available(),
        "pretrained": pretrained.available(),
        "devices": device_choices(),
    }


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
    stopping_message = "Stopping after the current frames…"

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
            "A network you trained (its best.pt or last.pt), a pretrained network shipped with "
            "the plugin (edsr: the best quality, about 5 s per 576² frame on a CPU, use a GPU "
            "for long recordings; fsrcnn: fast and conservative), or a classical baseline to "
            "compare with.",
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
            SpinBox(label="Tile overlap in pixels (0: exact)", min=0, max=1024, value=0),
            "Context each tile sees around the part it keeps. 0 uses the network's reach "
            "(receptive field), which makes the tiled result equal the whole-frame one; a "
            "smaller value is faster but may show seams.",
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
        self.follow_layers()
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
        message = f"Super-resolving '{job['layer'].name}' ({total} frame(s))…"
        return self.start_job(_super_resolve_streamed, job, total, message)

    def use_checkpoint(self, path) -> None:
        """Select the checkpoint file ``path`` as the model (e.g. a finished training's best)."""
        self._source.value = CHECKPOINT_SOURCE
        self._checkpoint.value = Path(path)
        self.report(f"Model {Path(path).name} selected ({path}); pick the input and press Run.")

    def refresh_choices(self, *_event) -> None:
        super().refresh_choices()
        pick_default(self._image, self.viewer, ("lr",))

    # -- internals ------------------------------------------------------------------------------

    def _fill_catalogue(self, catalogue: dict) -> None:
        chosen = self._source.value
        set_choices(
            self._source,
            [
                ("Trained model (checkpoint file)", CHECKPOINT_SOURCE),
                *pretrained_choices(catalogue["pretrained"]),
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
            "overlap": int(self._overlap.value) or None,
            "batch_size": int(self._batch_size.value),
            "half": HALF_CHOICES[self._half.value],
        }
        if tile is not None and tile <= 2 * (settings["overlap"] or 0):
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
        elif self._source.value.startswith(PRETRAINED_PREFIX):
            source, scale = self._source.value, None
        else:
            source, scale = self._source.value, int(self._baseline_scale.value)
        return {
            "frames": frames,
            "fov_mask": layer_fov_mask(layer, frames.shape[-2:]),
            "source": source,
            "scale": scale,
            "settings": settings,
            "layer": layer,
            "references": self._references(layer),
        }

    def _references(self, layer) -> list[tuple[str, object]]:
        """Sharp layers a result of ``layer`` can be checked against, best first: the HR it
        was simulated from, then the newest HR or HR-hat layers (the worker keeps the first
        whose shape fits the result)."""
        from napari.layers import Image

        images = [other for other in self.viewer.layers if isinstance(other, Image)]
        origin = layer.metadata.get("simulated_from")
        ordered = [other for other in images if other.name == origin]
        ordered += [other for other in reversed(images) if layer_role(other) == "hr"]
        return [(other.name, other.data) for other in ordered if other is not layer]

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
            "sr_check": result.check,
        }
        attributes = {
            "metadata": metadata,
            "contrast_limits": result.contrast_limits,
            "scale": scale,
            "translate": translate,
        }
        previous = self._previous_result(metadata)
        if previous is not None:
            name = add_or_update_image(self.viewer, previous.name, result.data, **attributes).name
        else:
            name = self.viewer.add_image(
                result.data, name=RESULT_PREFIX + result.model_label, **attributes
            ).name
        frames = 1 if result.data.ndim == 2 else len(result.data)
        done = (
            f"Done: '{name}', {frames} frame(s) with {result.model_label} (×{result.scale}) on "
            f"{result.device} in {result.elapsed_s:.1f} s."
        )
        check = result.check
        if check is None:
            self.report(f"{done} Score it in the SR metrics dock.")
            return
        versus = (
            f"SSIM against '{check['reference']}' {check['sr_ssim']:.3f}, its input "
            f"{check['lr_ssim']:.3f}"
        )
        if check["sr_ssim"] < check["lr_ssim"] - WORSE_MARGIN:
            self.report(
                f"{done} It is worse than its input ({versus}): use a better-trained model "
                "or another method.",
                "warning",
            )
        else:
            self.report(f"{done} {versus}.")

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


def _super_resolve_streamed(job: dict):
    """Generator run by the worker: stream the frames through the model batch by batch,
    yielding progress; then check the result against a sharp reference when there is one."""
    from napari_pclesr import pretrained
    from napari_pclesr.infer import SuperResolver
    from napari_pclesr.train.checkpoint import load_checkpoint

    start = time.perf_counter()
    settings = job["settings"]
    source, checkpoint_path = job["source"], None
    if isinstance(source, str) and source.startswith(PRETRAINED_PREFIX):
        model_label = source.removeprefix(PRETRAINED_PREFIX)
        checkpoint_path = pretrained.checkpoint_path(source)
        source = load_checkpoint(checkpoint_path)
    elif isinstance(source, Path):
        # Read and check the file once, here: the label is the network's name.
        checkpoint_path = source
        source = load_checkpoint(source)
        model_label = source["model"].get("name") or "custom"
    else:
        model_label = source if job["scale"] == 1 else f"{source} ×{job['scale']}"
    resolver = SuperResolver(source, scale=job["scale"], **settings)
    frames = job["frames"]
    stack = frames[np.newaxis] if frames.ndim == 2 else frames
    scale = resolver.scale
    total, height, width = stack.shape
    output = np.empty((total, height * scale, width * scale), np.float32)
    # The output is 0 outside the FoV: where some output frame is nonzero is the SR's FoV,
    # known without reading the (possibly lazy) input twice.
    fov = np.zeros(output.shape[1:], bool)
    name = f"layer '{job['layer'].name}'"
    for batch in resolver.iter_batches(stack, fov_mask=job["fov_mask"], name=name):
        output[batch.start : batch.stop] = batch.frames
        fov |= (batch.frames != 0).any(axis=0)
        yield InferenceProgress(batch.stop, total, str(resolver.device), batch.progress.elapsed_s)
    if job["fov_mask"] is not None:
        from napari_pclesr.data.patches import upscale_mask

        fov = upscale_mask(job["fov_mask"], scale)
    data = output[0] if frames.ndim == 2 else output
    return InferenceResult(
        data=data,
        source_layer=job["layer"],
        model_label=model_label,
        checkpoint=checkpoint_path,
        scale=scale,
        fov_mask=fov,
        device=str(resolver.device),
        elapsed_s=time.perf_counter() - start,
        contrast_limits=percentile_limits(data, fov),
        settings=settings,
        check=_check_against_reference(stack, output, fov, scale, job["references"]),
    )


def _check_against_reference(lr, sr, fov, scale: int, references) -> dict | None:
    """SSIM of the result and of its input (nearest-upsampled) against the first reference
    of the result's shape, on up to :data:`CHECK_FRAMES` frames; None without one."""
    for name, data in references:
        shape = tuple(data.shape)
        if shape not in (sr.shape, sr.shape[1:]) or (len(shape) == 3 and shape[0] != len(sr)):
            continue
        chosen = np.unique(np.linspace(0, len(sr) - 1, CHECK_FRAMES).astype(int))
        # Frame by frame: a lazy stack (a recording, HR-hat) reads only these frames.
        reference = np.stack(
            [np.asarray(data[i] if len(shape) == 3 else data, np.float32) for i in chosen]
        )
        lr_frames = np.stack([np.asarray(lr[i], np.float32) for i in chosen])
        lr_on_grid = np.kron(lr_frames, np.ones((1, scale, scale), np.float32))
        return {
            "reference": name,
            "frames": chosen.tolist(),
            "sr_ssim": ssim_in_fov(sr[chosen], reference, fov),
            "lr_ssim": ssim_in_fov(lr_on_grid, reference, fov),
        }
    return None
