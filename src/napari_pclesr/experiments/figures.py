"""Figures of a run (matplotlib, Agg backend): example frames and our scores beside the paper's."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from napari_pclesr._atomic import atomic_path
from napari_pclesr.experiments.config import ExperimentConfig
from napari_pclesr.experiments.results import LABELS, slug

__all__ = ["write_figures"]


def write_figures(out: Path, config: ExperimentConfig, summary: list[dict]) -> list[Path]:
    """Write ``figures/<section>.png`` (the first test frame: each method, then the reference)
    and ``figures/<score>.png`` (our mean ± std beside the paper's, per section and method)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    folder = out / "figures"
    folder.mkdir(exist_ok=True)
    written = [
        path
        for section in config.sections
        if (path := _examples(out, folder, config, section)) is not None
    ]
    written.append(_bars(folder, config, summary, config.metrics[0]))
    return written


def _examples(out: Path, folder: Path, config, section) -> Path | None:
    import matplotlib.pyplot as plt

    cells = out / "cells" / slug(section.name)
    images = (
        [(path.stem, np.load(path)) for path in sorted(cells.glob("*.npy"))]
        if cells.is_dir()
        else []
    )
    if not images:
        return None
    labels = {key: method.label for key, method in config.methods.items()}
    order = {key: i for i, key in enumerate(["LR", *config.methods])}
    images.sort(key=lambda item: order.get(item[0], 99))
    reference = cells / "reference.npy"  # HR(-hat) of the frame, stored by the run
    if reference.is_file():
        images = [item for item in images if item[0] != "reference"]
        images.append(("reference", np.load(reference)))
    low, high = np.percentile(np.concatenate([im.ravel() for _, im in images]), (0.5, 99.5))
    figure, axes = plt.subplots(1, len(images), figsize=(2.2 * len(images), 2.6), squeeze=False)
    for axis, (key, image) in zip(axes[0], images, strict=True):
        axis.imshow(image, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        title = labels.get(key, "HR-hat" if config.task == "pcle" else "HR")
        axis.set_title(title if key != "LR" else "LR", fontsize=8)
        axis.axis("off")
    figure.suptitle(f"{config.title}: {section.name}", fontsize=9)
    return _save(figure, folder / f"{slug(section.name)}.png")


def _bars(folder: Path, config, summary: list[dict], key: str) -> Path:
    import matplotlib.pyplot as plt

    sections = [s.name for s in config.sections]
    labels = list(dict.fromkeys(r["label"] for r in summary))
    width = 0.8 / max(len(labels), 1)
    figure, axis = plt.subplots(figsize=(max(6, 1.8 * len(sections)), 3.4))
    for index, label in enumerate(labels):
        rows = {r["section"]: r for r in summary if r["label"] == label}
        x = np.arange(len(sections)) + (index - (len(labels) - 1) / 2) * width
        ours = [rows[s][f"{key}_mean"] if s in rows else math.nan for s in sections]
        spread = [rows[s][f"{key}_std"] if s in rows else math.nan for s in sections]
        axis.bar(x, ours, width, yerr=np.nan_to_num(spread), label=label, capsize=2)
        paper = [rows[s][f"{key}_paper_mean"] if s in rows else math.nan for s in sections]
        axis.scatter(
            x,
            paper,
            marker="_",
            s=200,
            color="black",
            zorder=3,
            label="paper" if index == 0 else None,
        )
    axis.set_xticks(np.arange(len(sections)), sections)
    axis.set_ylabel(LABELS[key])
    axis.set_title(f"{config.title}: {LABELS[key]}, ours (bars) and the paper's (—)", fontsize=9)
    axis.legend(fontsize=7, ncols=2)
    figure.tight_layout()
    return _save(figure, folder / f"{key}.png")


def _save(figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path
