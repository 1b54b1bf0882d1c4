"""``pclesr export``: write a trained network as TorchScript, ONNX or a bioimage.io package."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

FORMATS = ("torchscript", "onnx", "bioimageio")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint as TorchScript, ONNX or a bioimage.io model package",
        description=(
            "Export the network of a checkpoint (best.pt of pclesr train, or pretrained:NAME) "
            "as a TorchScript file, an ONNX file or a bioimage.io model package (.zip). The "
            "written file is loaded back with its own runtime and its output compared with "
            "PyTorch's on frames of two sizes; above the tolerance nothing is written. A "
            "bioimage.io package must also pass bioimageio.core's test_model. ONNX and "
            'bioimage.io need the optional extra: pip install "napari-pclesr[export]".'
        ),
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="best.pt, or pretrained:NAME")
    parser.add_argument("output", type=Path, metavar="OUT", help="file to write")
    parser.add_argument("--format", required=True, choices=FORMATS, help="what to write")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace OUT if it exists (never CHECKPOINT)"
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest accepted difference from PyTorch, normalised units (default 1e-4)",
    )
    package = parser.add_argument_group("bioimage.io package")
    package.add_argument("--name", default=None, help="model name (default: napari-pclesr ARCH xS)")
    package.add_argument(
        "--author",
        action="append",
        default=None,
        metavar="NAME",
        help="who trained the model, repeatable (default: napari-pclesr developers)",
    )
    package.add_argument("--license", default="BSD-3-Clause", help="SPDX id (BSD-3-Clause)")
    package.add_argument(
        "--weights",
        default="pytorch_state_dict,torchscript,onnx",
        help="weight formats, comma-separated (default: all three)",
    )
    package.add_argument(
        "--test-image",
        type=Path,
        default=None,
        metavar="IMAGE",
        help="test input: the first frame of this image (default: a simulated phantom frame)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from napari_pclesr.cli._common import EXIT_BAD_INPUT
    from napari_pclesr.export import MissingExtraError, export

    if not args.tolerance >= 0:
        raise ValueError(f"--tolerance must be >= 0, got {args.tolerance}.")
    options = {"overwrite": args.overwrite, "tolerance": args.tolerance}
    if args.format == "bioimageio":
        options.update(
            name=args.name,
            authors=args.author or ("napari-pclesr developers",),
            license=args.license,
            weight_formats=[name.strip() for name in args.weights.split(",") if name.strip()],
            test_frame=None if args.test_image is None else _first_frame(args.test_image),
        )
    start = time.perf_counter()
    try:
        report = export(args.checkpoint, args.format, args.output, **options)
    except MissingExtraError as exc:
        print(f"pclesr export: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    checks = ", ".join(f"{name} {value:.2g}" for name, value in report.differences.items())
    print(
        f"wrote {report.path} ({args.format}) in {time.perf_counter() - start:.1f} s; largest "
        f"difference from PyTorch: {checks or 'nothing converted'} (tolerance "
        f"{report.tolerance:g})"
    )
    if args.format == "bioimageio":
        print("passed bioimageio.core test_model; what the package cannot express:")
        for note in report.notes:
            print(f"  - {note}")
    return 0


def _first_frame(path: Path):
    import numpy as np

    from napari_pclesr.io import read_sequence

    frames, _ = read_sequence(path)
    return np.asarray(frames[0])
