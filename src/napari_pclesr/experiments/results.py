"""The outputs of a run: per-image scores, the summary table (CSV, Markdown) and figures."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import numpy as np

from napari_pclesr._atomic import atomic_path
from napari_pclesr.experiments.config import METRICS, ExperimentConfig

__all__ = [
    "LABELS",
    "format_value",
    "load_summary",
    "read_rows",
    "save_array",
    "score_sequence",
    "slug",
    "summarise",
    "summary_markdown",
    "write_cell",
    "write_results",
]

#: Column names of the scores in tables.
LABELS = {
    "ssim": "SSIM",
    "psnr": "PSNR [dB]",
    "gcf": "GCF",
    "delta_gcf_hr": "ΔGCF vs HR-hat",
    "delta_gcf_lr": "ΔGCF vs LR",
    "tot_cs": "Tot_cs",
}
_ID_COLUMNS = ("section", "method", "label", "sequence", "frame")


def slug(name: str) -> str:
    """A file-name-safe form of a section or data name (``syn/org`` -> ``syn-org``)."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", name).strip("-") or "section"


def score_sequence(task: str, sequence, sr: np.ndarray, section, method) -> list[dict]:
    """Per-frame scores of one super-resolved test sequence, as CSV rows.

    ``pcle``: SSIM and PSNR against HR-hat, GCF, ΔGCF vs HR-hat and LR, Tot_cs, inside the
    FoV (:func:`napari_pclesr.metrics.evaluate`). ``downsampled``: SSIM and PSNR (data range
    1) over the whole frame.
    """
    from napari_pclesr.metrics import evaluate, psnr, ssim

    if task == "pcle":
        scores = evaluate(sr, sequence.hr, sequence.lr, mask=sequence.mask).to_dict()
    else:
        scores = {"ssim": ssim(sr, sequence.hr, 1.0), "psnr": psnr(sr, sequence.hr, 1.0)}
        scores = {key: np.atleast_1d(value).tolist() for key, value in scores.items()}
    rows = []
    for frame in range(len(sr)):
        row = {"section": section.name, "method": method.key, "label": method.label}
        row.update(sequence=sequence.name, frame=frame)
        row.update({key: scores[key][frame] for key in METRICS if key in scores})
        rows.append(row)
    return rows


