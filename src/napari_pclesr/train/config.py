"""The typed training configuration, validated on creation and serialisable to a plain dict."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from napari_pclesr.data.splits import DEFAULT_FRACTIONS

__all__ = [
    "OBJECTIVES",
    "SCHEDULES",
    "TARGET_DOMAINS",
    "VEC_NORMALISATIONS",
    "TrainConfig",
]

SCHEDULES = (None, "cosine", "step")
#: ``supervised``: content loss on (LR, HR) pairs; ``adversarial``: SRGAN (content + GAN);
#: ``cycle``: seed 001's unsupervised GAN with the Voronoi cycle consistency.
OBJECTIVES = ("supervised", "adversarial", "cycle")
#: Where the discriminator's "real" patches come from in the cycle objective.
TARGET_DOMAINS = ("natural", "unpaired", "paired", "rescaled")
#: How l_Vec brings the fibre vectors to [0, 1]: with the LR vector's min and max for both, or
#: each vector with its own.
VEC_NORMALISATIONS = ("lr", "separate")
#: Defaults that depend on the objective (used where the field is None).
DEFAULT_ADV_WEIGHT = {"adversarial": 1e-3, "cycle": 1.0}
DEFAULT_INSTANCE_NOISE = {"adversarial": 0.0, "cycle": 0.1}
# Validation scores SSIM, whose Gaussian window is 11 × 11 pixels.
MIN_PATCH_SIZE = 11


@dataclass
class TrainConfig:
    """Everything that defines a training run (supervised, SRGAN or the cycle GAN).

    The defaults follow seed 000: batch 54, 64 × 64 patches, Adam with lr 1e-4,
    β = (0.9, 0.999) and ε = 1e-8. Invalid values raise ``ValueError`` at creation, with a
    message that names the field and what is allowed.

    Parameters
    ----------
    model : str or None
        Registry name of the network (see ``napari_pclesr.models.available()``). ``None`` when a
        ready-made ``nn.Module`` is passed to :func:`~napari_pclesr.train.train`; such
        checkpoints reload only with that module (``load_model(..., model=module)``).
    hparams : dict
        Keyword arguments of the network (``models.default_hparams(model)`` lists them).
    scale : int
        Upscaling factor of the network (1: same grid, as for pCLE HR-hat / LR pairs).
    loss : str
        ``"l1"``, ``"mse"``, ``"ssim"`` or ``"ssim+l1"``.
    iterations : int
        Total number of optimiser steps. A resumed run continues up to this count.
    batch_size : int
        Patches per step and per process (with DDP the global batch is this × world size).
    lr, betas, eps : float, (float, float), float
        Adam parameters.
    schedule : {None, "cosine", "step"}
        Learning-rate schedule, stepped every iteration: cosine annealing to 0 over
        ``iterations``, or a decay by ``gamma`` every ``step_size`` iterations.
    step_size : int or None
        Iterations between decays of the "step" schedule; ``iterations // 3`` by default.
    gamma : float
        Decay factor of the "step" schedule, in (0, 1].
    val_every : int
        Validate (and save ``best.pt``/``last.pt``) every this many iterations and at the end.
    patience : int or None
        Early stopping: stop after this many validations without a lower validation loss.
        ``None`` disables it.
    log_every : int
        Report the mean training loss every this many iterations (each report waits for the
        device, so on a GPU a few iterations per report keep it busy).
    seed : int
        Seed of the weights, the split, the simulated noise, the batch order and the
        augmentation.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    amp : bool
        Automatic mixed precision; used on CUDA only (bfloat16 where supported, else float16
        with a gradient scaler).
    out_dir : str or None
        Folder of ``best.pt`` and ``last.pt``; ``None`` writes nothing. A folder that holds
        another run is refused (``FileExistsError``) unless ``resume`` continues the run in it
        or ``overwrite`` is set.
    resume : str or None
        Checkpoint to continue from (iteration count, weights, optimiser, schedule, scaler,
        random states and batch order).
    init_weights : str or None
        Checkpoint (or ``"pretrained:NAME"``) whose network weights start a new run: fine-tuning,
        with a fresh optimiser, schedule and iteration count. Its network must be ``model``
        with these ``hparams`` and ``scale``.
    overwrite : bool
        Replace the run in ``out_dir``: its ``best.pt`` and ``last.pt`` are removed once the new
        run is set up.
    patch_size : int
        Side of the LR patches (the HR patches are ``scale`` times larger); at least 11, the
        size of the SSIM window.
    augment_flips, augment_rot90 : bool
        Random horizontal/vertical flips and 90° rotations of the training patches.
    fresh_noise_per_epoch : bool
        With simulated LR, draw new noise for the training set at every epoch (one pass over
        the patches); otherwise the LR is simulated once.
    sigma_mult, sigma_add : float
        Noise of the simulated LR (seed 000: 0.05 and 0.01).
    data : str
        ``"sample"`` (phantom sequences), ``"mixed"`` (phantoms and natural images through
        several bundles and noise levels, :meth:`PairedSequences.mixed`, the data of the
        shipped models) or a folder with ``hr/`` and optionally ``lr/`` sub-folders of TIFF
        stacks. Used when no data are passed to ``train``.
    data_options : dict
        Keyword arguments of the generated data's builder (:meth:`PairedSequences.mixed` or
        :meth:`PairedSequences.sample`), e.g. ``{"n_sequences": 192, "blurred_share": 0.1}``;
        empty for a folder. Unknown names are refused.
    min_inside : float
        Keep the training patches with at least this share of their pixels inside the field of
        view. Below 1, patches at the rim of the FoV are trained on, and the pixels outside
        the FoV do not count in the loss (without them, the network never learns the rim,
        where SSIM dropped by 0.019 within 20 px of it; docs/training.md). The ``cycle``
        objective ignores it: its patches always lie entirely inside the FoV, like the
        target-domain patches its discriminator compares them with.
    layout : str or None
        Fibre layout file for the simulated LR; a synthetic bundle when ``None``. For the
        ``cycle`` objective it also names the recorded LR's fibres: a layout file, a raw bundle
        frame (its cores are detected), or ``"auto"`` (measured from the recording; the default
        for recordings).
    split : (float, float, float)
        Train/validation/test fractions of the sequences.
    objective : {"supervised", "adversarial", "cycle"}
        What is trained (see ``docs/training.md``): a network on (LR, HR) pairs with ``loss``;
        SRGAN (``loss`` as content loss plus ``adv_weight`` × the adversarial loss); or seed
        001's unsupervised GAN (``vec_weight`` × l_Vec + ``adv_weight`` × l_Adv +
        ``reg_weight`` × l_Reg), which needs no HR.
    discriminator : dict
        Hyper-parameters of the discriminator (``models.create_discriminator``).
    d_lr : float or None
        Adam learning rate of the discriminator; ``lr`` when None.
    d_steps : int
        Discriminator updates per generator update (each on its own batch).
    gan_loss : {"bce", "ragan"}
        Standard GAN cross-entropy, or the relativistic average GAN loss (ESRGAN).
    adv_weight : float or None
        Weight of the generator's adversarial term; 1e-3 (SRGAN) for ``adversarial``, 1 (seed
        001) for ``cycle`` when None.
    pretrain_iterations : int
        The first iterations train the generator alone, without the adversarial term (content
        loss, or l_Vec + l_Reg for ``cycle``); the discriminator starts afterwards.
    instance_noise : float or None
        Standard deviation of the Gaussian noise added to the discriminator's inputs at the
        start, annealed linearly to 0; 0.1 for ``cycle`` (seed 001), 0 for ``adversarial``
        when None.
    noise_anneal : int or None
        Iterations over which the instance noise falls to 0; ``iterations`` when None.
    label_smoothing : float
        One-sided label smoothing: the discriminator's target for real patches is
        1 − ``label_smoothing`` (0 disables it).
    vec_weight, reg_weight : float
        Weights of l_Vec and l_Reg (``cycle``; 1 each in seed 001).
    vec_normalisation : {"lr", "separate"}
        How l_Vec brings the two fibre vectors of a patch to [0, 1]: both with the LR vector's
        minimum and maximum over the patch's fibres (default), or each with its own.
    lr_data : str or None
        ``cycle`` only: LR recordings without HR, a file ``read_sequence`` opens (``.mkt``,
        video, TIFF stack) or a folder of such files (or of frames). ``data`` is used when None.
    fibres : int or None
        With ``layout="auto"``: the number of fibres in the field of view to use instead of
        measuring the pitch (the standard 30,000 is the fallback when it cannot be measured).
    frame_step : int
        Use every ``frame_step``-th frame of the LR recordings (consecutive frames are
        nearly identical).
    target_domain : {"natural", "unpaired", "paired", "rescaled"}
        ``cycle``: the discriminator's real patches: grey natural images (scikit-image's
        bundled ones, or ``target_data``, a folder of images), HR-hat of other sequences
        (``target_data``: a folder of HR TIFF stacks, or with an ``hr/`` sub-folder), the HR
        aligned with the input (needs HR data), or the LR frames downscaled ×4.
    target_data : str or None
        Folder of the ``natural`` or ``unpaired`` target domain.
    """

    model: str | None = "edsr"
    hparams: dict = field(default_factory=dict)
    scale: int = 1
    loss: str = "ssim+l1"
    iterations: int = 1000
    batch_size: int = 54
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    schedule: str | None = None
    step_size: int | None = None
    gamma: float = 0.1
    val_every: int = 500
    patience: int | None = None
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    out_dir: str | None = None
    resume: str | None = None
    init_weights: str | None = None
    overwrite: bool = False
    patch_size: int = 64
    augment_flips: bool = True
    augment_rot90: bool = True
    fresh_noise_per_epoch: bool = False
    sigma_mult: float = 0.05
    sigma_add: float = 0.01
    data: str = "sample"
    data_options: dict = field(default_factory=dict)
    min_inside: float = 0.3
    layout: str | None = None
    split: tuple[float, float, float] = DEFAULT_FRACTIONS
    objective: str = "supervised"
    discriminator: dict = field(default_factory=dict)
    d_lr: float | None = None
    d_steps: int = 1
    gan_loss: str = "bce"
    adv_weight: float | None = None
    pretrain_iterations: int = 0
    instance_noise: float | None = None
    noise_anneal: int | None = None
    label_smoothing: float = 0.0
    vec_weight: float = 1.0
    reg_weight: float = 1.0
    vec_normalisation: str = "lr"
    lr_data: str | None = None
    fibres: int | None = None
    frame_step: int = 1
    target_domain: str = "natural"
    target_data: str | None = None

    def __post_init__(self):
        self.hparams = dict(self.hparams)
        self.data_options = dict(self.data_options)
        self.discriminator = dict(self.discriminator)
        self.betas = tuple(float(b) for b in self.betas)
        self.split = tuple(float(f) for f in self.split)
        for name in (
            "out_dir",
            "resume",
            "init_weights",
            "layout",
            "data",
            "lr_data",
            "target_data",
        ):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, str(value))
        self._check_numbers()
        self._check_names()
        self._check_data_options()
        self._check_objective()

    # -- derived settings -----------------------------------------------------------------------

    @property
    def adversarial_weight(self) -> float:
        """``adv_weight``, or the objective's default (1e-3 adversarial, 1 cycle)."""
        if self.adv_weight is not None:
            return self.adv_weight
        return DEFAULT_ADV_WEIGHT.get(self.objective, 0.0)

    @property
    def initial_noise(self) -> float:
        """``instance_noise``, or the objective's default (0.1 cycle, 0 adversarial)."""
        if self.instance_noise is not None:
            return self.instance_noise
        return DEFAULT_INSTANCE_NOISE.get(self.objective, 0.0)

    @property
    def discriminator_lr(self) -> float:
        """``d_lr``, or ``lr``."""
        return self.lr if self.d_lr is None else self.d_lr

    # -- serialisation --------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """A JSON-friendly dict (tuples become lists); :meth:`from_dict` reverses it."""
        values = dataclasses.asdict(self)
        values["betas"] = list(self.betas)
        values["split"] = list(self.split)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build a config from :meth:`to_dict` output; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown training setting(s) {', '.join(unknown)}; known settings are "
                f"{', '.join(sorted(known))}."
            )
        return cls(**values)

    def replace(self, **changes) -> TrainConfig:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    # -- validation -----------------------------------------------------------------------------

    def _check_numbers(self) -> None:
        _check_int(self, "iterations", minimum=1)
        _check_int(self, "batch_size", minimum=1)
        _check_int(self, "val_every", minimum=1)
        _check_int(self, "log_every", minimum=1)
        _check_int(self, "patch_size", minimum=MIN_PATCH_SIZE)
        _check_int(self, "scale", minimum=1)
        _check_int(self, "seed", minimum=0)
        if self.patience is not None:
            _check_int(self, "patience", minimum=1)
        if self.step_size is not None:
            _check_int(self, "step_size", minimum=1)
        _check_float(self, "lr", self.lr, positive=True)
        _check_float(self, "eps", self.eps, positive=True)
        _check_float(self, "sigma_mult", self.sigma_mult, positive=False)
        _check_float(self, "sigma_add", self.sigma_add, positive=False)
        _check_float(self, "gamma", self.gamma, positive=True)
        _check_float(self, "min_inside", self.min_inside, positive=True)
        if self.min_inside > 1:
            raise ValueError(
                f"min_inside must be in (0, 1] (a share of pixels), got {self.min_inside}."
            )
        if self.gamma > 1:
            raise ValueError(f"gamma must be in (0, 1] (a decay factor), got {self.gamma}.")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}.")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; use None, 'cosine' or 'step'.")
        for name in ("amp", "overwrite"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}.")
        # split_sequences checks the fractions fully; fail here already for obvious mistakes.
        if (
            len(self.split) != 3
            or any(f < 0 for f in self.split)
            or not math.isclose(sum(self.split), 1.0)
        ):
            raise ValueError(
                f"split must be three non-negative fractions summing to 1, got {self.split}."
            )

    def _check_objective(self) -> None:
        from napari_pclesr.losses import GAN_LOSSES

        _check_choice(self, "objective", OBJECTIVES)
        _check_choice(self, "gan_loss", GAN_LOSSES)
        _check_choice(self, "target_domain", TARGET_DOMAINS)
        _check_choice(self, "vec_normalisation", VEC_NORMALISATIONS)
        _check_int(self, "d_steps", minimum=1)
        _check_int(self, "pretrain_iterations", minimum=0)
        _check_int(self, "frame_step", minimum=1)
        for name in ("noise_anneal", "fibres"):
            if getattr(self, name) is not None:
                _check_int(self, name, minimum=3 if name == "fibres" else 1)
        for name in ("vec_weight", "reg_weight", "label_smoothing"):
            _check_float(self, name, getattr(self, name), positive=False)
        for name in ("adv_weight", "instance_noise", "d_lr"):
            if getattr(self, name) is not None:
                _check_float(self, name, getattr(self, name), positive=name == "d_lr")
        if self.label_smoothing >= 0.5:
            raise ValueError(
                f"label_smoothing must be in [0, 0.5) (the real label is 1 - smoothing), got "
                f"{self.label_smoothing}."
            )
        if self.lr_data is not None and self.objective != "cycle":
            raise ValueError(
                "lr_data (LR recordings without HR) needs objective='cycle'; the supervised "
                "and adversarial objectives learn from (LR, HR) pairs given by data."
            )
        if self.objective == "cycle":
            if self.target_domain == "paired" and self.lr_data is not None:
                raise ValueError(
                    "target_domain 'paired' needs HR aligned with the LR, but lr_data has none; "
                    "use 'natural', 'unpaired' or 'rescaled', or give paired data with data=."
                )
            if self.target_domain == "unpaired" and self.target_data is None:
                raise ValueError(
                    "target_domain 'unpaired' needs target_data: a folder of HR-hat stacks "
                    "(e.g. the hr/ folder written by pclesr mosaic)."
                )
        from napari_pclesr.models.discriminator import check_discriminator_hparams

        check_discriminator_hparams(self.discriminator)

    def _check_data_options(self) -> None:
        if not self.data_options:
            return
        from napari_pclesr.train.paired_data import generated_data_options

        options = generated_data_options()
        if self.lr_data is not None or self.data not in options:
            raise ValueError(
                "data_options apply to generated data ('sample' or 'mixed'), not to "
                f"{self.lr_data or self.data!r}; remove them."
            )
        allowed = options[self.data]
        unknown = sorted(set(self.data_options) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown option(s) {', '.join(unknown)} of the {self.data!r} data; known "
                f"options are {', '.join(allowed)}."
            )

    def _check_names(self) -> None:
        from napari_pclesr import losses

        self.loss = losses.canonical_name(self.loss)
        if self.model is None:
            return
        from napari_pclesr import models

        if self.model not in models.available():
            raise ValueError(
                f"unknown model {self.model!r}; choose one of {', '.join(models.available())}."
            )
        allowed = models.default_hparams(self.model)
        unknown = sorted(set(self.hparams) - set(allowed))
        if unknown:
            raise ValueError(
                f"model {self.model!r} has no hyper-parameter(s) {', '.join(unknown)}; its "
                f"hyper-parameters are {', '.join(sorted(allowed)) or 'none'}."
            )


def _check_choice(config: TrainConfig, name: str, choices: tuple) -> None:
    if getattr(config, name) not in choices:
        raise ValueError(
            f"unknown {name} {getattr(config, name)!r}; choose one of {', '.join(choices)}."
        )


def _check_int(config: TrainConfig, name: str, minimum: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}.")


def _check_float(config: TrainConfig, name: str, value, positive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    if (positive and value <= 0) or value < 0:
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value!r}.")
    setattr(config, name, float(value))
