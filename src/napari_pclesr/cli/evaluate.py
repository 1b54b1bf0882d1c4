"""``pclesr evaluate``: score models and baselines on the held-out image sets (phantoms, natural
images, and frames of a real recording taken as HR), as the shipped models' cards are scored."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

DEFAULT_BASELINES = ("bicubic", "unsharp", "wiener", "richardson_lucy", "tv")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score models and baselines on held-out phantoms, natural images and real frames",
        description=(
            "Score each MODEL (a checkpoint or pretrained:NAME) and the baselines on the "
            "held-out images: tissue phantoms and natural images no shipped model was trained "
            "on, and with --real frames of a recording taken as HR, each seen through the "
            "standard simulated bundle. Prints a Markdown table (SSIM and PSNR inside the field "
            "of view, their gains over the LR, ΔGCF, Tot_cs, noise ratio)."
        ),
    )
    parser.add_argument("models", nargs="*", help="checkpoints or pretrained:NAME")
    parser.add_argument("--real", type=Path, default=None, help="a real recording (frames = HR)")
    parser.add_argument(
        "--baselines",
        default=",".join(DEFAULT_BASELINES),
        help=f"comma-separated baselines, '' for none (default {','.join(DEFAULT_BASELINES)})",
    )
    parser.add_argument("--quick", action="store_true", help="two small images per set")
    parser.add_argument("--csv", type=Path, default=None, help="write per-image scores here")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --csv")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from napari_pclesr import baselines, evaluation
    from napari_pclesr.cli._common import refuse_overwriting_inputs

    methods = {Path(model).name if Path(model).is_file() else model: model for model in args.models}
    names = [name for name in args.baselines.split(",") if name]
    unknown = sorted(set(names) - set(baselines.available()))
    if unknown:
        raise ValueError(
            f"unknown baseline(s) {', '.join(unknown)}; the baselines are "
            f"{', '.join(baselines.available())}."
        )
    methods.update({name: name for name in names})
    if args.csv is not None:
        refuse_overwriting_inputs([args.csv], [*args.models, args.real])
        if args.csv.exists() and not args.overwrite:
            raise FileExistsError(f"{args.csv} exists; pass --overwrite to replace it.")
    images = evaluation.held_out_images(args.real, quick=args.quick)
    rows = evaluation.score_methods(
        images, methods, device=args.device, progress=lambda m: print(m, file=sys.stderr)
    )
    if args.csv is not None:
        write_rows(args.csv, rows)
    print(evaluation.markdown_table(evaluation.summarise(rows)), end="")
    return 0


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Write score rows as CSV, atomically."""
    from napari_pclesr._atomic import atomic_path

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(path) as temporary:
        temporary.write_text(text.getvalue(), encoding="utf-8")
    return path