def write_cell(path: Path, rows: list[dict], example: np.ndarray | None) -> None:
    """Write a cell's per-image scores (CSV) and its example frame (``.npy``), atomically;
    the CSV comes last, since it marks the cell done."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if example is not None:
        save_array(path.with_suffix(".npy"), example)
    _write_csv(path, rows)


def save_array(path: Path, array) -> None:
    """``np.save`` a float32 array atomically."""
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        np.save(file, np.asarray(array, dtype=np.float32))


def read_rows(path: Path) -> list[dict]:
    """Rows of a scores CSV with numbers parsed (empty cells are NaN)."""
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    for row in rows:
        for key in METRICS:
            if key in row:
                row[key] = float(row[key]) if row[key] not in ("", "None") else math.nan
    return rows


def summarise(rows: list[dict], config: ExperimentConfig) -> list[dict]:
    """Mean and sample std of every score per (section, method), with the paper's values."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["section"], row["label"]), []).append(row)
    summary = []
    for (section, label), members in groups.items():
        record = {"section": section, "method": members[0]["method"], "label": label}
        record["images"] = len(members)
        paper = config.paper.get(section, {}).get(label, {})
        for key in config.metrics:
            values = np.array([member[key] for member in members], dtype=float)
            record[f"{key}_mean"] = float(np.mean(values))
            record[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
            mean, std = _paper_pair(paper.get(key))
            record[f"{key}_paper_mean"], record[f"{key}_paper_std"] = mean, std
        summary.append(record)
    return summary


def _paper_pair(value) -> tuple[float, float]:
    if value is None:
        return math.nan, math.nan
    pair = value if isinstance(value, list) else [value]
    return float(pair[0]), float(pair[1]) if len(pair) > 1 else math.nan


def format_value(mean: float, std: float, digits: int) -> str:
    """``mean ± std`` (the mean alone without a std, an em dash without a mean)."""
    if math.isnan(mean):
        return "—"
    text = f"{mean:.{digits}f}"
    return text if math.isnan(std) else f"{text} ± {std:.{digits}f}"


def summary_markdown(summary: list[dict], config: ExperimentConfig) -> str:
    """One Markdown table per section, scores as rows and methods as columns, like the
    papers; each cell holds ours, then the paper's value in parentheses."""
    blocks = []
    for section in config.sections:
        records = [r for r in summary if r["section"] == section.name]
        if not records:
            continue
        title = f"**{section.name}** (train: `{section.train}`, test: `{section.test}`"
        title += f", ×{section.scale})" if section.scale > 1 else ")"
        header = "| score | " + " | ".join(r["label"] for r in records) + " |"
        lines = [title, "", header, "| --- |" + " ---: |" * len(records)]
        for key in config.metrics:
            digits = 2 if key == "psnr" else 3
            cells = []
            for record in records:
                ours = format_value(record[f"{key}_mean"], record[f"{key}_std"], digits)
                paper = record[f"{key}_paper_mean"]
                if not math.isnan(paper):
                    ours += f" ({format_value(paper, record[f'{key}_paper_std'], digits)})"
                cells.append(ours)
            lines.append(f"| {LABELS[key]} | " + " | ".join(cells) + " |")
        images = sorted({r["images"] for r in records})
        lines += ["", f"Images scored per method: {', '.join(map(str, images))}."]
        blocks.append("\n".join(lines))
    legend = "Each cell: ours (mean ± sample std over the test images), then (the paper's value)."
    return "\n\n".join([legend, *blocks]) + "\n"


def write_results(out: Path, config: ExperimentConfig) -> None:
    """Gather the cells into ``scores.csv``, ``summary.csv``, ``summary.md`` and figures."""
    rows = []
    for section in config.sections:
        folder = out / "cells" / slug(section.name)
        for path in sorted(folder.glob("*.csv")) if folder.is_dir() else []:
            rows += read_rows(path)
    order = {s.name: i for i, s in enumerate(config.sections)}
    rows.sort(key=lambda row: order.get(row["section"], len(order)))
    _write_csv(out / "scores.csv", rows)
    summary = _in_table_order(summarise(rows, config), config)
    _write_csv(out / "summary.csv", summary)
    text = f"# {config.title}\n\n{summary_markdown(summary, config)}"
    with atomic_path(out / "summary.md") as temporary:
        temporary.write_text(text, encoding="utf-8")
    from napari_pclesr.experiments.figures import write_figures

    write_figures(out, config, summary)


def _in_table_order(summary: list[dict], config: ExperimentConfig) -> list[dict]:
    sections = {s.name: i for i, s in enumerate(config.sections)}
    methods = {key: i for i, key in enumerate(["LR", *config.methods])}
    return sorted(
        summary, key=lambda r: (sections.get(r["section"], 99), methods.get(r["method"], 99))
    )


def _write_csv(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    columns = list(rows[0]) if rows else list(_ID_COLUMNS)
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if _is_nan(v) else v for k, v in row.items()})
    with atomic_path(path) as temporary:
        temporary.write_text(buffer.getvalue(), encoding="utf-8")


def _is_nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def load_summary(folder: Path) -> tuple[dict, list[dict]]:
    """The marker (what ran) and the summary rows of a results folder."""
    marker = json.loads((folder / "experiment.json").read_text(encoding="utf-8"))
    rows = []
    with open(folder / "summary.csv", newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            rows.append(
                {
                    k: (float(v) if v != "" else math.nan) if k.endswith(("_mean", "_std")) else v
                    for k, v in row.items()
                }
            )
    for row in rows:
        row["images"] = int(row["images"])
    return marker, rows
