"""Run an experiment: train and score every cell of a table, resumably, into a results folder.

A *cell* is one method in one section. Its scores are written to
``cells/<section>/<method>.csv`` when it is done, so a rerun with ``resume`` skips it. A
network trained for a cell lives in ``training/<train data>-x<scale>/<method>/`` (shared by the
sections that train on the same data, e.g. seed 000's syn/syn and syn/org); an interrupted
training continues from its ``last.pt`` through the training loop's own resume, a finished one
is marked by ``done.json``. Every file is written atomically.
"""

from __future__ import annotations

import errno
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from napari_pclesr._atomic import atomic_path
from napari_pclesr.experiments.config import ExperimentConfig, MethodSpec, SectionSpec
from napari_pclesr.experiments.data import build_pairs, org_layout, test_sequences
from napari_pclesr.experiments.results import slug

__all__ = ["MARKER", "ExperimentRun", "run_experiment", "train_config"]

#: The file that marks a results folder (and holds what the run is).
MARKER = "experiment.json"
#: The row that scores the LR input itself in ``pcle`` tables.
LR_LABEL = "LR"
_TEST_NOISE_SEED = 777  # the simulated test LR's noise, never drawn in training


def train_config(
    config: ExperimentConfig,
    section: SectionSpec,
    method: MethodSpec,
    scale: str,
    out_dir,
    device: str = "auto",
    **extra,
):
    """The :class:`~napari_pclesr.train.TrainConfig` of a trained method in a section.

    The scale's schedule comes first, then its ``hparams`` for the model (and its
    ``discriminator`` for the adversarial objectives), then the method's ``settings`` (which
    win), then ``extra``.
    """
    from napari_pclesr.train import TrainConfig

    schedule = config.scales[scale]
    values = {
        "model": method.model,
        "hparams": dict(schedule.hparams.get(method.model, {})),
        "scale": section.scale,
        "iterations": schedule.iterations,
        "batch_size": schedule.batch_size,
        "patch_size": schedule.patch_size,
        "val_every": schedule.val_every or schedule.iterations,
        "log_every": max(1, min(50, schedule.iterations)),
        "seed": config.seed,
        "device": device,
        "out_dir": None if out_dir is None else str(out_dir),
    }
    if values.get("objective", method.settings.get("objective")) in ("adversarial", "cycle"):
        values["discriminator"] = dict(schedule.discriminator)
    values.update(method.settings)
    values.update(extra)
    return TrainConfig(**values)


