"""Experiment configurations: TOML files that declare a seed table, validated before any work.

A configuration names its data sources, the sections of the table (which data each one trains
and tests on), the methods (networks to train, baselines, checkpoints), the schedules of the
two scales and the paper's own numbers. ``docs/experiments.md`` documents every key.
:func:`load_config` reads and checks a file completely — unknown keys, bad values, unknown
models or baselines, training settings :class:`~napari_pclesr.train.TrainConfig` refuses,
missing data files — and raises :class:`ConfigError` naming the file and the key.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import tomllib

__all__ = [
    "DATA_KINDS",
    "METRICS",
    "SCALES",
    "TASKS",
    "ConfigError",
    "DataSpec",
    "ExperimentConfig",
    "MethodSpec",
    "ScaleSpec",
    "SectionSpec",
    "available_configs",
    "load_config",
    "resolve_config_path",
]

#: ``pcle``: same-grid restoration scored against HR-hat with GCF (seeds 000, 001);
#: ``downsampled``: ×2/×4/×8 SR of bicubic-downsampled frames scored by PSNR and SSIM (seed 002).
TASKS = ("pcle", "downsampled")
#: The scores a table can show; keys of :class:`napari_pclesr.metrics.FrameScores`.
METRICS = ("ssim", "psnr", "gcf", "delta_gcf_hr", "delta_gcf_lr", "tot_cs")
#: ``phantoms``: phantom sequences through a simulated bundle (the "syn" training degradation, or
#: "org": another bundle, other noise, a fibre PSF blur, HR-hat from mosaicking);
#: ``recording``: a real recording (LR) with its HR-hat from mosaicking.
DATA_KINDS = ("phantoms", "recording")
DEGRADATIONS = ("syn", "org")
SCALES = ("small", "paper")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

_TOP_KEYS = {"experiment", "data", "sections", "methods", "scales", "paper"}
_EXPERIMENT_KEYS = {"title", "source", "task", "metrics", "seed", "discussion", "notes"}
_DATA_KEYS = {
    "kind",
    "degradation",
    "path",
    "frames",
    "frame_step",
    "seed",
    "psf_sigma",
    "noise_scale",
    "density",
    "bundle_seed",
}
_SECTION_KEYS = {"name", "train", "test", "scale", "methods"}
_METHOD_KEYS = {"label", "model", "baseline", "checkpoint", "settings", "target_source"}
_SCALE_KEYS = {
    "iterations",
    "batch_size",
    "patch_size",
    "frame_size",
    "frames",
    "train_sequences",
    "val_sequences",
    "test_sequences",
    "val_every",
    "hparams",
    "discriminator",
}


class ConfigError(ValueError):
    """A configuration is unusable; the message names the file, the key and what to do."""

    def __init__(self, path, key: str, message: str):
        where = f"{path}: {key}: " if key else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.key = key


@dataclass(frozen=True)
class DataSpec:
    """A data source: where the sequences of a section come from (see ``docs/experiments.md``)."""

    name: str
    kind: str
    degradation: str = "syn"
    path: Path | None = None
    frames: int | None = None
    frame_step: int = 1
    seed: int = 0
    psf_sigma: float = 0.7
    noise_scale: float = 1.6
    density: float = 1.1
    bundle_seed: int = 1000


@dataclass(frozen=True)
class MethodSpec:
    """A column of the table: a network trained here, a baseline, or a given checkpoint."""

    key: str
    label: str
    model: str | None = None
    baseline: str | None = None
    checkpoint: str | None = None
    settings: dict = field(default_factory=dict)
    target_source: str | None = None

    @property
    def trained(self) -> bool:
        """Whether the run trains this method (a registry model)."""
        return self.model is not None


@dataclass(frozen=True)
class SectionSpec:
    """A block of the table: methods trained on ``train`` data and tested on ``test`` data."""

    name: str
    train: str
    test: str
    scale: int = 1
    methods: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScaleSpec:
    """The schedule and data sizes of one scale (``small`` for CI, ``paper`` for a GPU)."""

    iterations: int
    batch_size: int
    patch_size: int
    frame_size: int
    frames: int
    train_sequences: int
    val_sequences: int
    test_sequences: int
    val_every: int | None = None
    hparams: dict = field(default_factory=dict)
    discriminator: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ExperimentConfig:
    """A validated experiment configuration (:func:`load_config`)."""

    name: str
    path: Path
    text: str
    title: str
    source: str
    task: str
    metrics: tuple[str, ...]
    seed: int
    discussion: str
    notes: str
    data: dict[str, DataSpec]
    sections: tuple[SectionSpec, ...]
    methods: dict[str, MethodSpec]
    scales: dict[str, ScaleSpec]
    paper: dict

    @property
    def digest(self) -> str:
        """SHA-256 of the file's text: a resumed run must use the very same configuration."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def section_methods(self, section: SectionSpec) -> list[MethodSpec]:
        """The methods of a section, in table order."""
        keys = section.methods or tuple(self.methods)
        return [self.methods[key] for key in keys]


