"""``pclesr demo``: the main job on embedded sample data, end to end.

1. Simulate: a pCLE-like tissue phantom, a 30,000-fibre bundle and its realistic LR image.
2. Train: FSRCNN with the SSIM+L1 loss on phantom sequences with simulated LR (seed 000).
3. Super-resolve the unseen test frame with the trained model and with two baselines.
4. Score everything against the HR phantom: SSIM, GCF, ΔGCF, Tot_cs and paired t-tests.
"""

from __future__ import annotations

import argparse
import errno
import sys
import time
from pathlib import Path

import numpy as np

TEST_SEED_OFFSET = 1000  # the test phantom's seed lies far from the training sequences'
BASELINES = ("Wiener", "Unsharp")
#: What the demo writes into its folder (besides the marker).
OUTPUTS = (
    "hr.tif",
    "lr.tif",
    "layout.csv",
    *(f"sr_{name.lower()}.tif" for name in ("FSRCNN", *BASELINES)),
    "scores.csv",
    "preview.png",
    "run",
)
#: Marks a folder written by the demo, whose outputs a later demo may replace.
MARKER = ".pclesr-demo"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the main job on generated sample data",
        description=(
            "Simulate pCLE LR data from tissue phantoms, train FSRCNN on it, super-resolve an "
            "unseen frame and compare it with baselines (SSIM, GCF, Tot_cs)."
        ),
    )
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder")
    parser.add_argument("--size", type=int, default=576, help="test frame side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed of phantoms, layout and noise")
    parser.add_argument("--iterations", type=int, default=200, help="training iterations")
    parser.add_argument("--batch-size", type=int, default=16, help="patches per iteration")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--test-frames", type=int, default=4, help="frames of the scored test sequence"
    )
    parser.add_argument(
        "--train-size", type=int, default=256, help="frame side of the training phantoms"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    out = args.out
    config = training_config(args, out)  # checks the settings before anything is done
    claim_folder(out)
    hr, lr, fov_mask = simulate_test_sequence(args, out)
    checkpoint = train_model(args, config)
    results = super_resolve_all(lr, checkpoint, fov_mask, args.device)
    score_and_report(results, hr, lr, fov_mask, out)
    return 0


def claim_folder(out: Path) -> None:
    """Create ``out`` for the demo, or refuse it if it holds files the demo did not write.

    A folder of an earlier demo (it holds the marker file) is reused: its outputs are replaced.
    """
    out.mkdir(parents=True, exist_ok=True)
    if (out / MARKER).is_file():
        return
    clashes = [name for name in OUTPUTS if (out / name).exists()]
    if clashes:
        raise FileExistsError(
            errno.EEXIST,
            f"{out} already holds {', '.join(clashes)}, which pclesr demo did not write and "
            "would replace; choose another --out folder.",
        )
    (out / MARKER).write_text("Written by pclesr demo; a later demo replaces its outputs.\n")


def simulate_test_sequence(args, out: Path):
    from napari_pclesr import FibreLayout, Simulator
    from napari_pclesr.data import phantom_sequence
    from napari_pclesr.fibre import fibre_count_for
    from napari_pclesr.io import write_image

    shape = (args.size, args.size)
    start = time.perf_counter()
    seed = args.seed + TEST_SEED_OFFSET
    hr = phantom_sequence(args.test_frames, shape, seed=seed).frames
    layout = FibreLayout.synthetic(shape, fibre_count_for(shape), seed=seed)
    simulator = Simulator(layout)
    simulation = {"sigma_mult": 0.05, "sigma_add": 0.01, "seed": seed}  # seed 000's noise
    lr = simulator.simulate(hr, **simulation)
    hr = hr * simulator.fov_mask  # HR-hat exists only inside the field of view
    stats = layout.spacing_stats()
    _say(
        f"[1/4] simulated {len(hr)} test frames of {shape[0]}x{shape[1]} through "
        f"{layout.n_fibres} fibres (median spacing {stats['median']:.2f} px) "
        f"in {time.perf_counter() - start:.1f} s"
    )
    layout.save(out / "layout.csv")
    write_image(out / "hr.tif", hr)
    write_image(out / "lr.tif", lr, layout="layout.csv", simulator=simulation)
    return hr, lr, simulator.fov_mask


def training_config(args, out: Path):
    """The demo's training settings (``ValueError`` for a bad iteration count or batch size)."""
    from napari_pclesr.train import TrainConfig

    return TrainConfig(
        model="fsrcnn",
        loss="ssim+l1",
        iterations=args.iterations,
        batch_size=args.batch_size,
        lr=1e-3,
        schedule="cosine",
        val_every=max(1, args.iterations // 3),
        seed=args.seed,
        device=args.device,
        out_dir=str(out / "run"),
        overwrite=True,  # the run of an earlier demo in this folder (claim_folder checks)
    )


def train_model(args, config) -> Path:
    from napari_pclesr.data import PairedSequences
    from napari_pclesr.train import IterationDone, ValidationDone, train

    def report(event):
        if isinstance(event, IterationDone) and event.iteration % 50 == 0:
            _say(f"      iteration {event.iteration}/{config.iterations}: loss {event.loss:.4f}")
        elif isinstance(event, ValidationDone):
            _say(f"      validation: SSIM {event.val_ssim:.4f}")

    _say(f"[2/4] training FSRCNN (SSIM+L1) for {args.iterations} iterations on phantom pairs")
    shape = (args.train_size, args.train_size)
    data = PairedSequences.sample(n_sequences=6, n_frames=8, shape=shape, seed=args.seed)
    result = train(config, data=data, callback=report)
    _say(f"      done in {result.elapsed_s:.0f} s on {result.device} -> {result.best_checkpoint}")
    return result.best_checkpoint


def super_resolve_all(lr: np.ndarray, checkpoint: Path, fov_mask: np.ndarray, device: str):
    from napari_pclesr.infer import super_resolve

    sources = {"FSRCNN": checkpoint, **{name: name.lower() for name in BASELINES}}
    results = {}
    start = time.perf_counter()
    for name, source in sources.items():
        results[name] = super_resolve(lr, source, device=device, fov_mask=fov_mask)
    _say(f"[3/4] super-resolved with {', '.join(sources)} in {time.perf_counter() - start:.1f} s")
    return results


def score_and_report(results, hr, lr, fov_mask, out: Path) -> None:
    from napari_pclesr.io import write_image
    from napari_pclesr.metrics import compare, evaluate_methods

    for name, sr in results.items():
        write_image(out / f"sr_{name.lower()}.tif", sr, model=name)
    table = compare(evaluate_methods(results, hr, lr, mask=fov_mask))
    table.to_csv(out / "scores.csv")
    save_preview(out / "preview.png", [hr[0], lr[0], results["FSRCNN"][0]])
    _say("[4/4] scores against the HR phantom (mean ± std over the test frames):")
    print(table)
    _say(f"wrote {out}/: hr.tif, lr.tif, sr_*.tif, layout.csv, scores.csv, run/, preview.png")


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


def _say(message: str) -> None:
    print(message, file=sys.stdout, flush=True)
