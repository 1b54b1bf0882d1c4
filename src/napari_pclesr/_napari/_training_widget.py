"""The "Train an SR model" dock: supervised training from image layers or sample phantoms.

The run is :func:`napari_pclesr.train.iter_train` inside a ``thread_worker`` generator: its
typed events (:mod:`napari_pclesr.train.events`) update the progress bar, the status line and
the loss history while the viewer stays responsive. *Stop* sets the loop's ``stop_event``: the
current iteration finishes, ``last.pt`` is written, and the run ends with a
:class:`~napari_pclesr.train.TrainingFinished` event like a completed one.
"""

from __future__ import annotations

import ast
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from magicgui.widgets import (
    ComboBox,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
    TextEdit,
)

from napari_pclesr import losses, models
from napari_pclesr._napari._docks import (
    WorkerDock,
    device_choices,
    image_frames,
    layer_fov_mask,
    report,
)
from napari_pclesr._napari._inference_widget import _LIVE_WIDGETS, CHECKPOINT_FILTER, SCALES
from napari_pclesr.train import (
    CheckpointSaved,
    IterationDone,
    TrainConfig,
    TrainingFinished,
    TrainingStarted,
    TrainResult,
    ValidationDone,
)

SIMULATED = "HR layer(s), simulated LR"
PAIRED = "HR layer + LR layer"
SAMPLE = "sample phantoms"
INFERENCE_WIDGET = "Super-resolve (inference)"
# Share of the patches held out for validation when the data are a single sequence.
VALIDATION_SHARE = 0.15
SPARK_CHARACTERS = "▁▂▃▄▅▆▇█"
SPARK_LENGTH = 40
DEFAULTS = TrainConfig()


@dataclass(frozen=True)
class TrainingDataReady:
    """The training data are built; the network is being set up next."""

    summary: str


@dataclass(frozen=True)
class DataSource:
    """What the user chose to train on, taken from the layers in the GUI thread.

    ``hr`` holds one array per sequence; ``lr`` one recorded LR array (or None: simulate it),
    ``lr_fov_mask`` that LR layer's FoV mask when it carries a valid one.
    """

    kind: str
    names: tuple[str, ...] = ()
    hr: tuple = ()
    lr: object = None
    lr_fov_mask: np.ndarray | None = None

    def description(self) -> str:
        """The value stored as ``TrainConfig.data``: resuming needs the same description."""
        if self.kind == SAMPLE:
            return "sample"
        if self.kind == PAIRED:
            return f"napari layers: HR {self.names[0]!r}, LR {self.names[1]!r}"
        return "napari layers, simulated LR: " + ", ".join(repr(name) for name in self.names)


