"""``pclesr experiment``: run a seed table from a configuration, or write the results page.

    pclesr experiment seed000_table1 --scale small --out results/seed000_table1
    pclesr experiment seed000_table1 --out results/seed000_table1 --resume
    pclesr experiment --report results/seed000_table1 results/seed002_table1 \\
        --output docs/results.md
    pclesr experiment --list
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "experiment",
        help="reproduce a seed paper's table from a configuration",
        description=(
            "Run an experiment configuration (a shipped name such as seed000_table1, or a TOML "
            "file): train and score every cell of the table into a results folder that a rerun "
            "with --resume continues. --report writes the results page (docs/results.md) from "
            "results folders."
        ),
    )
    parser.add_argument("config", nargs="*", help="configuration name or file (one)")
    parser.add_argument(
        "--scale",
        choices=("small", "paper"),
        default="small",
        help="small: CI-sized schedules on a CPU; paper: the paper's sizes (a GPU)",
    )
    parser.add_argument("--out", type=Path, help="results folder (default results/NAME-SCALE)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out, skipping finished cells"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--data-dir", type=Path, help="folder of the recordings a configuration names"
    )
    parser.add_argument("--list", action="store_true", help="list the shipped configurations")
    parser.add_argument(
        "--report",
        nargs="+",
        type=Path,
        metavar="RESULTS_DIR",
        help="write the results page (Markdown) from these results folders",
    )
    parser.add_argument(
        "--output", type=Path, help="with --report: the Markdown file (default: stdout)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from napari_pclesr import experiments

    if args.list:
        for name in experiments.available_configs():
            print(f"{name:<18} {experiments.load_config(name).title}")
        return 0
    if args.report:
        return _report(args)
    if len(args.config) != 1:
        raise ValueError("give one configuration (pclesr experiment --list shows them).")
    config = experiments.load_config(args.config[0], data_dir=args.data_dir)
    out = args.out or Path("results") / f"{config.name}-{args.scale}"
    experiments.run_experiment(
        config,
        out,
        scale=args.scale,
        resume=args.resume,
        overwrite=args.overwrite,
        device=args.device,
        say=lambda line: print(line, flush=True),
    )
    return 0


def _report(args: argparse.Namespace) -> int:
    from napari_pclesr._atomic import atomic_path
    from napari_pclesr.cli._common import refuse_overwriting_inputs
    from napari_pclesr.experiments import render_report

    text = render_report(args.report)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    refuse_overwriting_inputs([args.output], args.report)
    with atomic_path(args.output) as temporary:
        temporary.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0
