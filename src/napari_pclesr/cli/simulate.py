"""``pclesr simulate``: simulate realistic pCLE LR images from HR images."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="simulate pCLE LR images from an HR image or stack",
        description=(
            "Simulate pCLE low-resolution images from an HR TIFF image or stack: Voronoi-cell "
            "fibre signals, noise nfs=(1+m)*fs+a, Delaunay interpolation (seed 000, sec. 3.2)."
        ),
    )
    parser.add_argument("hr_path", type=Path, metavar="HR_PATH", help="HR TIFF image or stack")
    parser.add_argument(
        "--layout",
        default="synthetic",
        help="fibre layout file (.csv, .npy, .npz) or 'synthetic' (default); a file made for "
        "another grid size is refused",
    )
    parser.add_argument(
        "--rescale-layout",
        action="store_true",
        help="map a layout file made for another grid size onto the image's grid",
    )
    parser.add_argument(
        "--n-fibres",
        type=int,
        default=None,
        help="fibres of a synthetic layout (default: 30000 scaled to the image area)",
    )
    parser.add_argument("--sigma-mult", type=float, default=0.05, help="multiplicative sigma")
    parser.add_argument("--sigma-add", type=float, default=0.01, help="additive sigma")
    parser.add_argument("--seed", type=int, default=None, help="noise and layout seed")
    parser.add_argument(
        "--signal",
        choices=("voronoi", "nearest7"),
        default="voronoi",
        help="fibre signal: Voronoi-cell mean or mean of the 7 nearest pixels",
    )
    parser.add_argument("--out", type=Path, required=True, help="output float32 TIFF")
    parser.add_argument("--save-layout", type=Path, default=None, help="also save the layout")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from napari_pclesr import FibreLayout, Simulator
    from napari_pclesr._validation import as_grey_float, check_non_negative
    from napari_pclesr.cli._common import refuse_overwriting_inputs
    from napari_pclesr.fibre import fibre_count_for
    from napari_pclesr.io import read_sequence, write_image
    from napari_pclesr.io.errors import UnsupportedFormatError
    from napari_pclesr.io.layout import LAYOUT_SUFFIXES

    # Every cheap check first, so that a bad argument fails before anything is read or built.
    sigma_mult = check_non_negative(args.sigma_mult, "sigma_mult")
    sigma_add = check_non_negative(args.sigma_add, "sigma_add")
    if args.out.suffix.lower() not in (".tif", ".tiff"):
        raise UnsupportedFormatError(args.out, "simulate writes a float32 TIFF; use a .tif suffix.")
    if args.save_layout is not None and args.save_layout.suffix.lower() not in LAYOUT_SUFFIXES:
        raise UnsupportedFormatError(
            args.save_layout,
            f"--save-layout writes {', '.join(LAYOUT_SUFFIXES)}; change the suffix.",
        )
    if args.n_fibres is not None and args.n_fibres < 3:
        raise ValueError(f"--n-fibres must be at least 3 (a triangulation), got {args.n_fibres}.")
    layout_file = None if args.layout == "synthetic" else Path(args.layout)
    refuse_overwriting_inputs([args.out, args.save_layout], [args.hr_path, layout_file])

    hr, _ = read_sequence(args.hr_path)
    hr = as_grey_float(hr[:] if hr.shape[0] > 1 else hr[0], name=str(args.hr_path))
    shape = hr.shape[-2:]
    if layout_file is None:
        n_fibres = args.n_fibres or fibre_count_for(shape)
        layout = FibreLayout.synthetic(shape, n_fibres, args.seed)
    else:
        layout = FibreLayout.from_file(layout_file, shape=shape, rescale=args.rescale_layout)
    start = time.perf_counter()
    simulator = Simulator(layout, signal=args.signal)
    lr = simulator.simulate(hr, sigma_mult, sigma_add, seed=args.seed)
    elapsed = time.perf_counter() - start
    parameters = {
        "sigma_mult": sigma_mult,
        "sigma_add": sigma_add,
        "seed": args.seed,
        "signal": args.signal,
        "n_fibres": layout.n_fibres,
    }
    layout_reference = str(args.save_layout or args.layout)
    write_image(args.out, lr, layout=layout_reference, simulator=parameters)
    if args.save_layout is not None:
        layout.save(args.save_layout)
    frames = 1 if lr.ndim == 2 else lr.shape[0]
    print(
        f"simulated {frames} frame(s) of {shape[0]}x{shape[1]} through {layout.n_fibres} fibres "
        f"in {elapsed:.2f} s -> {args.out}"
    )
    return 0
