"""The "Train an SR model" dock: supervised, adversarial (SRGAN) or cycle-GAN training from
image layers or built-in phantoms.

The run is :func:`napari_pclesr.train.iter_train` inside a worker generator: its typed events
(:mod:`napari_pclesr.train.events`) move the progress bar, the status line and a live plot of
every logged loss term (the generator's and the discriminator's for GANs) and of the
validation score, and at every validation the current model super-resolves a fixed
validation frame into a preview layer. *Stop* sets the loop's ``stop_event``: the
current iteration finishes, ``last.pt`` is written, and the run ends with a
:class:`~napari_pclesr.train.TrainingFinished` event like a completed one.
"""

from __future__ import annotations

import ast
import functools
import threading
import time
import weakref
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
from qtpy.QtCore import QTimer

from napari_pclesr._napari._docks import (
    FOV_MASK_KEY,
    ROLE_KEY,
    WORSE_MARGIN,
    PclesrDock,
    add_or_update_image,
    button_row,
    device_choices,
    image_frames,
    layer_fov_mask,
    percentile_limits,
    set_choices,
    ssim_in_fov,
    tip,
)
from napari_pclesr._napari._inference_widget import (
    CHECKPOINT_FILTER,
    SCALES,
    find_inference_dock,
)
from napari_pclesr._napari._plots import LinePlot

SIMULATED = "simulated"
PAIRED = "paired"
SAMPLE = "sample"
DATA_CHOICES = [
    ("Sharp images (HR); fibre view simulated", SIMULATED),
    ("Pairs: sharp (HR) and fibre (LR) images", PAIRED),
    ("Built-in phantoms", SAMPLE),
]
INFERENCE_WIDGET = "Super-resolve (inference)"
#: The network the dock starts with: the smallest, quick to try on a CPU.
DEFAULT_MODEL = "fsrcnn"
#: Plain names of the training objectives (``TrainConfig.objective``).
OBJECTIVE_CHOICES = [
    ("Supervised: learn from pairs", "supervised"),
    ("Adversarial (SRGAN): pairs + a critic", "adversarial"),
    ("Cycle GAN (seed 001): no HR needed", "cycle"),
]
#: Where the cycle GAN's critic takes its "real" patches from (``TrainConfig.target_domain``).
TARGET_DOMAIN_CHOICES = [
    ("Natural photographs (built in)", "natural"),
    ("Sharp images from a folder (unpaired)", "unpaired"),
    ("The sharp (HR) images of the data", "paired"),
    ("The fibre images shrunk ×4", "rescaled"),
]
#: The target domain that reads its sharp examples from a folder (``TrainConfig.target_data``).
UNPAIRED = "unpaired"
#: Terms plotted on the loss axis (D's accuracies are in [0, 1] and go to the log only).
PLOTTED_GROUPS = ("G", "D")
#: Plain names of the losses; the registry name follows in brackets.
LOSS_NAMES = {
    "ssim+l1": "Structure + absolute error",
    "l1": "Absolute error",
    "mse": "Squared error",
    "ssim": "Structure (SSIM)",
}
# Share of the patches held out for validation when the data are a single sequence.
VALIDATION_SHARE = 0.15
#: The preview shows at most this many LR pixels across (a crop around the validation area):
#: it is made between two training steps, so it must stay quick for large networks.
PREVIEW_SIDE = 256
#: Pixels between the data and the preview layers, and between the preview's two layers.
PREVIEW_GAP = 20
PREVIEW_INPUT = "Preview · LR"
PREVIEW_OUTPUT = "Preview · SR"


@dataclass(frozen=True)
class Preparing:
    """The run is getting ready (reading layers, building patches): ``stage`` says what."""

    stage: str


@dataclass(frozen=True)
class TrainingPreview:
    """The current model's output on the fixed validation frame crop, with SSIM against the
    HR of the model's output and of its LR input (so a model worse than its input shows)."""

    iteration: int
    lr: np.ndarray
    sr: np.ndarray
    fov_mask: np.ndarray
    sr_ssim: float
    lr_ssim: float


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


def _load_catalogue() -> dict:
    from napari_pclesr import losses, models
    from napari_pclesr.train import TrainConfig

    return {
        "models": models.available(),
        "losses": losses.available(),
        "devices": device_choices(),
        "defaults": TrainConfig(),
    }


