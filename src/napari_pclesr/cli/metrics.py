"""``pclesr metrics``: score SR results against HR-hat and LR, and print the comparison table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

DESCRIPTION = """\
Score one or more SR results of the same LR input: SSIM and PSNR against HR-hat, GCF, ΔGCF vs
LR and vs HR-hat, Tot_cs, and paired t-tests of every method against LR (the baseline row).
Inputs are anything napari_pclesr.io.read_sequence opens (TIFF, .mkt, video, frame folders);
they must have one shape, (H, W) or (T, H, W), with intensities in [0, 1] (uint8 is divided by
255; use --minmax for other data)."""

EPILOG = """\
examples:
  pclesr metrics --sr edsr.tif --hr hrhat.tif --lr lr.tif
  pclesr metrics --sr EDSR=a.tif --sr FSRCNN=b.tif --hr hrhat.tif --lr lr.tif --mask fov.tif
  pclesr metrics --sr a.tif --hr hrhat.tif --lr recording.mkt --minmax --mask auto
  pclesr metrics --sr a.tif --hr hrhat.tif --lr lr.tif --json > scores.json"""


def register(subparsers) -> None:
    """Add the ``metrics`` sub-command to the ``pclesr`` parser."""
    parser = subparsers.add_parser(
        "metrics",
        help="SSIM, GCF, ΔGCF, Tot_cs and t-tests of SR results (the papers' table)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sr",
        action="append",
        required=True,
        metavar="[NAME=]PATH",
        help="an SR result; repeat for several methods. The method is named NAME, or "
        "after the file when no NAME= is given.",
    )
    parser.add_argument("--hr", required=True, metavar="PATH", help="the HR-hat reference")
    parser.add_argument("--lr", required=True, metavar="PATH", help="the LR input")
    parser.add_argument(
        "--mask",
        metavar="PATH|auto",
        help="field-of-view mask image, (H, W) or (T, H, W), non-zero inside; 'auto' uses the "
        "field of view napari_pclesr.io finds in the LR file",
    )
    parser.add_argument(
        "--minmax",
        action="store_true",
        help="rescale every frame of every input to [0, 1] by its own min and max first "
        "(the papers' per-frame normalisation)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON with the summary and per-frame values"
    )
    parser.add_argument("--csv", metavar="PATH", help="also write the table as CSV")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Read the images, score them and print the table (or JSON); returns the exit status."""
    from napari_pclesr.cli._common import refuse_overwriting_inputs
    from napari_pclesr.metrics import compare, evaluate_methods

    sr_paths = _method_paths(args.sr)
    if args.csv:
        mask_file = None if args.mask in (None, "auto") else args.mask
        refuse_overwriting_inputs([args.csv], [*sr_paths.values(), args.hr, args.lr, mask_file])
        if not Path(args.csv).parent.is_dir():  # fail before the scoring, not after
            raise FileNotFoundError(
                f"cannot write {args.csv}: the folder {Path(args.csv).parent} does not exist."
            )
    sr_by_method = {name: _read(path, args.minmax)[0] for name, path in sr_paths.items()}
    hr_hat = _read(Path(args.hr), args.minmax)[0]
    lr, lr_meta = _read(Path(args.lr), args.minmax)
    mask = _mask(args.mask, lr_meta)
    table = compare(evaluate_methods(sr_by_method, hr_hat, lr, mask=mask))
    if args.csv:
        table.to_csv(args.csv)
    if args.json:
        print(json.dumps(table.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(table.to_text())
    return 0


def _method_paths(specs: list[str]) -> dict[str, Path]:
    """Method names and paths from ``[NAME=]PATH`` arguments."""
    methods: dict[str, Path] = {}
    for spec in specs:
        name, separator, path = spec.partition("=")
        if not separator or Path(spec).exists():
            name, path = Path(spec).stem, spec
        if name in methods:
            raise ValueError(
                f"two SR inputs are both called {name!r}; name them with --sr NAME=PATH."
            )
        methods[name] = Path(path)
    return methods


def _read(path: Path, minmax: bool):
    """The frames of ``path`` as a (T, H, W) array (on the [0, 1] scale) and its metadata."""
    from napari_pclesr._validation import as_grey_float
    from napari_pclesr.io import read_sequence

    frames, meta = read_sequence(path)
    # The type is kept: the scale checks below depend on it.
    frames = as_grey_float(np.asarray(frames), name=str(path), dtype=frames.dtype)
    if minmax:
        return _minmax_per_frame(frames), meta
    if frames.dtype.kind in "iu" and frames.dtype != np.uint8:
        raise ValueError(
            f"{path} holds {frames.dtype} values; pass --minmax to rescale every frame to [0, 1]."
        )
    return frames, meta


def _mask(spec: str | None, lr_meta: dict):
    """The FoV mask from ``--mask``: None, the LR file's own field of view, or a mask image."""
    if spec is None:
        return None
    if spec == "auto":
        if lr_meta.get("fov_mask") is None:
            raise ValueError("no field of view was found in the LR file; give --mask PATH.")
        return np.asarray(lr_meta["fov_mask"], dtype=bool)
    from napari_pclesr.io import read_sequence

    frames, _ = read_sequence(Path(spec))
    mask = np.asarray(frames) != 0
    return mask[0] if mask.shape[0] == 1 else mask  # one mask image applies to every frame


def _minmax_per_frame(frames):
    stack = np.asarray(frames, dtype=np.float64)
    axes = (-2, -1)
    lowest = stack.min(axis=axes, keepdims=True)
    spread = stack.max(axis=axes, keepdims=True) - lowest
    # A constant frame has no range to stretch; it becomes 0.
    return np.divide(stack - lowest, spread, out=np.zeros_like(stack), where=spread > 0)