# -- finding configurations ---------------------------------------------------------------------


def available_configs() -> list[str]:
    """Names of the configurations shipped in the package (``seed000_table1``, ...)."""
    folder = resources.files("napari_pclesr.experiments") / "configs"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def resolve_config_path(name_or_path) -> Path:
    """The file of a shipped configuration name, or the given path.

    Raises
    ------
    FileNotFoundError
        If it is neither a shipped name nor an existing file.
    """
    text = str(name_or_path)
    if text in available_configs():
        return Path(str(resources.files("napari_pclesr.experiments") / "configs" / f"{text}.toml"))
    path = Path(text)
    if path.is_file():
        return path
    raise FileNotFoundError(
        f"{text}: no such configuration file, and not a shipped configuration; shipped ones "
        f"are {', '.join(available_configs())} (pclesr experiment --list)."
    )


# -- loading and checking -----------------------------------------------------------------------


def load_config(name_or_path, data_dir=None) -> ExperimentConfig:
    """Read and fully check an experiment configuration.

    Parameters
    ----------
    name_or_path : str or os.PathLike
        A shipped configuration name (:func:`available_configs`) or a TOML file.
    data_dir : str or os.PathLike, optional
        Folder against which the relative ``path`` of ``recording`` data sources is resolved
        (by default the configuration file's folder).

    Returns
    -------
    ExperimentConfig

    Raises
    ------
    ConfigError
        For a syntax error, an unknown or missing key, a bad value, an unknown model, baseline
        or training setting, or a missing data file; the message names the file and the key.
    FileNotFoundError
        If the configuration itself does not exist.
    """
    path = resolve_config_path(name_or_path)
    text = path.read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML ({exc}); fix the syntax.") from None
    checker = _Checker(path, Path(data_dir) if data_dir is not None else path.parent)
    return checker.config(raw, text)