class TrainingWidget(PclesrDock):
    """Train a registered SR network on (HR, LR) pairs, with a live plot, preview and Stop.

    Data: HR image layer(s) with the LR simulated through a synthetic fibre bundle, an aligned
    HR layer and LR layer, or the built-in phantom sequences. Several HR layers are split into
    training and validation by layer; a single sequence is split by patch (the last ~15 % of
    its FoV patches validate). ``best.pt`` and ``last.pt`` go to the output folder; each holds
    the full configuration, so inference and resuming need nothing else.
    """

    title = "Training"

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self._build_controls()
        self._stop_event = threading.Event()
        self._checkpoints: dict[str, Path] = {}
        self._last_ssim: float | None = None
        self._warned_worse = False
        self._run_device = ""
        self._plotted: list[str] = []
        self._score_name = "validation loss"
        self._resume_iteration: int | None = None
        # (network, hyper-parameters, scale) -> the problem building it showed, or None.
        self._model_problems: dict[tuple, str | None] = {}
        self._preparing_since: float | None = None
        self._stage = ""
        self._ticker = QTimer(self)
        self._ticker.setInterval(1000)
        self._ticker.timeout.connect(self._show_preparation)
        self._model.changed.connect(self._describe_model)
        self._hparams.changed.connect(self._describe_model)
        self._scale.changed.connect(self._describe_model)
        self._source.changed.connect(self._show_source_options)
        self._objective.changed.connect(self._show_source_options)
        self._target_domain.changed.connect(self._show_source_options)
        self._resume.changed.connect(self._fill_from_checkpoint)
        self._out_dir.changed.connect(self._update_model_buttons)
        self._start.changed.connect(self.start)
        self._stop.changed.connect(self.stop)
        self._use_best.changed.connect(lambda: self.open_in_inference("best"))
        self._use_last.changed.connect(lambda: self.open_in_inference("last"))
        self.follow_layers()
        self._show_source_options()
        self._update_model_buttons()
        self.load_in_background(
            _load_catalogue, self._fill_catalogue, controls=[*self._settings, self._start]
        )

    def _build_controls(self) -> None:
        self._source = tip(
            ComboBox(label="Training data", choices=DATA_CHOICES),
            "What to learn from: sharp images whose fibre view is simulated (the seed "
            "paper's synthetic pairs), recorded pairs of sharp (HR-hat) and fibre (LR) images "
            "aligned frame by frame, or the built-in phantom sequences.",
        )
        self._hr_layers = tip(
            Select(label="Sharp image layer(s) (HR)", choices=self._image_choices),
            "The sharp images to learn from (Ctrl-click for several). Several layers are split "
            "into training and validation by layer; one layer by patch.",
        )
        native_list = self._hr_layers.native
        native_list.setMaximumHeight(5 * native_list.fontMetrics().height() + 8)
        self._lr_layer = tip(
            ComboBox(label="Fibre image layer (LR)", choices=self._image_choices),
            "The recorded pCLE stack aligned with the sharp layer, frame by frame.",
        )
        self._model = tip(
            ComboBox(label="Network", choices=[DEFAULT_MODEL], value=DEFAULT_MODEL),
            "The network to train. fsrcnn is small and quick on a CPU; edsr and densenet_sr "
            "are larger and want a GPU.",
        )
        self._objective = tip(
            ComboBox(label="Training method (objective)", choices=OBJECTIVE_CHOICES),
            "Supervised: the network learns to turn each fibre image into its sharp image "
            "(seed paper 000). Adversarial (SRGAN): the same plus a critic network that pushes "
            "the output to look like sharp images. Cycle GAN (seed 001): learns from fibre "
            "images alone; a critic compares the output with sharp images of other scenes.",
        )
        self._adv_weight = tip(
            LineEdit(label="Adversarial weight", value=""),
            "How much the critic's opinion counts against the content loss; empty: 1e-3 for "
            "SRGAN, 1 for the cycle GAN (the papers' values). 1e-4–1e-2 for SRGAN.",
        )
        self._pretrain = tip(
            SpinBox(label="Warm-up without the critic (steps)", min=0, max=10_000_000),
            "The first steps train the network alone (content loss, or the fibre losses of the "
            "cycle GAN) before the critic starts: GANs are steadier from a sensible start. "
            "0–a few thousand.",
        )
        self._gan_loss = tip(
            ComboBox(
                label="Critic loss",
                choices=[("Standard GAN (bce)", "bce"), ("Relativistic average (ragan)", "ragan")],
            ),
            "How the critic is scored: the standard cross-entropy, or ESRGAN's relativistic "
            "average loss (often steadier).",
        )
        self._d_lr = tip(
            LineEdit(label="Critic learning rate", value=""),
            "Adam step size of the critic; empty: the network's learning rate.",
        )
        self._vec_weight = tip(
            FloatSpinBox(label="Fibre consistency weight (l_Vec)", min=0.0, max=1000.0, step=0.1),
            "Cycle GAN: how strongly the output, sampled back at the fibres, must give the "
            "input's fibre values (seed 001: 1).",
        )
        self._reg_weight = tip(
            FloatSpinBox(label="Row/column mean weight (l_Reg)", min=0.0, max=1000.0, step=0.1),
            "Cycle GAN: how strongly the output's row and column means must follow the "
            "input's (seed 001: 1).",
        )
        self._target_domain = tip(
            ComboBox(label="Critic's sharp examples", choices=TARGET_DOMAIN_CHOICES),
            "Cycle GAN: what the critic learns 'sharp' from: built-in natural photographs, a "
            "folder of sharp images unrelated to these data (e.g. HR-hat of other recordings), "
            "the sharp images of these data (when they have them), or the fibre images shrunk ×4.",
        )
        self._target_data = tip(
            FileEdit(label="Folder of sharp images", mode="d", nullable=True),
            "Cycle GAN, unpaired: a folder of TIFF stacks or images (HR-hat of other "
            "recordings, or sharp images of similar tissue), or one with an hr/ sub-folder.",
        )
        self._iterations = tip(
            SpinBox(label="Training steps (iterations)", min=1, max=10_000_000),
            "How many optimiser steps to take. A first look: 200–2,000 on a CPU; the papers "
            "train for 20,000–80,000 steps on a GPU.",
        )
        self._out_dir = tip(
            FileEdit(label="Output folder", mode="d", nullable=True),
            "Where best.pt (the best model on validation) and last.pt (the latest, to resume "
            "from) are written. Required.",
        )
        self._hparams = tip(
            LineEdit(label="Network settings (hyper-parameters)", value=""),
            "key=value pairs separated by commas, e.g. features=32, mapping_layers=2; empty "
            "for the network's defaults (shown below).",
        )
        self._n_parameters = tip(Label(value=""), "The size of the network as configured.")
        self._scale = tip(
            ComboBox(label="Upscaling (scale)", choices=list(SCALES), value=1),
            "1: the output has the input's grid, as pCLE HR-hat and LR do; 2, 4 or 8 "
            "enlarge (the HR layers must be that many times larger than the LR).",
        )
        self._loss = tip(
            ComboBox(label="Loss function", choices=[("Structure + absolute error", "ssim+l1")]),
            "What training minimises. Structure + absolute error (0.84·(1 − SSIM) + 0.16·L1, "
            "the seed paper's choice) keeps fine structure; absolute error alone is simpler.",
        )
        self._batch_size = tip(
            SpinBox(label="Patches per step (batch size)", min=1, max=4096),
            "Patches per optimiser step. The seed paper uses 54; lower it when memory runs out.",
        )
        self._learning_rate = tip(
            LineEdit(label="Learning rate", value=""),
            "Step size of the Adam optimiser, e.g. 1e-4 (the seed paper) or up to 1e-3 for "
            "short runs; too large makes the loss jump.",
        )
        self._val_every = tip(
            SpinBox(label="Check every (steps)", min=1, max=10_000_000),
            "Every this many steps the model is scored on validation patches, best.pt and "
            "last.pt are saved and the preview layer is refreshed. 50–1,000.",
        )
        self._patch_size = tip(
            SpinBox(label="Patch size (LR pixels)", min=11, max=4096),
            "Side of the square training patches, in input pixels; 64 as in the seed paper. At "
            "least 11 and at most the frame size.",
        )
        self._sigma_mult = tip(
            FloatSpinBox(label="Multiplicative noise (σ mult)", min=0.0, max=1.0, step=0.005),
            "Signal-dependent fibre noise of the simulated LR (seed paper: 0.05; 0–0.15).",
        )
        self._sigma_add = tip(
            FloatSpinBox(label="Additive noise (σ add)", min=0.0, max=1.0, step=0.001),
            "Fibre noise independent of the signal, for the simulated LR (seed paper: 0.01; "
            "0–0.05).",
        )
        self._seed = tip(
            SpinBox(label="Random seed", min=0, max=2**31 - 1),
            "Seeds the weights, the split, the noise and the batch order: the same seed gives "
            "the same run.",
        )
        self._device = tip(
            ComboBox(label="Device", choices=[("auto", "auto")], value="auto"),
            "Where to train: auto picks a GPU when there is one (its name is shown).",
        )
        self._resume = tip(
            FileEdit(
                label="Continue from (resume)", mode="r", filter=CHECKPOINT_FILTER, nullable=True
            ),
            "A last.pt to continue: its settings are copied here; raise the training steps "
            "and press Start.",
        )
        self._start = tip(PushButton(text="Start"), "Check the settings and start training.")
        self._stop = tip(
            PushButton(text="Stop", enabled=False),
            "Finish the current step, save last.pt and end the run.",
        )
        self._use_best = tip(
            PushButton(text="Use best model"),
            "Hand the output folder's best.pt (the best model on validation) to the "
            "Super-resolve dock. Enabled once the file exists.",
        )
        self._use_last = tip(
            PushButton(text="Use last model"),
            "Hand the output folder's last.pt (the latest model) to the Super-resolve dock. "
            "Enabled once the file exists.",
        )
        self._progress = tip(
            ProgressBar(label="Progress", min=0, max=1, value=0),
            "Training steps done (a moving bar while the data are prepared).",
        )
        self._history = tip(TextEdit(value=""), "Every report, validation and file written.")
        self._history.read_only = True
        self._history.native.setMaximumHeight(140)
        self.plot = LinePlot(x_label="training step", y_label="loss", log_y=True)
        self.plot.empty_text = "The loss curves appear here once training runs."
        self.plot.setToolTip(
            "Every loss the run logs (mean since the previous report) and the validation "
            "score, on a log scale. Supervised: both should fall; validation rising while "
            "training falls means overfitting. GANs: the generator (G) and critic (D) losses "
            "should stay balanced; D near 0 means the critic has won."
        )
        self.plot.setMinimumHeight(150)

        self.add_rows([self._source, self._hr_layers, self._lr_layer])
        self.add_rows([self._model, self._objective, self._iterations, self._out_dir])
        self.add_widget(self.plot, stretch=1)
        self.add_widget(button_row(self._use_best, self._use_last))
        self._settings = [
            self._hparams,
            self._scale,
            self._loss,
            self._batch_size,
            self._learning_rate,
            self._val_every,
            self._patch_size,
            self._sigma_mult,
            self._sigma_add,
            self._seed,
            self._device,
            self._resume,
        ]
        self.add_advanced([self._hparams, self._n_parameters, *self._settings[1:]])
        self._gan_settings = [
            self._adv_weight,
            self._pretrain,
            self._gan_loss,
            self._d_lr,
            self._vec_weight,
            self._reg_weight,
            self._target_domain,
            self._target_data,
        ]
        self.add_advanced(self._gan_settings, title="Adversarial options")
        self.add_advanced([self._history], title="Log")
        self._settings += [self._model, self._objective, self._iterations, *self._gan_settings]
        self.add_actions(self._start, self._stop)
        self.add_footer(self._progress)

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
            self.report(str(exc), "error")
            return None
        self._stop_event = threading.Event()
        self._checkpoints = {}
        self._last_ssim = None
        self._warned_worse = False
        self._history.value = ""
        self.plot.clear()
        self._start.enabled, self._stop.enabled = False, True
        self._progress.min, self._progress.max, self._progress.value = 0, 0, 0  # busy
        self._preparing_since = time.monotonic()
        self._stage = "checking the network and reading the image layers"
        self._show_preparation()
        self._ticker.start()
        worker = self.start_worker(
            _train_in_worker,
            config,
            source,
            self._stop_event,
            yielded=self._on_event,
            returned=self._on_returned,
            errored=self._on_error,
            finished=self._on_finished,
        )
        # Not guarded: after the dock closed, this alone tells where the model went.
        worker.returned.connect(functools.partial(_announce_if_closed, weakref.ref(self)))
        return worker

    def _request_stop(self) -> None:
        self._stop_event.set()  # the run still writes last.pt

    def stop(self):
        """Finish the current iteration, write ``last.pt`` and end the run."""
        if self.worker is not None:
            super().stop()
            self.report(f"Stopping after the current step; last.pt goes to {self._out_dir.value}.")

    def _stop_note(self) -> str:
        return f"Stopping (last.pt goes to {self._out_dir.value})"

    def config(self):
        """The ``TrainConfig`` the current settings describe (``ValueError`` if invalid)."""
        from napari_pclesr.train import TrainConfig

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
        adv_weight = _optional_number(self._adv_weight.value, "adversarial weight")
        d_lr = _optional_number(self._d_lr.value, "critic learning rate")
        if self._resume.value is not None and iterations <= (self._resume_iteration or 0):
            raise ValueError(
                f"{self._resume.value.name} is at step {self._resume_iteration}; set the "
                "training steps higher to train further."
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
            log_every=min(TrainConfig.log_every, val_every),
            seed=int(self._seed.value),
            device=self._device.value,
            out_dir=str(out_dir),
            resume=None if self._resume.value is None else str(self._resume.value),
            patch_size=int(self._patch_size.value),
            sigma_mult=float(self._sigma_mult.value),
            sigma_add=float(self._sigma_add.value),
            data=self._data_source(read_layers=False).description(),
            objective=self._objective.value,
            adv_weight=adv_weight,
            d_lr=d_lr,
            pretrain_iterations=int(self._pretrain.value),
            gan_loss=self._gan_loss.value,
            vec_weight=float(self._vec_weight.value),
            reg_weight=float(self._reg_weight.value),
            target_domain=self._target_domain.value,
            target_data=self._target_data_folder(),
        )
        # Building the network would block the UI (torch's first use of its "meta" device
        # takes seconds): reuse the check made in the background when a setting changed. A
        # check still running is repeated by the worker before anything else.
        problem = self._model_problems.get(self._model_request())
        if problem:
            raise ValueError(problem)
        return config

    def open_in_inference(self, kind: str = "best"):
        """Hand the output folder's ``best.pt`` (or ``last.pt``) to the inference dock of this
        viewer, opening one if none is docked; returns that dock, or None without the file."""
        path = self._model_file(kind)
        if path is None:
            self.report(f"There is no {kind}.pt in the output folder yet.", "warning")
            return None
        widget = find_inference_dock(self.viewer)
        if widget is None:
            _, widget = self.viewer.window.add_plugin_dock_widget("napari-pclesr", INFERENCE_WIDGET)
        widget.use_checkpoint(path)
        return widget

    # -- settings -------------------------------------------------------------------------------

    def _fill_catalogue(self, catalogue: dict) -> None:
        defaults = catalogue["defaults"]
        self.ready = False  # one parameter count at the end, not one per setting changed
        set_choices(self._model, catalogue["models"])
        self._model.value = DEFAULT_MODEL
        set_choices(self._loss, [(f"{LOSS_NAMES.get(n, n)} ({n})", n) for n in catalogue["losses"]])
        set_choices(self._device, catalogue["devices"])
        self._device.value = defaults.device
        self._loss.value = defaults.loss
        self._scale.value = defaults.scale
        self._iterations.value = defaults.iterations
        self._batch_size.value = defaults.batch_size
        self._learning_rate.value = f"{defaults.lr:g}"
        self._val_every.value = defaults.val_every
        self._patch_size.value = defaults.patch_size
        self._sigma_mult.value = defaults.sigma_mult
        self._sigma_add.value = defaults.sigma_add
        self._seed.value = defaults.seed
        self._objective.value = defaults.objective
        self._pretrain.value = defaults.pretrain_iterations
        self._gan_loss.value = defaults.gan_loss
        self._vec_weight.value = defaults.vec_weight
        self._reg_weight.value = defaults.reg_weight
        self._target_domain.value = defaults.target_domain
        self.ready = True
        self._describe_model()

    def _show_source_options(self, _value=None) -> None:
        source = self._source.value
        self.set_row_visible(self._hr_layers, source != SAMPLE)
        self.set_row_visible(self._lr_layer, source == PAIRED)
        for control in (self._sigma_mult, self._sigma_add):
            self.set_row_visible(control, source != PAIRED)
        objective = self._objective.value
        self.set_row_visible(self._loss, objective != "cycle")  # the cycle has its own terms
        for control in self._gan_settings:
            self.set_row_visible(control, objective != "supervised")
        for control in (self._vec_weight, self._reg_weight, self._target_domain):
            self.set_row_visible(control, objective == "cycle")
        unpaired = objective == "cycle" and self._target_domain.value == UNPAIRED
        self.set_row_visible(self._target_data, unpaired)

    def _target_data_folder(self) -> str | None:
        """The unpaired target domain's folder; None for the other domains (which ignore it)."""
        if self._objective.value != "cycle" or self._target_domain.value != UNPAIRED:
            return None
        folder = self._target_data.value
        if folder is None or not Path(folder).is_dir():
            raise ValueError(
                "The unpaired target domain needs a folder of sharp images: choose one under "
                "'Folder of sharp images', or pick another source of sharp examples."
            )
        return str(folder)

    def _describe_model(self, _value=None) -> None:
        """Show the parameter count of the chosen network (counted in a worker: building even
        a bodiless network can take a moment the first time)."""
        if not self.ready:
            return
        from napari_pclesr import models
        from napari_pclesr.train import TrainConfig

        name = self._model.value
        defaults = ", ".join(f"{k}={v}" for k, v in models.default_hparams(name).items())
        request = self._model_request()
        try:
            config = TrainConfig(model=name, hparams=parse_hparams(request[1]), scale=request[2])
        except ValueError as exc:
            self._n_parameters.value = str(exc)
            return
        self._n_parameters.value = "counting parameters…"

        def show(text: str, problem: str | None) -> None:
            self._model_problems[request] = problem
            if self._model_request() == request:  # otherwise a newer request is on its way
                self._n_parameters.value = text

        self.start_worker(
            _count_parameters,
            config,
            job=False,
            returned=lambda count: show(f"{count:,} parameters (defaults: {defaults})", None),
            errored=lambda exc: show(str(exc), str(exc)),
        )

    def _model_request(self) -> tuple:
        return (self._model.value, self._hparams.value, self._scale.value)

    def _fill_from_checkpoint(self, path=None) -> None:
        """Copy the network and data settings of a checkpoint chosen to resume from."""
        self._resume_iteration = None
        if path is None:
            return
        try:
            saved, self._resume_iteration = _read_config(path)
        except (OSError, ValueError) as exc:
            self.report(f"Cannot continue from {path}: {exc}", "error")
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
        self._objective.value = saved["objective"]
        self._pretrain.value = saved["pretrain_iterations"]
        self._gan_loss.value = saved["gan_loss"]
        self._vec_weight.value = saved["vec_weight"]
        self._reg_weight.value = saved["reg_weight"]
        for field_name, control in (("adv_weight", self._adv_weight), ("d_lr", self._d_lr)):
            control.value = "" if saved[field_name] is None else f"{saved[field_name]:g}"
        if saved["target_domain"] in {value for _, value in TARGET_DOMAIN_CHOICES}:
            self._target_domain.value = saved["target_domain"]
        if saved.get("target_data"):
            self._target_data.value = saved["target_data"]
        if saved["data"] == "sample":
            self._source.value = SAMPLE
        self.report(
            f"Continuing {Path(path).name} at step {self._resume_iteration}: settings copied "
            f"from it (data: {saved['data']})."
        )

    def _data_source(self, read_layers: bool = True) -> DataSource:
        kind = self._source.value
        if kind == SAMPLE:
            return DataSource(kind)
        hr_layers = list(self._hr_layers.value)
        if not hr_layers:
            raise ValueError("Select at least one sharp (HR) image layer, or train on phantoms.")
        if kind == PAIRED:
            lr_layer = self._lr_layer.value
            if len(hr_layers) != 1 or lr_layer is None:
                raise ValueError(
                    "Training on pairs needs exactly one selected sharp (HR) layer and a fibre "
                    "(LR) layer (aligned stacks, frame by frame)."
                )
            if lr_layer is hr_layers[0]:
                raise ValueError("The sharp (HR) and fibre (LR) layers must be different layers.")
            names = (hr_layers[0].name, lr_layer.name)
            if not read_layers:
                return DataSource(kind, names)
            hr = image_frames(hr_layers[0], "sharp (HR)")
            lr = image_frames(lr_layer, "fibre (LR)")
            return DataSource(kind, names, (hr,), lr, layer_fov_mask(lr_layer, lr.shape[-2:]))
        names = tuple(layer.name for layer in hr_layers)
        if not read_layers:
            return DataSource(kind, names)
        return DataSource(kind, names, tuple(image_frames(lay, "sharp (HR)") for lay in hr_layers))

    # -- the run --------------------------------------------------------------------------------

    def _show_preparation(self) -> None:
        if self._preparing_since is None:
            self._ticker.stop()
            return
        elapsed = time.monotonic() - self._preparing_since
        self.report(f"Preparing: {self._stage}… ({elapsed:.0f} s)")

    def _end_preparation(self) -> None:
        self._preparing_since = None
        self._ticker.stop()

    def _on_event(self, event) -> None:
        from napari_pclesr.train import (
            CheckpointSaved,
            IterationDone,
            TrainingFinished,
            TrainingStarted,
            ValidationDone,
        )

        if isinstance(event, Preparing):
            self._stage = event.stage
            self._show_preparation()
        elif isinstance(event, TrainingStarted):
            self._on_started(event)
        elif isinstance(event, IterationDone):
            self._on_iteration(event)
        elif isinstance(event, ValidationDone):
            self._last_ssim = event.val_ssim
            self.plot.append("val", event.iteration, event.val_loss)
            best = " (best)" if event.is_best else ""
            extra = "".join(
                f", {name} {value:.4g}"
                for name, value in event.scores.items()
                if name not in ("loss", "ssim")
            )
            self._log(
                f"validation at {event.iteration}: {self._score_name} {event.val_loss:.4g}, "
                f"SSIM {event.val_ssim:.4f}{extra}{best}"
            )
        elif isinstance(event, CheckpointSaved):
            self._checkpoints[event.kind] = Path(event.path)
            self._log(f"saved {event.kind}.pt at step {event.iteration}: {event.path}")
            self._update_model_buttons()
        elif isinstance(event, TrainingPreview):
            self._show_preview(event)
        elif isinstance(event, TrainingFinished):
            self._on_training_finished(event.result)

    def _on_started(self, event) -> None:
        from napari_pclesr.train import TERMS

        self._end_preparation()
        # One curve per loss term the objective logs (G and D for GANs), then validation.
        self.plot.remove_series()
        self._plotted = [name for name in event.terms if TERMS[name][1] in PLOTTED_GROUPS]
        for name in self._plotted:
            label, group = TERMS[name]
            self.plot.add_series(name, label if group == "G" else f"{label} (D)")
        self._score_name = event.score
        self.plot.add_series("val", event.score, marker="dot")
        self._progress.max, self._progress.value = event.iterations, event.start_iteration
        precision = f", {event.amp_dtype}" if event.amp_dtype else ""
        self._log(
            f"{event.model or 'custom'}: {event.n_parameters:,} parameters on "
            f"{event.device}{precision}; {event.n_train_patches} training and "
            f"{event.n_val_patches} validation patches; steps "
            f"{event.start_iteration + 1}–{event.iterations}"
        )
        self._run_device = event.device
        self.report(f"Training on {event.device}…")

    def _on_iteration(self, event) -> None:
        self._progress.value = event.iteration
        terms = event.terms or {"loss": event.loss}
        for name in self._plotted:
            if name in terms:  # D's terms are absent during the warm-up
                self.plot.append(name, event.iteration, terms[name])
        ssim = "–" if self._last_ssim is None else f"{self._last_ssim:.4f}"
        memory = "" if event.memory_mb is None else f" · {event.memory_mb:,.0f} MB"
        self.report(
            f"step {event.iteration}/{event.iterations} · loss {event.loss:.4g} · "
            f"validation SSIM {ssim} · {event.iterations_per_s:.2f} steps/s · "
            f"{format_duration(event.eta_s)} left · {self._run_device}{memory}"
        )
        logged = ", ".join(f"{name} {value:.4g}" for name, value in terms.items())
        self._log(f"step {event.iteration}: {logged}, lr {event.lr:.3g}")

    def _show_preview(self, preview: TrainingPreview) -> None:
        """Show the preview's input and output side by side, right of the other layers."""
        metadata = {FOV_MASK_KEY: preview.fov_mask, "iteration": preview.iteration}
        limits = percentile_limits(preview.lr, preview.fov_mask)
        placement = {}
        if PREVIEW_INPUT not in self.viewer.layers:
            right = float(self.viewer.layers.extent.world[1][-1]) if self.viewer.layers else 0
            placement["translate"] = (0, right + PREVIEW_GAP)
        # Updated too: a new run may preview other data.
        source = add_or_update_image(
            self.viewer,
            PREVIEW_INPUT,
            preview.lr,
            metadata={**metadata, ROLE_KEY: "preview"},
            contrast_limits=limits,
            **placement,
        )
        upscaling = preview.sr.shape[-1] / preview.lr.shape[-1]
        left = source.translate[-1] + (preview.lr.shape[-1] + 0.5) * source.scale[-1]
        add_or_update_image(
            self.viewer,
            PREVIEW_OUTPUT,
            preview.sr,
            metadata={**metadata, ROLE_KEY: "preview", "ssim": preview.sr_ssim},
            contrast_limits=limits,
            scale=np.asarray(source.scale) / upscaling,
            translate=(source.translate[-2], left + PREVIEW_GAP),
        )
        self._log(
            f"preview at step {preview.iteration}: SSIM {preview.sr_ssim:.4f} "
            f"(input {preview.lr_ssim:.4f})"
        )
        if preview.sr_ssim < preview.lr_ssim - WORSE_MARGIN:
            message = (
                f"At step {preview.iteration} the model is still worse than its input on the "
                f"preview frame (SSIM {preview.sr_ssim:.3f} vs {preview.lr_ssim:.3f} for the "
                "LR). Train longer, or lower the learning rate if the loss jumps."
            )
            if self._warned_worse:  # one notification per run; the status line follows
                self.status.set_message(message, "warning")
            else:
                self._warned_worse = True
                self.report(message, "warning")

    def _on_training_finished(self, result) -> None:
        self._end_preparation()
        if result.stopped_by_request:
            how = "Stopped"
        elif result.stopped_early:
            how = "Stopped early (no better validation loss)"
        else:
            how = "Finished"
        self._progress.value = result.iterations
        lines = [f"{how} at step {result.iterations} in {result.elapsed_s:.1f} s."]
        if result.best_checkpoint is not None:
            lines.append(
                f"Best model: {result.best_checkpoint} (step {result.best_iteration}, "
                f"validation loss {result.best_val_loss:.4g})."
            )
        if result.last_checkpoint is not None:
            lines.append(f"Model so far: {result.last_checkpoint}.")
        message = " ".join(lines)
        self.report(message)
        for line in lines:
            self._log(line)
        if result.stopped_by_request and not self.isVisible():
            self.notify(message)  # the dock was hidden: say it where it is seen
        self._update_model_buttons()

    def _on_returned(self, result) -> None:
        if result is None:
            self._end_preparation()
            self.report("Stopped before training started; nothing was written.")

    def _on_error(self, exc: Exception) -> None:
        self._end_preparation()
        message = f"Training failed: {exc}"
        if "out of memory" in str(exc).lower():
            message += " Use fewer patches per step, smaller patches, or a smaller network."
        if "last" in self._checkpoints:
            message += f" The model so far is {self._checkpoints['last']}."
        self.report(message, "error")

    def _on_finished(self) -> None:
        self._end_preparation()
        self._start.enabled, self._stop.enabled = True, False
        if self._progress.max == 0:  # ended while preparing: leave the busy bar
            self._progress.max = 1
        self._update_model_buttons()

    def _model_file(self, kind: str) -> Path | None:
        folder = self._out_dir.value
        path = Path(folder) / f"{kind}.pt" if folder is not None else None
        return path if path is not None and path.is_file() else None

    def _update_model_buttons(self, _value=None) -> None:
        self._use_best.enabled = self._model_file("best") is not None
        self._use_last.enabled = self._model_file("last") is not None

    def _log(self, line: str) -> None:
        self._history.value = f"{self._history.value}{line}\n"