class TrainingWidget(WorkerDock):
    """Train a registered SR network on (HR, LR) pairs, with live progress and a Stop button.

    Data: HR image layer(s) with the LR simulated through a synthetic fibre bundle (noise
    σ mult, σ add), an aligned HR layer and LR layer, or the built-in phantom sequences. Several
    HR layers are split into training and validation by layer; a single sequence is split by
    patch (the last ~15 % of its FoV patches validate). ``best.pt`` and ``last.pt`` go to the
    output folder; each holds the full configuration, so inference and resuming need nothing
    else.
    """

    def __init__(self, napari_viewer):
        self.viewer = napari_viewer  # before the layer lists ask for their choices
        self._model = ComboBox(label="model", choices=models.available(), value="fsrcnn")
        self._hparams = LineEdit(label="hyper-parameters", value="")
        self._n_parameters = Label(value="")
        self._scale = ComboBox(label="scale", choices=list(SCALES), value=DEFAULTS.scale)
        self._loss = ComboBox(label="loss", choices=losses.available(), value=DEFAULTS.loss)
        self._iterations = SpinBox(
            label="iterations", min=1, max=10_000_000, value=DEFAULTS.iterations
        )
        self._batch_size = SpinBox(label="batch size", min=1, max=4096, value=DEFAULTS.batch_size)
        self._learning_rate = LineEdit(label="learning rate", value=f"{DEFAULTS.lr:g}")
        self._val_every = SpinBox(
            label="validate every", min=1, max=10_000_000, value=DEFAULTS.val_every
        )
        self._patch_size = SpinBox(
            label="LR patch size", min=1, max=4096, value=DEFAULTS.patch_size
        )
        self._out_dir = FileEdit(label="output folder", mode="d", nullable=True)
        self._resume = FileEdit(
            label="resume from", mode="r", filter=CHECKPOINT_FILTER, nullable=True
        )
        self._device = ComboBox(label="device", choices=device_choices())
        self._source = ComboBox(label="data", choices=[SIMULATED, PAIRED, SAMPLE])
        self._hr_layers = Select(label="HR layer(s)", choices=self._image_layer_choices)
        self._lr_layer = ComboBox(label="LR layer", choices=self._image_layer_choices)
        self._sigma_mult = FloatSpinBox(
            label="σ mult", min=0.0, max=1.0, step=0.005, value=DEFAULTS.sigma_mult
        )
        self._sigma_add = FloatSpinBox(
            label="σ add", min=0.0, max=1.0, step=0.001, value=DEFAULTS.sigma_add
        )
        self._seed = SpinBox(label="seed", min=0, max=2**31 - 1, value=DEFAULTS.seed)
        self._start = PushButton(text="Start")
        self._stop = PushButton(text="Stop", enabled=False)
        self._progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self._status = Label(value="")
        self._curve = Label(value="")
        self._history = TextEdit(label="history", value="")
        self._history.read_only = True
        self._to_inference = PushButton(text="Open best checkpoint in inference", enabled=False)
        super().__init__(
            widgets=[
                self._model,
                self._hparams,
                self._n_parameters,
                self._scale,
                self._loss,
                self._iterations,
                self._batch_size,
                self._learning_rate,
                self._val_every,
                self._patch_size,
                self._out_dir,
                self._resume,
                self._device,
                self._source,
                self._hr_layers,
                self._lr_layer,
                self._sigma_mult,
                self._sigma_add,
                self._seed,
                self._start,
                self._stop,
                self._progress,
                self._status,
                self._curve,
                self._history,
                self._to_inference,
            ],
        )
        self._stop_event = threading.Event()
        self._checkpoints: dict[str, Path] = {}
        self._losses: list[float] = []
        self._last_ssim: float | None = None
        self._run_device = ""
        self._resume_iteration: int | None = None
        self._model.changed.connect(self._describe_model)
        self._hparams.changed.connect(self._describe_model)
        self._scale.changed.connect(self._describe_model)
        self._source.changed.connect(self._show_source_options)
        self._resume.changed.connect(self._fill_from_checkpoint)
        self._start.changed.connect(self.start)
        self._stop.changed.connect(self.stop)
        self._to_inference.changed.connect(self.open_in_inference)
        self._show_source_options()
        self._describe_model()

    # -- public API (also used by tests and scripts) --------------------------------------------

    @property
    def checkpoints(self) -> dict[str, Path]:
        """The checkpoints written by the latest run, by kind (``"best"``, ``"last"``)."""
        return dict(self._checkpoints)

    def start(self):
        """Check the settings and start training in a worker; returns it, or None if a
        setting is wrong (the message is shown and nothing starts)."""
        if self.worker is not None:
            return self.worker
        try:
            config = self.config()
            source = self._data_source()
            _check_patch_fits(source, config)
        except ValueError as exc:
            report(self._status, str(exc), error=True)
            return None
        self.worker = self._start_worker(config, source)
        return self.worker

    def stop(self):
        """Finish the current iteration, write ``last.pt`` and end the run."""
        if self.worker is not None:
            self._stop_event.set()
            self._status.value = "Stopping after the current iteration (writing last.pt)…"

    def _abandon(self) -> None:
        self._stop_event.set()  # the run still writes last.pt

    def config(self) -> TrainConfig:
        """The :class:`TrainConfig` the current settings describe (``ValueError`` if invalid)."""
        out_dir = self._out_dir.value
        if out_dir is None:
            raise ValueError("Choose an output folder for best.pt and last.pt.")
        try:
            learning_rate = float(self._learning_rate.value)
        except ValueError:
            raise ValueError(
                f"The learning rate must be a number such as 1e-4, got "
                f"{self._learning_rate.value!r}."
            ) from None
        val_every = int(self._val_every.value)
        iterations = int(self._iterations.value)
        if self._resume.value is not None and iterations <= (self._resume_iteration or 0):
            raise ValueError(
                f"{self._resume.value.name} is at iteration {self._resume_iteration}; set the "
                "iterations higher to train further."
            )
        config = TrainConfig(
            model=self._model.value,
            hparams=parse_hparams(self._hparams.value),
            scale=int(self._scale.value),
            loss=self._loss.value,
            iterations=iterations,
            batch_size=int(self._batch_size.value),
            lr=learning_rate,
            val_every=val_every,
            log_every=min(DEFAULTS.log_every, val_every),
            seed=int(self._seed.value),
            device=self._device.value,
            out_dir=str(out_dir),
            resume=None if self._resume.value is None else str(self._resume.value),
            patch_size=int(self._patch_size.value),
            sigma_mult=float(self._sigma_mult.value),
            sigma_add=float(self._sigma_add.value),
            data=self._data_source(read_layers=False).description(),
        )
        _count_parameters(config)  # bad hyper-parameter values fail here, not in the worker
        return config

    def open_in_inference(self):
        """Hand the best (else the last) checkpoint to an inference dock of this viewer,
        opening one if none is docked; returns that dock's widget."""
        path = self._checkpoints.get("best") or self._checkpoints.get("last")
        if path is None:
            return None
        viewer = _unwrapped(self.viewer)
        docked = [
            widget
            for widget in list(_LIVE_WIDGETS)
            if _unwrapped(widget.viewer) is viewer
            and not widget.closed
            and widget.native.parent() is not None  # napari unparents a removed dock
        ]
        if docked:
            widget = docked[0]
        else:
            _, widget = self.viewer.window.add_plugin_dock_widget("napari-pclesr", INFERENCE_WIDGET)
        widget.use_checkpoint(path)
        return widget

    # -- settings -------------------------------------------------------------------------------

    def _image_layer_choices(self, _widget=None) -> list[tuple[str, object]]:
        from napari.layers import Image

        layers = getattr(self.viewer, "layers", [])
        return [(layer.name, layer) for layer in layers if isinstance(layer, Image)]

    def _show_source_options(self, _value=None) -> None:
        source = self._source.value
        self._hr_layers.visible = source != SAMPLE
        self._lr_layer.visible = source == PAIRED
        for control in (self._sigma_mult, self._sigma_add):
            control.visible = source != PAIRED

    def _describe_model(self, _value=None) -> None:
        """Show the parameter count of the chosen network (counted in a worker: building even
        a bodiless network can take a moment the first time)."""
        from napari.qt.threading import thread_worker

        name = self._model.value
        defaults = ", ".join(f"{k}={v}" for k, v in models.default_hparams(name).items())
        self._hparams.tooltip = f"key=value pairs; {name} defaults: {defaults}"
        request = (name, self._hparams.value, self._scale.value)
        try:
            config = TrainConfig(model=name, hparams=parse_hparams(request[1]), scale=request[2])
        except ValueError as exc:
            self._n_parameters.value = str(exc)
            return
        self._n_parameters.value = "counting parameters…"

        def show(text: str) -> None:
            current = (self._model.value, self._hparams.value, self._scale.value)
            if current == request:  # otherwise a newer request is on its way
                self._n_parameters.value = text

        worker = thread_worker(_count_parameters, ignore_errors=True)(config)
        self._connect(
            worker.returned, lambda count: show(f"{count:,} parameters (defaults: {defaults})")
        )
        self._connect(worker.errored, lambda exc: show(str(exc)))
        worker.start()

    def _fill_from_checkpoint(self, path=None) -> None:
        """Copy the network and data settings of a checkpoint chosen to resume from."""
        self._resume_iteration = None
        if path is None:
            return
        try:
            saved, self._resume_iteration = _read_config(path)
        except (OSError, ValueError) as exc:
            report(self._status, f"Cannot resume from {path}: {exc}", error=True)
            return
        self._model.value = saved["model"]
        self._hparams.value = ", ".join(f"{k}={v!r}" for k, v in saved["hparams"].items())
        self._scale.value = saved["scale"]
        self._patch_size.value = saved["patch_size"]
        self._seed.value = saved["seed"]
        self._loss.value = saved["loss"]
        self._batch_size.value = saved["batch_size"]
        self._learning_rate.value = f"{saved['lr']:g}"
        self._val_every.value = saved["val_every"]
        self._sigma_mult.value = saved["sigma_mult"]
        self._sigma_add.value = saved["sigma_add"]
        self._iterations.value = max(self._iterations.value, saved["iterations"])
        if saved["data"] == "sample":
            self._source.value = SAMPLE
        self._status.value = (
            f"Resuming {Path(path).name} at iteration {self._resume_iteration}: settings "
            f"copied from it (data: {saved['data']})."
        )

    def _data_source(self, read_layers: bool = True) -> DataSource:
        kind = self._source.value
        if kind == SAMPLE:
            return DataSource(kind)
        hr_layers = list(self._hr_layers.value)
        if not hr_layers:
            raise ValueError("Select at least one HR image layer (or train on sample phantoms).")
        if kind == PAIRED:
            lr_layer = self._lr_layer.value
            if len(hr_layers) != 1 or lr_layer is None:
                raise ValueError(
                    "HR + LR training needs exactly one selected HR layer and an LR layer "
                    "(aligned stacks, frame by frame)."
                )
            if lr_layer is hr_layers[0]:
                raise ValueError("The HR and LR layers must be different layers.")
            names = (hr_layers[0].name, lr_layer.name)
            if not read_layers:
                return DataSource(kind, names)
            hr = image_frames(hr_layers[0], "HR")
            lr = image_frames(lr_layer, "LR")
            return DataSource(kind, names, (hr,), lr, layer_fov_mask(lr_layer, lr.shape[-2:]))
        names = tuple(layer.name for layer in hr_layers)
        if not read_layers:
            return DataSource(kind, names)
        return DataSource(kind, names, tuple(image_frames(layer, "HR") for layer in hr_layers))

    # -- the run --------------------------------------------------------------------------------

    def _start_worker(self, config: TrainConfig, source: DataSource):
        from napari.qt.threading import thread_worker

        self._stop_event = threading.Event()
        self._checkpoints = {}
        self._losses = []
        self._last_ssim = None
        self._history.value = ""
        self._curve.value = ""
        from qtpy.QtCore import Qt

        run = _train_in_worker(config, source, self._stop_event)

        def drive():
            return (yield from run)

        worker = thread_worker(drive, ignore_errors=True)()
        # napari quits every worker when it closes, and superqt then stops iterating without
        # closing the generator: close the run in the worker thread, so it writes last.pt now.
        worker.aborted.connect(run.close, Qt.ConnectionType.DirectConnection)
        self._connect(worker.yielded, self._on_event)
        self._connect(worker.returned, self._on_returned)
        self._connect(worker.errored, self._on_error)
        self._connect(worker.finished, self._on_finished)
        self._start.enabled, self._stop.enabled = False, True
        self._to_inference.enabled = False
        self._progress.max, self._progress.value = config.iterations, 0
        self._status.value = "Preparing the training data…"
        worker.start()
        return worker

    def _on_event(self, event) -> None:
        if isinstance(event, TrainingDataReady):
            self._status.value = f"{event.summary}; setting up the network…"
        elif isinstance(event, TrainingStarted):
            self._progress.value = event.start_iteration
            precision = f", {event.amp_dtype}" if event.amp_dtype else ""
            self._log(
                f"{event.model or 'custom'}: {event.n_parameters:,} parameters on "
                f"{event.device}{precision}; {event.n_train_patches} training and "
                f"{event.n_val_patches} validation patches; iterations "
                f"{event.start_iteration + 1}–{event.iterations}"
            )
            self._run_device = event.device
            self._status.value = f"Training on {event.device}…"
        elif isinstance(event, IterationDone):
            self._on_iteration(event)
        elif isinstance(event, ValidationDone):
            self._last_ssim = event.val_ssim
            best = " (best)" if event.is_best else ""
            self._log(
                f"validation at {event.iteration}: loss {event.val_loss:.4g}, "
                f"SSIM {event.val_ssim:.4f}{best}"
            )
        elif isinstance(event, CheckpointSaved):
            self._checkpoints[event.kind] = Path(event.path)
        elif isinstance(event, TrainingFinished):
            self._on_training_finished(event.result)

    def _on_iteration(self, event: IterationDone) -> None:
        self._progress.value = event.iteration
        self._losses.append(event.loss)
        ssim = "–" if self._last_ssim is None else f"{self._last_ssim:.4f}"
        memory = "" if event.memory_mb is None else f" · {event.memory_mb:,.0f} MB"
        self._status.value = (
            f"iteration {event.iteration}/{event.iterations} · loss {event.loss:.4g} · "
            f"val SSIM {ssim} · {event.iterations_per_s:.2f} it/s · ETA "
            f"{format_duration(event.eta_s)} · {self._run_device}{memory}"
        )
        self._curve.value = f"loss {sparkline(self._losses)}"
        self._log(f"iteration {event.iteration}: loss {event.loss:.4g}, lr {event.lr:.3g}")

    def _on_training_finished(self, result: TrainResult) -> None:
        if result.stopped_by_request:
            how = "Stopped"
        elif result.stopped_early:
            how = "Stopped early (no better validation loss)"
        else:
            how = "Finished"
        lines = [f"{how} at iteration {result.iterations} in {result.elapsed_s:.1f} s."]
        if result.best_checkpoint is not None:
            lines.append(
                f"best: {result.best_checkpoint} (iteration {result.best_iteration}, "
                f"val loss {result.best_val_loss:.4g})"
            )
        if result.last_checkpoint is not None:
            lines.append(f"last: {result.last_checkpoint}")
        self._status.value = "\n".join(lines)
        for line in lines:
            self._log(line)
        self._to_inference.enabled = bool(self._checkpoints)

    def _on_returned(self, result: TrainResult | None) -> None:
        if result is None:
            self._status.value = "Stopped before training started; nothing was written."

    def _on_error(self, exc: Exception) -> None:
        message = f"Training failed: {exc}"
        if "out of memory" in str(exc).lower():
            message += " Use a smaller batch or patch size, or a smaller model."
        if "last" in self._checkpoints:
            message += f" The last checkpoint is {self._checkpoints['last']}."
        report(self._status, message, error=True)

    def _on_finished(self) -> None:
        self.worker = None
        self._start.enabled, self._stop.enabled = True, False

    def _log(self, line: str) -> None:
        self._history.value = f"{self._history.value}{line}\n"