class _Checker:
    """Builds the typed configuration, failing at the first bad key."""

    def __init__(self, path: Path, data_dir: Path):
        self.path = path
        self.data_dir = data_dir

    def fail(self, key: str, message: str):
        raise ConfigError(self.path, key, message)

    def table(self, value, key: str, allowed: set | None = None, required=()) -> dict:
        if not isinstance(value, dict):
            self.fail(key, f"must be a table, got {type(value).__name__}.")
        if allowed is not None:
            unknown = sorted(set(value) - allowed)
            if unknown:
                self.fail(
                    _join(key, unknown[0]),
                    f"unknown key; allowed keys here are {', '.join(sorted(allowed))}.",
                )
        for name in required:
            if name not in value:
                self.fail(_join(key, name), "missing; this key is required.")
        return value

    def integer(self, value, key: str, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(key, f"must be a whole number >= {minimum}, got {value!r}.")
        return value

    def number(self, value, key: str, minimum: float = 0.0) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, f"must be a number, got {value!r}.")
        if not math.isfinite(value) or value < minimum:
            self.fail(key, f"must be a finite number >= {minimum}, got {value!r}.")
        return float(value)

    def text(self, value, key: str) -> str:
        if not isinstance(value, str):
            self.fail(key, f"must be a string, got {value!r}.")
        return value

    def choice(self, value, key: str, choices) -> str:
        if value not in choices:
            self.fail(key, f"unknown value {value!r}; choose one of {', '.join(choices)}.")
        return value

    # -- the parts ------------------------------------------------------------------------------

    def config(self, raw: dict, text: str) -> ExperimentConfig:
        self.table(raw, "", _TOP_KEYS, required=("experiment", "data", "sections", "methods"))
        experiment = self.table(raw["experiment"], "experiment", _EXPERIMENT_KEYS, ("title",))
        task = self.choice(experiment.get("task", "pcle"), "experiment.task", TASKS)
        metrics = experiment.get("metrics", ["ssim", "delta_gcf_hr", "delta_gcf_lr", "tot_cs"])
        if not isinstance(metrics, list) or not metrics:
            self.fail("experiment.metrics", "must be a non-empty list of score names.")
        for index, metric in enumerate(metrics):
            self.choice(metric, f"experiment.metrics[{index}]", METRICS)
        if task == "downsampled" and not set(metrics) <= {"ssim", "psnr"}:
            self.fail("experiment.metrics", "a 'downsampled' task scores only ssim and psnr.")
        data = {
            name: self.data_spec(name, spec)
            for name, spec in self.table(raw["data"], "data").items()
        }
        methods = {
            key: self.method(key, spec)
            for key, spec in self.table(raw["methods"], "methods").items()
        }
        if not methods:
            self.fail("methods", "declare at least one method.")
        sections = self.sections(raw["sections"], data, methods, task)
        scales = {
            name: self.scale(name, spec)
            for name, spec in self.table(raw.get("scales", {}), "scales", set(SCALES)).items()
        }
        for name in SCALES:
            if name not in scales:
                self.fail(f"scales.{name}", "missing; give the schedule of both scales.")
        config = ExperimentConfig(
            name=self.path.stem,
            path=self.path,
            text=text,
            title=self.text(experiment["title"], "experiment.title"),
            source=self.text(experiment.get("source", ""), "experiment.source"),
            task=task,
            metrics=tuple(metrics),
            seed=self.integer(experiment.get("seed", 0), "experiment.seed", 0),
            discussion=self.text(experiment.get("discussion", ""), "experiment.discussion"),
            notes=self.text(experiment.get("notes", ""), "experiment.notes"),
            data=data,
            sections=sections,
            methods=methods,
            scales=scales,
            paper=self.paper(raw.get("paper", {}), sections, methods, metrics),
        )
        self.training_settings(config)
        return config

    def data_spec(self, name: str, spec) -> DataSpec:
        key = f"data.{name}"
        spec = self.table(spec, key, _DATA_KEYS, required=("kind",))
        kind = self.choice(spec["kind"], f"{key}.kind", DATA_KINDS)
        values = {"name": name, "kind": kind}
        if "degradation" in spec:
            values["degradation"] = self.choice(
                spec["degradation"], f"{key}.degradation", DEGRADATIONS
            )
        for number in ("psf_sigma", "noise_scale", "density"):
            if number in spec:
                values[number] = self.number(spec[number], f"{key}.{number}")
        for whole in ("seed", "bundle_seed"):
            if whole in spec:
                values[whole] = self.integer(spec[whole], f"{key}.{whole}", 0)
        if "frame_step" in spec:
            values["frame_step"] = self.integer(spec["frame_step"], f"{key}.frame_step", 1)
        if "frames" in spec:
            values["frames"] = self.integer(spec["frames"], f"{key}.frames", 4)
        if kind == "recording":
            if "path" not in spec:
                self.fail(f"{key}.path", "missing; a recording source needs the file to read.")
            path = Path(self.text(spec["path"], f"{key}.path")).expanduser()
            path = path if path.is_absolute() else self.data_dir / path
            if not path.is_file():
                self.fail(
                    f"{key}.path",
                    f"the recording {path} does not exist; put it there or pass --data-dir "
                    "with the folder that holds it.",
                )
            values["path"] = path
            values["degradation"] = "org"
        elif "path" in spec:
            self.fail(f"{key}.path", "only a 'recording' source reads a file.")
        return DataSpec(**values)

    def method(self, key: str, spec) -> MethodSpec:
        from napari_pclesr import baselines, models

        where = f"methods.{key}"
        if not _NAME.match(key):
            self.fail(where, "method keys may hold letters, digits, '_', '-' and '.' only.")
        spec = self.table(spec, where, _METHOD_KEYS, required=("label",))
        kinds = [name for name in ("model", "baseline", "checkpoint") if name in spec]
        if len(kinds) != 1:
            self.fail(where, "give exactly one of model (to train), baseline or checkpoint.")
        values = {"key": key, "label": self.text(spec["label"], f"{where}.label")}
        if "model" in spec:
            values["model"] = self.choice(spec["model"], f"{where}.model", models.available())
        if "baseline" in spec:
            values["baseline"] = self.choice(
                spec["baseline"], f"{where}.baseline", baselines.available()
            )
        if "checkpoint" in spec:
            values["checkpoint"] = self.checkpoint(spec["checkpoint"], f"{where}.checkpoint")
        settings = self.table(spec.get("settings", {}), f"{where}.settings")
        if settings and "model" not in spec:
            self.fail(f"{where}.settings", "training settings need a model to train.")
        values["settings"] = dict(settings)
        if "target_source" in spec:
            values["target_source"] = self.text(spec["target_source"], f"{where}.target_source")
        return MethodSpec(**values)

    def checkpoint(self, value, key: str) -> str:
        from napari_pclesr import pretrained

        text = self.text(value, key)
        if text.startswith("pretrained:"):
            try:
                pretrained.resolve(text)
            except (ValueError, FileNotFoundError) as exc:
                self.fail(key, str(exc))
            return text
        path = Path(text).expanduser()
        path = path if path.is_absolute() else self.data_dir / path
        if not path.is_file():
            self.fail(key, f"the checkpoint {path} does not exist.")
        return str(path)

    def sections(self, raw, data: dict, methods: dict, task: str) -> tuple[SectionSpec, ...]:
        if not isinstance(raw, list) or not raw:
            self.fail("sections", "must be a non-empty array of tables ([[sections]]).")
        sections, names = [], set()
        for index, spec in enumerate(raw):
            where = f"sections[{index}]"
            spec = self.table(spec, where, _SECTION_KEYS, ("name", "train", "test"))
            name = self.text(spec["name"], f"{where}.name")
            if name in names:
                self.fail(f"{where}.name", f"the section {name!r} is declared twice.")
            names.add(name)
            for role in ("train", "test"):
                self.choice(spec[role], f"{where}.{role}", list(data))
            scale = self.integer(spec.get("scale", 1), f"{where}.scale", 1)
            if scale not in (1, 2, 4, 8) or (task == "pcle" and scale != 1):
                allowed = "1" if task == "pcle" else "2, 4 or 8"
                self.fail(f"{where}.scale", f"must be {allowed} for a {task!r} task.")
            if task == "downsampled" and scale == 1:
                self.fail(f"{where}.scale", "a 'downsampled' section needs scale 2, 4 or 8.")
            chosen = spec.get("methods", list(methods))
            if not isinstance(chosen, list) or not chosen:
                self.fail(f"{where}.methods", "must be a non-empty list of method keys.")
            for position, key in enumerate(chosen):
                self.choice(key, f"{where}.methods[{position}]", list(methods))
            sections.append(SectionSpec(name, spec["train"], spec["test"], scale, tuple(chosen)))
        return tuple(sections)

    def scale(self, name: str, spec) -> ScaleSpec:
        where = f"scales.{name}"
        required = sorted(_SCALE_KEYS - {"val_every", "hparams", "discriminator"})
        spec = self.table(spec, where, _SCALE_KEYS, required)
        values = {
            key: self.integer(spec[key], f"{where}.{key}", 4 if key == "frames" else 1)
            for key in required
        }
        if "val_every" in spec:
            values["val_every"] = self.integer(spec["val_every"], f"{where}.val_every", 1)
        hparams = self.table(spec.get("hparams", {}), f"{where}.hparams")
        for model, overrides in hparams.items():
            self.table(overrides, f"{where}.hparams.{model}")
        values["hparams"] = {model: dict(overrides) for model, overrides in hparams.items()}
        values["discriminator"] = dict(
            self.table(spec.get("discriminator", {}), f"{where}.discriminator")
        )
        return ScaleSpec(**values)

    def paper(self, raw, sections, methods, metrics) -> dict:
        """``paper.<section>.<method label or LR>.<metric> = value or [mean, std]``."""
        raw = self.table(raw, "paper")
        section_names = [section.name for section in sections]
        labels = ["LR", *(method.label for method in methods.values())]
        for section, rows in raw.items():
            self.choice(section, f"paper.{section}", section_names)
            for label, values in self.table(rows, f"paper.{section}").items():
                where = f"paper.{section}.{label}"
                self.choice(label, where, labels)
                for metric, value in self.table(values, where, set(METRICS)).items():
                    pair = value if isinstance(value, list) else [value]
                    if not 1 <= len(pair) <= 2:
                        self.fail(f"{where}.{metric}", "give a number or [mean, std].")
                    for part in pair:
                        self.number(part, f"{where}.{metric}", minimum=-math.inf)
        return raw

    def training_settings(self, config: ExperimentConfig) -> None:
        """Build every TrainConfig now, so that a bad setting fails before any training."""
        for section in config.sections:
            for method in config.section_methods(section):
                if method.settings.get("objective") == "cycle":
                    self._check_cycle(config, section, method)
                if method.trained:
                    for scale in SCALES:
                        self._train_config(config, section, method, scale)

    def _train_config(self, config, section, method, scale) -> None:
        from napari_pclesr.experiments.runner import train_config

        # The run writes the unpaired target folder itself; its name stands in for it here.
        extra = {"target_data": method.target_source} if method.target_source else {}
        try:
            train_config(config, section, method, scale, out_dir=None, **extra)
        except ValueError as exc:
            self.fail(f"methods.{method.key}.settings", f"(scale {scale}) {exc}")

    def _check_cycle(self, config, section, method) -> None:
        where = f"methods.{method.key}"
        domain = method.settings.get("target_domain", "natural")
        train = config.data[section.train]
        if domain == "unpaired":
            if method.target_source is None:
                self.fail(
                    f"{where}.target_source",
                    "missing; the 'unpaired' target domain needs HR-hat of other sequences: "
                    "name a data source whose HR-hat serves as the discriminator's real data.",
                )
            self.choice(method.target_source, f"{where}.target_source", list(config.data))
        if domain == "paired" and train.kind == "recording" and train.degradation != "org":
            self.fail(where, "the 'paired' target domain needs HR aligned with the LR.")


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key