def _announce_if_closed(reference, result) -> None:
    """After the dock closed mid-run, say where the run left its model."""
    dock = reference()
    if dock is None or not dock.closed or result is None:
        return
    from napari.utils.notifications import show_info

    where = result.last_checkpoint or result.best_checkpoint
    show_info(
        f"Training stopped at step {result.iterations} when its dock closed; the model so far "
        f"is {where}."
    )


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
                f"Network settings are key=value pairs separated by commas (e.g. features=32, "
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


def _count_parameters(config) -> int:
    """Build the configured network without memory (meta device) and count its parameters."""
    import torch

    from napari_pclesr import models

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

    from napari_pclesr.train import TrainConfig
    from napari_pclesr.train.checkpoint import validate_checkpoint

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises many types for damaged files
        raise ValueError(f"not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    payload = validate_checkpoint(payload, source=str(path))
    if payload["model"].get("name") is None:
        raise ValueError("it holds a custom network, which this dock cannot rebuild.")
    return TrainConfig.from_dict(payload["config"]).to_dict(), int(payload["iteration"])


def _check_patch_fits(source: DataSource, config) -> None:
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


def _train_in_worker(config, source: DataSource, stop_event: threading.Event):
    """Generator run by the worker: build the data, then yield the training events and, at
    every ``last.pt``, a preview of the current model on a fixed validation frame."""
    from napari_pclesr.train import CheckpointSaved, iter_train

    yield Preparing("checking the network and reading the image layers")
    _count_parameters(config)  # bad hyper-parameter values end the run now, not after the data
    data = _training_data(source, config)
    preview = _preview_source(data, config)
    yield Preparing(f"{_summary(source, data)}; building patches and the network")
    if stop_event.is_set():
        return None
    events = iter_train(config, data=data, stop_event=stop_event)
    try:
        while True:
            try:
                event = next(events)
            except StopIteration as end:
                return end.value
            yield event
            # At every validation, unless stopping (a stopping run should end promptly).
            saved = isinstance(event, CheckpointSaved) and event.kind == "last"
            if saved and not stop_event.is_set():
                yield _preview(preview, event, config)
    finally:
        events.close()  # a worker that quits mid-run still gets its last.pt written


def _training_data(source: DataSource, config):
    """The ``data`` argument of :func:`~napari_pclesr.train.iter_train` for a data source.

    The sample phantoms (loaded as ``pclesr train --data sample`` does); the whole collection
    when it has three or more sequences (split by ``config.split``); a (train, val) pair of one
    sequence each for two; and for one sequence a split of its patch grid.
    """
    from napari_pclesr.data.patches import PairedSequences
    from napari_pclesr.train import load_training_data

    if source.kind == SAMPLE:
        return load_training_data(config)
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


def _validation_part(data, config):
    """The validation collection the loop will use (the split is deterministic)."""
    if isinstance(data, tuple):
        return data[1]
    return data.split(config.split, seed=config.seed)[1]


def _preview_source(data, config) -> dict:
    """The fixed preview: the first validation frame's LR and HR, cropped to at most
    :data:`PREVIEW_SIDE` LR pixels around the centre of its validation area."""
    from napari_pclesr.data.patches import fov_from_frames

    val = _validation_part(data, config)
    lr_options = {"seed": config.seed, "sigma_mult": config.sigma_mult}
    lr = np.asarray(val.lr(0, sigma_add=config.sigma_add, **lr_options)[0], dtype=np.float32)
    mask = val.fov_mask(0)
    rows, cols = np.nonzero(mask) if mask.any() else np.indices(mask.shape).reshape(2, -1)
    side = min(PREVIEW_SIDE, *mask.shape)
    top = int(np.clip(rows.mean() - side / 2, 0, mask.shape[0] - side))
    left = int(np.clip(cols.mean() - side / 2, 0, mask.shape[1] - side))
    crop = np.s_[top : top + side, left : left + side]
    s = config.scale
    hr_crop = np.s_[top * s : (top + side) * s, left * s : (left + side) * s]
    return {
        "lr": lr[crop],
        "hr": np.asarray(val.hr(0)[0], dtype=np.float32)[hr_crop],
        # The frame's whole field of view, not only the patches held out for validation.
        "mask": fov_from_frames(lr[crop][np.newaxis]),
    }


def _preview(source: dict, saved, config) -> TrainingPreview:
    """Run the checkpoint just saved on the preview crop and score it against the HR."""
    from napari_pclesr.data.patches import upscale_mask
    from napari_pclesr.infer import super_resolve

    sr = super_resolve(source["lr"], saved.path, device=config.device, fov_mask=source["mask"])
    hr_mask = upscale_mask(source["mask"], config.scale)
    lr_on_hr_grid = np.kron(source["lr"], np.ones((config.scale, config.scale), np.float32))
    reference = source["hr"]
    return TrainingPreview(
        iteration=saved.iteration,
        lr=source["lr"],
        sr=sr,
        fov_mask=source["mask"],
        sr_ssim=ssim_in_fov(sr, reference, hr_mask),
        lr_ssim=ssim_in_fov(lr_on_hr_grid, reference, hr_mask),
    )


def _summary(source: DataSource, data) -> str:
    parts = data if isinstance(data, tuple) else (data,)
    if source.kind == SAMPLE:
        return f"built-in phantoms ({sum(len(part) for part in parts)} sequences)"
    split = " / ".join(", ".join(part.names) for part in parts)
    lr = "recorded LR" if source.lr is not None else "simulated LR"
    return f"{lr}: {split}"


def _optional_number(text: str, what: str) -> float | None:
    """A number typed in a field that may stay empty (None: the default)."""
    if not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"The {what} must be a number such as 1e-3, or empty; got {text!r}."
        ) from None