# -- helpers ------------------------------------------------------------------------------------


def parse_hparams(text: str) -> dict:
    """Parse ``"features=8, mapping_layers=1"`` into a dict (values as Python literals).

    Raises
    ------
    ValueError
        If an item is not ``key=value``.
    """
    hparams = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, equals, value = item.partition("=")
        if not equals or not key.strip().isidentifier():
            raise ValueError(
                f"Hyper-parameters are key=value pairs separated by commas (e.g. features=32, "
                f"mapping_layers=2); cannot read {item!r}."
            )
        try:
            hparams[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            hparams[key.strip()] = value.strip()
    return hparams


def format_duration(seconds: float) -> str:
    """``"12 s"``, ``"3 min 05 s"`` or ``"1 h 02 min"``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def sparkline(values, length: int = SPARK_LENGTH) -> str:
    """The last ``length`` values as a line of block characters (low to high)."""
    recent = np.asarray(values[-length:], dtype=float)
    if recent.size == 0:
        return ""
    low, high = recent.min(), recent.max()
    span = high - low if high > low else 1.0
    levels = np.round((recent - low) / span * (len(SPARK_CHARACTERS) - 1)).astype(int)
    return "".join(SPARK_CHARACTERS[level] for level in levels)


def _unwrapped(viewer):
    """The viewer itself: napari hands plugin docks a proxy, a new one for each dock."""
    return getattr(viewer, "__wrapped__", viewer)


def _count_parameters(config: TrainConfig) -> int:
    """Build the configured network without memory (meta device) and count its parameters."""
    import torch

    try:
        with torch.device("meta"):
            network = models.create(config.model, scale=config.scale, **config.hparams)
    except TypeError as exc:
        raise ValueError(f"model {config.model!r}: bad hyper-parameter value: {exc}") from None
    return models.count_parameters(network)


def _read_config(path) -> tuple[dict, int]:
    """The training configuration and iteration of a checkpoint, without loading its
    tensors."""
    import torch

    from napari_pclesr.train.checkpoint import validate_checkpoint

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises many types for damaged files
        raise ValueError(f"not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    payload = validate_checkpoint(payload, source=str(path))
    if payload["model"].get("name") is None:
        raise ValueError("it holds a custom network, which this dock cannot rebuild.")
    return TrainConfig.from_dict(payload["config"]).to_dict(), int(payload["iteration"])


def _check_patch_fits(source: DataSource, config: TrainConfig) -> None:
    """Refuse at once HR layers that the scale does not divide, or a patch larger than the LR
    frames of a chosen layer."""
    if source.kind == SAMPLE:
        return
    for name, hr in zip(source.names, source.hr, strict=False):
        if hr.shape[-2] % config.scale or hr.shape[-1] % config.scale:
            raise ValueError(
                f"The HR frames of '{name}' are {hr.shape[-2]}x{hr.shape[-1]}, not divisible by "
                f"the scale {config.scale}; crop the layer or choose another scale."
            )
        height, width = (side // config.scale for side in hr.shape[-2:])
        if config.patch_size > min(height, width):
            raise ValueError(
                f"The LR patch size {config.patch_size} is bigger than the {height}x{width} LR "
                f"frames of '{name}' (HR {hr.shape[-2]}x{hr.shape[-1]} at scale "
                f"{config.scale}); use a patch size <= {min(height, width)}."
            )


def _train_in_worker(config: TrainConfig, source: DataSource, stop_event: threading.Event):
    """Generator run by the worker: build the data, then yield the training events."""
    from napari_pclesr.train import iter_train

    data = _training_data(source, config)
    yield TrainingDataReady(_summary(source, data))
    if stop_event.is_set():
        return None
    return (yield from iter_train(config, data=data, stop_event=stop_event))


def _training_data(source: DataSource, config: TrainConfig):
    """The ``data`` argument of :func:`~napari_pclesr.train.iter_train` for a data source.

    ``None`` for the sample phantoms (the loop loads them); the whole collection when it has
    three or more sequences (split by ``config.split``); a (train, val) pair of one sequence
    each for two; and for one sequence a split of its patch grid.
    """
    from napari_pclesr.data.patches import PairedSequences

    if source.kind == SAMPLE:
        return None
    hr = [np.asarray(frames) for frames in source.hr]
    lr = None if source.lr is None else [np.asarray(source.lr)]
    masks = None if source.lr_fov_mask is None else [source.lr_fov_mask]
    options = {"scale": config.scale}
    names = source.names[: len(hr)]  # a paired source also names its LR layer
    collection = PairedSequences(hr, lr, fov_masks=masks, names=names, **options)
    if len(collection) >= 3:
        return collection
    if len(collection) == 2:
        train, val, _ = collection.split((0.5, 0.5, 0.0), seed=config.seed)
        return train, val
    return _split_patches(collection, hr, lr, config.patch_size, options)


def _split_patches(collection, hr, lr, patch_size: int, options: dict):
    """Split one sequence by patch: the last ~15 % of its FoV patches become validation.

    Training and validation share the frames but see disjoint patches of the same grid: each
    part gets a FoV mask that contains only its own patches.
    """
    from napari_pclesr.data.patches import PairedSequences

    name = collection.names[0]
    fov = collection.fov_mask(0)
    corners = collection.patch_corners(0, patch_size)
    if len(corners) < 2:
        raise ValueError(
            f"Only {len(corners)} patch(es) of {patch_size}x{patch_size} LR pixels fit inside "
            f"the field of view of '{name}'; one sequence needs at least 2 (training and "
            "validation). Use a smaller patch size, larger frames, or more HR layers."
        )
    n_val = max(1, round(VALIDATION_SHARE * len(corners)))
    val_mask = np.zeros_like(fov)
    for row, col in corners[-n_val:]:
        val_mask[row : row + patch_size, col : col + patch_size] = True
    return tuple(
        PairedSequences(hr, lr, fov_masks=[mask], names=[f"{name} ({part})"], **options)
        for mask, part in ((fov & ~val_mask, "training patches"), (val_mask, "validation patches"))
    )


def _summary(source: DataSource, data) -> str:
    if data is None:
        return "Data: sample phantom sequences"
    parts = data if isinstance(data, tuple) else (data,)
    split = " / ".join(", ".join(part.names) for part in parts)
    lr = "recorded LR" if source.lr is not None else "simulated LR"
    return f"Data ({lr}): {split}"
