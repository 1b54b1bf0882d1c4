"""The ``pclesr`` command line.

Each sub-command lives in its own module with a ``register(subparsers)`` function that adds
its parser and sets ``handler``. Heavy imports happen inside the handlers, so ``pclesr --help``
is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from napari_pclesr import __version__

COMMAND_MODULES = (
    "simulate",
    "demo",
    "metrics",
    "io_commands",
    "train",
    "infer",
    "models",
    "mosaic",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pclesr",
        description="Super-resolution for probe-based confocal laser endomicroscopy (pCLE).",
    )
    parser.add_argument("--version", action="version", version=f"napari-pclesr {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"napari_pclesr.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``pclesr``; returns the exit status (0 success, 2 bad input)."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args) or 0
    except (ValueError, OSError) as exc:
        # Our errors are ValueError/OSError subclasses whose message says what to do.
        print(f"pclesr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pclesr {args.command}: interrupted", file=sys.stderr)
        return 130
