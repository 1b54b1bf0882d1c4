"""Reproducible experiments: the seed papers' tables from declarative TOML configurations.

>>> from napari_pclesr.experiments import load_config, run_experiment  # doctest: +SKIP
>>> config = load_config("seed000_table1")  # a shipped configuration, checked completely
>>> run_experiment(config, "results/seed000_table1", scale="small")
>>> print(render_report(["results/seed000_table1"]))  # the Markdown of docs/results.md

``pclesr experiment CONFIG`` runs one from the command line; ``docs/experiments.md`` documents
the configuration keys, the results folder and resuming.
"""

from napari_pclesr.experiments.config import (
    ConfigError,
    ExperimentConfig,
    available_configs,
    load_config,
)
from napari_pclesr.experiments.report import render_report
from napari_pclesr.experiments.runner import ExperimentRun, run_experiment

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "ExperimentRun",
    "available_configs",
    "load_config",
    "render_report",
    "run_experiment",
]
