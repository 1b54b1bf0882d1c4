"""``pclesr info`` and ``pclesr convert``: inspect any readable recording, convert it to TIFF."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: Frames read per batch when scanning or converting, so memory stays flat.
BATCH_FRAMES = 16

INFO_EPILOG = """\
examples:
  pclesr info recording.mkt
  pclesr info export.mpeg --quick
  pclesr info frames_folder/ --json"""

CONVERT_EPILOG = """\
examples:
  pclesr convert recording.mkt recording.tif
  pclesr convert export.mpeg first_second.tif --frames 0:24
  pclesr convert raw_bundle.tif reconstructed.tif --background raw_bundle_back.tif"""


def register(subparsers) -> None:
    """Add the ``info`` and ``convert`` sub-commands to the ``pclesr`` parser."""
    info = subparsers.add_parser(
        "info",
        help="print format, shape, dtype, frame rate, FoV and value range of a recording",
        description=(
            "Print what napari-pclesr reads from a recording (.mkt, video, TIFF, folder of "
            "frames): format, shape, dtype, frame rate, pixel size, field of view and value "
            "range."
        ),
        epilog=INFO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    info.add_argument("path", type=Path, metavar="PATH", help="recording file or frame folder")
    info.add_argument(
        "--quick",
        action="store_true",
        help="value range from a few frames only, instead of scanning every frame",
    )
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(handler=run_info)

    convert = subparsers.add_parser(
        "convert",
        help="convert any readable recording to a float32 TIFF stack",
        description=(
            "Convert a recording (.mkt, video, TIFF, folder of frames) to a float32 TIFF, "
            "keeping its frame rate, pixel size and field of view as metadata. Values are "
            "not rescaled. The output is written batch by batch, atomically."
        ),
        epilog=CONVERT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    convert.add_argument("input", type=Path, metavar="IN", help="recording file or frame folder")
    convert.add_argument("output", type=Path, metavar="OUT.tif", help="TIFF file to write")
    convert.add_argument(
        "--frames",
        type=parse_frame_range,
        default=slice(None),
        metavar="A:B",
        help="frames A to B-1 (Python slice syntax: 10:, :50, 0:100:2, or one index 7)",
    )
    convert.add_argument(
        "--background",
        type=Path,
        default=None,
        metavar="PATH",
        help="flat-field frame of a fibre bundle: the input is raw bundle frames to reconstruct",
    )
    convert.set_defaults(handler=run_convert)


def parse_frame_range(text: str) -> slice:
    """Parse ``A:B``, ``A:B:STEP`` (parts may be empty) or one index ``A`` into a slice."""
    parts = text.split(":")
    try:
        numbers = [int(part) if part.strip() else None for part in parts]
    except ValueError:
        numbers = []
    if not 1 <= len(numbers) <= 3 or (len(parts) == 1 and numbers[0] is None):
        raise argparse.ArgumentTypeError(f"{text!r} is not a frame range like 0:100 or 5")
    if len(numbers) == 1:
        index = numbers[0]
        return slice(index, index + 1 if index != -1 else None)
    if len(numbers) == 3 and numbers[2] == 0:
        raise argparse.ArgumentTypeError("the step of a frame range cannot be 0")
    return slice(*numbers)


def describe(path: Path, *, quick: bool = False) -> dict:
    """Read a recording's properties and value range, as printed by ``pclesr info``."""
    import numpy as np

    from napari_pclesr.io import read_sequence
    from napari_pclesr.io.lazy import iter_frame_batches
    from napari_pclesr.io.sequence import sample_frames

    frames, meta = read_sequence(path)
    low, high = np.inf, -np.inf
    batches = [sample_frames(frames)] if quick else iter_frame_batches(frames, BATCH_FRAMES)
    for batch in batches:
        low, high = min(low, float(np.min(batch))), max(high, float(np.max(batch)))
    mask = meta["fov_mask"]
    return {
        "path": str(path),
        "format": meta["format"],
        "frames": int(frames.shape[0]),
        "shape": [int(n) for n in frames.shape],
        "dtype": str(frames.dtype),
        "frame_rate": meta["frame_rate"],
        "pixel_size_um": meta["pixel_size_um"],
        "fov_circle": None if meta["fov_circle"] is None else list(meta["fov_circle"]),
        "fov_fraction": float(mask.mean()),
        "value_range": [low, high],
        "value_range_from": "sampled frames" if quick else "all frames",
        "converted_to_grey": bool(meta["converted_to_grey"]),
    }


def run_info(args: argparse.Namespace) -> int:
    """Print the description of ``args.path``."""
    info = describe(args.path, quick=args.quick)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    rate = f"{info['frame_rate']:g} frames/s" if info["frame_rate"] else "unknown"
    pixel = f"{info['pixel_size_um']:.4g} µm" if info["pixel_size_um"] else "unknown"
    if info["fov_circle"] is not None:
        row, col, radius = info["fov_circle"]
        fov = f"circle centre (row {row:.1f}, col {col:.1f}), radius {radius:.1f} px"
    else:
        fov = "not circular" if info["fov_fraction"] < 1 else "whole frame"
    lines = [
        ("file", info["path"]),
        ("format", info["format"] + (" (converted to grey)" if info["converted_to_grey"] else "")),
        ("shape", f"{info['frames']} frame(s) of {info['shape'][1]}x{info['shape'][2]} (HxW)"),
        ("dtype", info["dtype"]),
        ("frame rate", rate),
        ("pixel size", pixel),
        ("FoV", f"{fov}; {100 * info['fov_fraction']:.1f}% of the frame"),
        (
            "value range",
            f"{info['value_range'][0]:g} .. {info['value_range'][1]:g} "
            f"({info['value_range_from']})",
        ),
    ]
    for label, value in lines:
        print(f"{label + ':':<13}{value}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    """Convert ``args.input`` (frames ``args.frames``) to the TIFF ``args.output``."""
    from napari_pclesr.cli._common import refuse_overwriting_inputs
    from napari_pclesr.io import read_sequence, write_image
    from napari_pclesr.io.errors import UnsupportedFormatError
    from napari_pclesr.io.lazy import select_frames

    if args.output.suffix.lower() not in (".tif", ".tiff"):
        raise UnsupportedFormatError(args.output, "convert writes TIFF; use a .tif suffix.")
    refuse_overwriting_inputs([args.output], [args.input, args.background])
    frames, meta = read_sequence(args.input, background=args.background)
    indices = range(len(frames))[args.frames]
    if len(indices) == 0:
        raise ValueError(
            f"--frames selects no frame of the {len(frames)} in {args.input}; "
            f"valid indices are 0..{len(frames) - 1}."
        )
    selected = select_frames(frames, indices)
    write_image(
        args.output,
        selected,
        frame_rate=meta["frame_rate"],
        pixel_size_um=meta["pixel_size_um"],
        fov_circle=meta["fov_circle"],
        extra={
            "source": str(args.input),
            "source_format": meta["format"],
            "source_frames": [indices.start, indices.stop, indices.step],
        },
    )
    print(
        f"wrote {len(indices)} frame(s) of {frames.shape[1]}x{frames.shape[2]} from "
        f"{args.input} ({meta['format']}) to {args.output}"
    )
    return 0
