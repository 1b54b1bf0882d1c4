"""``pclesr demo``: the main job on embedded sample data, end to end."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the main job on generated sample data",
        description=(
            "Generate a pCLE-like tissue phantom, a 30,000-fibre bundle layout and the simulated "
            "LR image, and save them with a preview PNG."
        ),
    )
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder")
    parser.add_argument("--size", type=int, default=576, help="frame side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed of phantom, layout and noise")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from napari_pclesr import FibreLayout, Simulator
    from napari_pclesr.fibre import fibre_count_for
    from napari_pclesr.data import phantom
    from napari_pclesr.io import write_image

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    shape = (args.size, args.size)
    start = time.perf_counter()
    hr = phantom(shape, seed=args.seed)
    layout = FibreLayout.synthetic(shape, fibre_count_for(shape), seed=args.seed)
    simulator = Simulator(layout)
    lr = simulator.simulate(hr, seed=args.seed)
    elapsed = time.perf_counter() - start

    layout.save(out / "layout.csv")
    write_image(out / "hr.tif", hr)
    write_image(out / "lr.tif", lr, layout="layout.csv", simulator={"seed": args.seed})
    save_preview(out / "preview.png", [hr * simulator.fov_mask, lr])
    stats = layout.spacing_stats()
    print(
        f"phantom {shape[0]}x{shape[1]}, {layout.n_fibres} fibres "
        f"(median spacing {stats['median']:.2f} px), simulated in {elapsed:.2f} s"
    )
    print(f"wrote {out}/hr.tif, lr.tif, layout.csv and preview.png (HR | LR)")
    return 0


def save_preview(path: Path, images: list[np.ndarray]) -> None:
    """Save images side by side as an 8-bit PNG, each scaled to its 0.5–99.5 percentiles."""
    import imageio.v3 as iio

    from napari_pclesr._atomic import atomic_path

    tiles = []
    for image in images:
        low, high = np.percentile(image, (0.5, 99.5))
        tiles.append(np.clip((image - low) / max(high - low, 1e-12), 0, 1))
    strip = (np.concatenate(tiles, axis=1) * 255).round().astype(np.uint8)
    with atomic_path(path) as temporary:
        iio.imwrite(temporary, strip)