class ExperimentRun:
    """One run of a configuration at one scale into a results folder.

    Parameters
    ----------
    config : ExperimentConfig
    out : path
        The results folder.
    scale : {"small", "paper"}
    device : str
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    say : callable, optional
        Receives one line of progress at a time.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        out,
        scale: str = "small",
        device="auto",
        say: Callable[[str], None] | None = None,
    ):
        if scale not in config.scales:
            raise ValueError(f"unknown scale {scale!r}; use small or paper.")
        self.config = config
        self.out = Path(out)
        self.scale = scale
        self.schedule = config.scales[scale]
        self.device = device
        self.say = say or (lambda line: None)
        self._pairs: dict = {}
        self._tests: dict = {}

    # -- the folder -----------------------------------------------------------------------------

    def claim(self, resume: bool = False, overwrite: bool = False) -> bool:
        """Prepare the results folder; returns whether an earlier run is continued.

        Raises
        ------
        FileExistsError
            If the folder holds an earlier run (and neither ``resume`` nor ``overwrite`` is
            set) or files that no experiment wrote.
        ValueError
            If ``resume`` meets a run of another configuration or scale.
        """
        marker = self.out / MARKER
        if marker.is_file():
            earlier = json.loads(marker.read_text(encoding="utf-8"))
            if overwrite:
                shutil.rmtree(self.out)
            elif resume:
                self._check_same_run(earlier)
                return True
            else:
                raise FileExistsError(
                    errno.EEXIST,
                    f"{self.out} holds an earlier run of {earlier.get('config')} "
                    f"({earlier.get('scale')} scale); continue it with --resume, replace it "
                    "with --overwrite, or choose another --out folder.",
                )
        elif self.out.exists() and any(self.out.iterdir()):
            raise FileExistsError(
                errno.EEXIST,
                f"{self.out} holds files that pclesr experiment did not write; choose another "
                "--out folder.",
            )
        self.out.mkdir(parents=True, exist_ok=True)
        _write_text(self.out / "config.toml", self.config.text)
        _write_json(self.out / "environment.json", environment(self.device))
        _write_json(
            marker,
            {
                "config": self.config.name,
                "title": self.config.title,
                "scale": self.scale,
                "digest": self.config.digest,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
        return False

    def _check_same_run(self, earlier: dict) -> None:
        if earlier.get("scale") != self.scale or earlier.get("digest") != self.config.digest:
            raise ValueError(
                f"cannot resume {self.out}: it holds a run of {earlier.get('config')} at "
                f"{earlier.get('scale')} scale with another configuration text; resume with "
                "the same configuration and --scale, or use another --out folder."
            )

    # -- running --------------------------------------------------------------------------------

    def run(self) -> Path:
        """Compute every missing cell, then write the tables and figures; returns the folder."""
        start = time.perf_counter()
        cells = [
            (section, method) for section in self.config.sections for method in self._rows(section)
        ]
        for number, (section, method) in enumerate(cells, 1):
            where = f"[{number}/{len(cells)}] {section.name} · {method.label}"
            if self.cell_path(section, method).is_file():
                self.say(f"{where}: done earlier, skipped")
                continue
            cell_start = time.perf_counter()
            self.run_cell(section, method)
            self.say(f"{where}: scored in {time.perf_counter() - cell_start:.1f} s")
        from napari_pclesr.experiments.results import write_results

        write_results(self.out, self.config)
        self.say(f"wrote {self.out} in {time.perf_counter() - start:.0f} s")
        return self.out

    def _rows(self, section: SectionSpec) -> list[MethodSpec]:
        methods = self.config.section_methods(section)
        if self.config.task == "pcle":
            return [MethodSpec(key=LR_LABEL, label=LR_LABEL), *methods]
        return methods

    def cell_path(self, section: SectionSpec, method: MethodSpec) -> Path:
        """Where the per-image scores of a cell are written (their presence marks it done)."""
        return self.out / "cells" / slug(section.name) / f"{method.key}.csv"

    def run_cell(self, section: SectionSpec, method: MethodSpec) -> Path:
        """Train (or resume training) if needed, super-resolve and score the test data."""
        from napari_pclesr.experiments.results import save_array, score_sequence, write_cell

        source = self.source(section, method)
        tests = self.tests(section)
        reference = self.cell_path(section, method).parent / "reference.npy"
        if not reference.is_file():
            reference.parent.mkdir(parents=True, exist_ok=True)
            save_array(reference, tests[0].hr[0])
        rows, example = [], None
        for sequence in tests:
            sr = self._super_resolve(sequence, source, section, method)
            rows += score_sequence(self.config.task, sequence, sr, section, method)
            if example is None:
                example = sr[0]
        path = self.cell_path(section, method)
        write_cell(path, rows, example)
        return path

    def _super_resolve(self, sequence, source, section, method) -> np.ndarray:
        from napari_pclesr.infer import super_resolve

        if source is None:  # the LR row
            return sequence.lr
        options = {"device": self.device}
        if method.baseline is not None:
            options["scale"] = section.scale  # a baseline interpolates to the section's scale
        sr = super_resolve(sequence.lr, source, fov_mask=sequence.mask, **options)
        if self.config.task == "downsampled":
            sr = np.clip(sr, 0.0, 1.0)  # the seed's images are 8-bit: values live in [0, 1]
        return sr

    def source(self, section: SectionSpec, method: MethodSpec):
        """What super-resolves for a cell: a checkpoint path, a baseline name or None (LR)."""
        if method.baseline is not None:
            return method.baseline
        if method.checkpoint is not None:
            return method.checkpoint
        if method.trained:
            return str(self.train(section, method))
        return None

    # -- training -------------------------------------------------------------------------------

    def training_dir(self, section: SectionSpec, method: MethodSpec) -> Path:
        """The folder of a method's network for a section's training data and scale."""
        return self.out / "training" / f"{slug(section.train)}-x{section.scale}" / method.key

    def train(self, section: SectionSpec, method: MethodSpec) -> Path:
        """The best checkpoint of a method for a section: trained now, resumed, or earlier."""
        from napari_pclesr.train import IterationDone, ValidationDone, train

        folder = self.training_dir(section, method)
        done = folder / "done.json"
        if done.is_file():
            return folder / json.loads(done.read_text(encoding="utf-8"))["checkpoint"]
        last = folder / "last.pt"
        extra = self._cycle_extras(section, method)
        if last.is_file():
            extra["resume"] = str(last)
        elif folder.exists():
            extra["overwrite"] = True  # a run that died before its first checkpoint
        config = train_config(
            self.config, section, method, self.scale, folder, self.device, **extra
        )
        data = (
            self.pairs(section.train, "train", section.scale),
            self.pairs(section.train, "val", section.scale),
        )
        state = "resuming" if last.is_file() else "training"
        self.say(
            f"      {state} {method.label} on {section.train} for {config.iterations} iterations"
        )

        def report(event):
            if (
                isinstance(event, IterationDone)
                and event.iteration % max(1, config.iterations // 4) == 0
            ):
                self.say(
                    f"      iteration {event.iteration}/{event.iterations}: loss {event.loss:.4f}"
                )
            elif isinstance(event, ValidationDone):
                self.say(f"      validation at {event.iteration}: loss {event.val_loss:.4f}")

        result = train(config, data=data, callback=report)
        if result is None or result.stopped_by_request:
            raise KeyboardInterrupt
        checkpoint = result.best_checkpoint or result.last_checkpoint
        _write_json(
            done,
            {
                "checkpoint": Path(checkpoint).name,
                "iterations": result.iterations,
                "best_iteration": result.best_iteration,
                "elapsed_s": result.elapsed_s,
                "device": result.device,
            },
        )
        return Path(checkpoint)

    def _cycle_extras(self, section: SectionSpec, method: MethodSpec) -> dict:
        """Files the cycle objective needs: the recorded LR's fibre layout, and the folder of
        the ``unpaired`` target domain (HR-hat of other sequences)."""
        if method.settings.get("objective") != "cycle":
            return {}
        extra = {}
        spec = self.config.data[section.train]
        if spec.degradation == "org" and spec.kind == "phantoms":
            # The org bundle is known here; a real recording uses layout="auto".
            path = self.out / "data" / f"{slug(spec.name)}-layout.csv"
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                shape = (self.schedule.frame_size, self.schedule.frame_size)
                org_layout(spec, shape).save(path)
            extra["layout"] = str(path)
        elif spec.kind == "recording":
            extra["layout"] = "auto"
        if method.settings.get("target_domain") == "unpaired":
            extra["target_data"] = str(self._unpaired_folder(method.target_source, section))
        return extra

    def _unpaired_folder(self, source: str, section: SectionSpec) -> Path:
        from napari_pclesr.io import write_image

        folder = self.out / "data" / f"{slug(source)}-unpaired"
        if not (folder / "complete").is_file():
            (folder / "hr").mkdir(parents=True, exist_ok=True)
            # The validation sequences of the source: never the training LR's own targets.
            pairs = self.pairs(source, "val", section.scale)
            for index in range(len(pairs)):
                write_image(folder / "hr" / f"{pairs.names[index]}.tif", pairs.hr(index))
            _write_text(folder / "complete", "HR-hat stacks of the unpaired target domain\n")
        return folder

    # -- data -----------------------------------------------------------------------------------

    def pairs(self, source: str, role: str, factor: int):
        """The paired sequences of a data source for a role (cached for the run)."""
        key = (source, role, factor)
        if key not in self._pairs:
            self.say(f"      preparing {role} data of {source!r}")
            spec = self.config.data[source]
            self._pairs[key] = build_pairs(spec, self.schedule, role, self.config.seed, factor)
        return self._pairs[key]

    def tests(self, section: SectionSpec):
        """The scored sequences of a section (cached for the run)."""
        key = (section.test, section.scale)
        if key not in self._tests:
            pairs = self.pairs(section.test, "test", section.scale)
            self._tests[key] = test_sequences(pairs, seed=_TEST_NOISE_SEED)
        return self._tests[key]


def run_experiment(
    config: ExperimentConfig,
    out,
    *,
    scale: str = "small",
    resume: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    say: Callable[[str], None] | None = None,
) -> Path:
    """Run (or continue) an experiment and write its results folder.

    Parameters
    ----------
    config : ExperimentConfig
        From :func:`~napari_pclesr.experiments.load_config`.
    out : path
        The results folder; an earlier run in it is refused unless ``resume`` continues it
        (finished cells are skipped, an interrupted training resumes from ``last.pt``) or
        ``overwrite`` replaces it.
    scale : {"small", "paper"}
    device : str
    say : callable, optional
        Receives progress lines.

    Returns
    -------
    pathlib.Path
        The results folder.
    """
    run = ExperimentRun(config, out, scale, device, say)
    continued = run.claim(resume=resume, overwrite=overwrite)
    if continued and say is not None:
        say(f"continuing the run in {out}")
    return run.run()


def environment(device: str) -> dict:
    """Versions, the device and the git revision, for the record of a run."""
    import os
    import platform
    import subprocess
    import sys

    import scipy
    import torch

    import napari_pclesr
    from napari_pclesr.devices import select_device

    resolved = select_device(device)
    record = {
        "napari_pclesr": napari_pclesr.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "device": str(resolved),
        "device_name": (
            torch.cuda.get_device_name(resolved) if resolved.type == "cuda" else platform.machine()
        ),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "git_revision": None,
        "git_dirty": None,
    }
    package = Path(napari_pclesr.__file__).parent
    try:
        revision = subprocess.run(
            ["git", "-C", str(package), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(package), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        record["git_revision"], record["git_dirty"] = revision, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        pass  # not a git checkout (an installed package): the version says what ran
    return record


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def _write_json(path: Path, value) -> None:
    _write_text(path, json.dumps(value, indent=2) + "\n")
