"""``pclesr infer``: super-resolve a frame or stack with a checkpoint or a baseline."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "infer",
        help="super-resolve frames with a trained checkpoint or a baseline",
        description=(
            "Super-resolve an image or stack with a checkpoint (best.pt) or a baseline name, "
            "and write the result as a float32 TIFF in the input's intensity range. Pixels "
            "outside the field of view (as estimated by the reader) are 0."
        ),
    )
    parser.add_argument("source", metavar="CHECKPOINT_OR_BASELINE")
    parser.add_argument("input", type=Path, metavar="IN", help="input image or stack")
    parser.add_argument("output", type=Path, metavar="OUT", help="output .tif")
    parser.add_argument("--tile", type=int, default=None, help="tile size (default: whole frames)")
    parser.add_argument("--overlap", type=int, default=16, help="tile overlap in pixels (16)")
    parser.add_argument("--batch-size", type=int, default=8, help="frames or tiles per pass (8)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument(
        "--half",
        dest="half",
        action="store_true",
        default=None,
        help="mixed precision (default on CUDA only)",
    )
    precision.add_argument(
        "--no-half", dest="half", action="store_false", help="full float32 precision"
    )
    parser.add_argument("--compile", action="store_true", help="use torch.compile")
    parser.add_argument(
        "--scale", type=int, default=None, help="upscaling factor of a baseline (default 1)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from napari_pclesr.infer import super_resolve
    from napari_pclesr.io import read_sequence, write_image

    if args.output.suffix.lower() not in (".tif", ".tiff"):
        raise ValueError(f"the output must be a .tif or .tiff file, got {args.output}.")
    frames, meta = read_sequence(args.input)
    stack = np.asarray(frames[:])
    start = time.perf_counter()
    result = super_resolve(
        stack[0] if stack.shape[0] == 1 else stack,
        args.source,
        device=args.device,
        tile=args.tile,
        overlap=args.overlap,
        batch_size=args.batch_size,
        half=args.half,
        compile=args.compile,
        fov_mask=meta.get("fov_mask"),
        scale=args.scale,
    )
    elapsed = time.perf_counter() - start
    scale = result.shape[-1] // stack.shape[-1]
    circle = meta.get("fov_circle")
    pixel_size = meta.get("pixel_size_um")
    write_image(
        args.output,
        result,
        frame_rate=meta.get("frame_rate"),
        pixel_size_um=None if pixel_size is None else pixel_size / scale,
        # Pixel centres are at integer coordinates, so a centre c maps to (c + 0.5)·s − 0.5.
        fov_circle=None
        if circle is None
        else ((circle[0] + 0.5) * scale - 0.5, (circle[1] + 0.5) * scale - 0.5, circle[2] * scale),
        model=str(args.source),
    )
    count = 1 if result.ndim == 2 else result.shape[0]
    print(
        f"super-resolved {count} frame(s) to {result.shape[-2]}x{result.shape[-1]} in "
        f"{elapsed:.2f} s -> {args.output}"
    )
    return 0
