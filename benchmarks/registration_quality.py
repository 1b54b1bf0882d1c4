"""The accuracy figures of ``docs/registration.md``: registration and HR-hat against phantom
ground truth, the affine model, fibre-level fusion, and the real recording (when present).

Run: ``.venv/bin/python benchmarks/registration_quality.py [--figure docs/images/...png]``.

Phantom sequences go through one synthetic 30,000-fibre-per-576² bundle with seed 000's noise
(sigma_mult 0.05, sigma_add 0.01), so that every frame carries the same fibre pattern. Scores
are SSIM (Gaussian, sigma 1.5, data range 1) and PSNR inside the field of view, against the
true HR frames that the phantom sequence knows.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))
from _timing import print_table

from napari_pclesr import FibreLayout, Simulator
from napari_pclesr.data import phantom_sequence
from napari_pclesr.fibre import fibre_count_for
from napari_pclesr.metrics import gcf, psnr, ssim
from napari_pclesr.registration import (
    SegmentWarning,
    hr_hat_sequence,
    refine_affine,
    register_sequence,
)
from napari_pclesr.simulate.noise import add_fibre_noise

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "pcle_colorectal_S01V01.mpeg"


def bundle(size: int) -> Simulator:
    return Simulator(FibreLayout.synthetic((size, size), fibre_count_for((size, size)), seed=0))


def noisy(simulator: Simulator, hr: np.ndarray, seed: int):
    """Noisy fibre signals and the LR frames interpolated from them."""
    signals = add_fibre_noise(simulator.fibre_signals(hr), 0.05, 0.01, np.random.default_rng(seed))
    return signals, simulator.interpolate(signals)


def scores(images, references, mask) -> np.ndarray:
    return np.mean(
        [
            [ssim(x, y, mask=mask), psnr(x, y, mask=mask)]
            for x, y in zip(images, references, strict=True)
        ],
        axis=0,
    )


def rms(offsets, truth) -> float:
    return float(np.sqrt(np.nanmean(np.sum((offsets - truth) ** 2, axis=1))))


def offsets_table() -> None:
    rows = []
    for size, frames in ((256, 32), (576, 64)):
        simulator = bundle(size)
        for seed in (0, 1):
            truth = phantom_sequence(frames, (size, size), seed=seed, speed=4.0)
            _, lr = noisy(simulator, truth.frames, seed)
            true = truth.offsets - truth.offsets[0]
            for gaps in ((1,), (1, 2, 4)):
                result = register_sequence(lr, simulator.fov_mask, gaps=gaps, device="cpu")
                pairs = result.pairs
                pair_error = pairs.offset - (true[pairs.second] - true[pairs.first])
                rows.append(
                    (
                        f"{size}²",
                        frames,
                        seed,
                        ",".join(map(str, gaps)),
                        f"{rms(result.offsets, true):.3f}",
                        f"{rms(pair_error, 0):.3f}",
                        f"{np.abs(result.offsets - true).max():.3f}",
                    )
                )
    print_table(
        "Offsets on noisy phantom sequences (4 px/frame) through one bundle",
        ("frames", "T", "seed", "gaps", "RMS offset (px)", "RMS per pair (px)", "max (px)"),
        rows,
    )


def fused_frames_table(size: int = 256, seeds=(0, 1, 2)) -> None:
    simulator = bundle(size)
    mask = simulator.fov_mask
    layout = simulator.layout
    totals: dict = {}
    for seed in seeds:
        truth = phantom_sequence(32, (size, size), seed=seed + 10, speed=2.0)
        signals, lr = noisy(simulator, truth.frames, seed)
        first = slice(0, 4)  # scored on the same 4 frames, fused with more or fewer others
        base = scores(lr[first], truth.frames[first], mask)
        totals.setdefault("LR", []).append(base)
        for count in (4, 8, 16, 32):
            result = register_sequence(lr[:count], mask, device="cpu")
            variants = {
                "mosaic": {},
                "fibre (true signals)": {
                    "method": "fibre",
                    "layout": layout,
                    "signals": signals[:count],
                },
                "fibre (signals read from LR)": {"method": "fibre", "layout": layout},
            }
            for name, options in variants.items():
                hat = np.asarray(hr_hat_sequence(lr[:count], result, **options)[first])
                totals.setdefault((name, count), []).append(scores(hat, truth.frames[first], mask))
    base = np.mean(totals.pop("LR"), axis=0)
    rows = [("LR (input)", "-", f"{base[0]:.4f}", f"{base[1]:.2f}", "", "")]
    for (name, count), values in totals.items():
        mean = np.mean(values, axis=0)
        rows.append(
            (
                name,
                count,
                f"{mean[0]:.4f}",
                f"{mean[1]:.2f}",
                f"{mean[0] - base[0]:+.4f}",
                f"{mean[1] - base[1]:+.2f}",
            )
        )
    print_table(
        f"HR-hat vs true HR by fused frames ({size}², 2 px/frame, mean of {len(seeds)} "
        "sequences; scored on frames 0-3)",
        ("HR-hat", "fused", "SSIM", "PSNR (dB)", "ΔSSIM", "ΔPSNR"),
        rows,
    )


def deformed_sequence(size, frames, seed, deformation):
    """Frames cut from a phantom canvas with small random rotations and scale changes."""
    truth = phantom_sequence(frames, (size, size), seed=seed, speed=3.0)
    rng = np.random.default_rng(seed)
    centre = (size - 1) / 2
    out = []
    for offset in truth.offsets:
        angle, scale = rng.normal(0, deformation), 1 + rng.normal(0, deformation / 3)
        matrix = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        shift = centre + offset - matrix @ np.array([centre, centre])
        out.append(
            ndimage.affine_transform(truth.canvas, matrix, offset=shift, output_shape=(size, size))
        )
    return np.clip(np.stack(out), 0, 1).astype(np.float32)


def affine_table(size: int = 256) -> None:
    simulator = bundle(size)
    mask = simulator.fov_mask
    rows = []
    for deformation in (0.0, 0.01, 0.03):
        hr = deformed_sequence(size, 16, 3, deformation)
        _, lr = noisy(simulator, hr, 3)
        translation = register_sequence(lr, mask, device="cpu")
        start = time.perf_counter()
        affine = refine_affine(lr, translation, device="cpu")
        seconds = time.perf_counter() - start
        lr_score = scores(lr, hr, mask)
        for name, result in (("translation", translation), ("affine", affine)):
            hat = scores(np.asarray(hr_hat_sequence(lr, result)), hr, mask)
            rows.append(
                (
                    f"{deformation:g} rad / {deformation / 3 * 100:.1f}%",
                    name,
                    f"{hat[0]:.4f}",
                    f"{hat[1]:.2f}",
                    f"{hat[0] - lr_score[0]:+.4f}",
                    f"{seconds:.1f}" if name == "affine" else "",
                )
            )
    print_table(
        f"Affine refinement ({size}², 16 frames; rotation and scale s.d. per frame)",
        ("deformation", "model", "HR-hat SSIM", "PSNR (dB)", "ΔSSIM vs LR", "refine (s)"),
        rows,
    )


def real_recording(figure: Path | None) -> None:
    from napari_pclesr.io import read_sequence
    from napari_pclesr.registration import iter_mosaics
    from napari_pclesr.registration._register import drain

    if not REAL.is_file():
        print(f"\n{REAL} not found: no real-recording figures.")
        return
    frames, meta = read_sequence(REAL)
    stack = np.concatenate(
        [frames.read(range(i, min(i + 16, len(frames)))) for i in range(0, len(frames), 16)]
    )
    mask = meta["fov_mask"]
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SegmentWarning)
        result = register_sequence(stack, mask, device="cpu")
    seconds = time.perf_counter() - start
    summary = result.summary()
    pairs = result.pairs
    gap = pairs.second - pairs.first
    repeat = (gap == 1) & result.quality.duplicate[pairs.second]
    rows = []
    for label, chosen in (
        ("all used pairs", pairs.used),
        ("used, repeats left out", pairs.used & ~repeat),
        *((f"gap {g}", pairs.used & (gap == g) & ~repeat) for g in (1, 2, 4)),
    ):
        values = pairs.residual[chosen]
        rows.append(
            (
                label,
                int(chosen.sum()),
                *(
                    f"{v:.3f}"
                    for v in (
                        np.median(values),
                        np.percentile(values, 90),
                        np.sqrt(np.mean(values**2)),
                        values.max(),
                    )
                ),
            )
        )
    print(
        f"\nReal recording {REAL.name}: {summary['frames']} frames, {summary['kept']} kept "
        f"({100 * summary['kept_fraction']:.1f}%), {summary['duplicates']} repeated frames, "
        f"segments (kept frames): {summary['segment_sizes']}, rejected: "
        f"{summary['rejected_by_reason']}; registration {seconds:.1f} s"
    )
    print_table(
        "Pair residuals on the real recording (pixels)",
        ("pairs", "count", "median", "p90", "RMS", "max"),
        rows,
    )
    start, cpu = time.perf_counter(), time.process_time()
    affine = refine_affine(stack, result, device="cpu")
    affine_cost = (time.perf_counter() - start, time.process_time() - cpu)
    # GCF (sharpness) of the kept, distinct frames and of their HR-hat: a target blurrier than
    # its input teaches a network to blur. The frames are 8-bit video.
    distinct = result.kept[~result.quality.duplicate[result.kept]]
    lr_gcf = float(np.mean(gcf(stack[distinct] / 255, mask=mask)))
    rows = []
    for name, registration in (("translation", result), ("affine", affine)):
        mosaics = drain(iter_mosaics(stack, registration))
        hat = hr_hat_sequence(stack, registration, mosaics=mosaics)
        agreement = []
        for index in registration.kept:
            other = hat[int(index)]
            weight = ndimage.binary_erosion(mask, iterations=20)
            agreement.append(np.corrcoef(stack[index][weight], other[weight])[0, 1])
        hat_gcf = float(np.mean(gcf(np.clip(hat.read(distinct) / 255, 0, 1), mask=mask)))
        rows.append(
            (
                name,
                f"{np.median(agreement):.4f}",
                f"{np.percentile(agreement, 10):.4f}",
                f"{lr_gcf:.3f}",
                f"{hat_gcf:.3f}",
            )
        )
    print_table(
        "Agreement of each kept frame with its HR-hat (correlation inside the FoV), and the "
        f"mean GCF of the {distinct.size} kept distinct frames and of their HR-hat",
        ("model", "median", "10th percentile", "GCF of LR", "GCF of HR-hat"),
        rows,
    )
    print(
        f"affine refinement of {registration.kept.size} kept frames of "
        f"{stack.shape[1]}x{stack.shape[2]}: {affine_cost[0]:.1f} s wall, "
        f"{affine_cost[1]:.1f} s CPU ({affine_cost[1] / registration.kept.size:.2f} s per frame)"
    )
    if figure is not None:
        save_figure(figure, stack, result, mosaics)


def save_figure(path: Path, stack, registration, mosaics) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    largest = registration.largest_segment()
    mosaic = next(m for m in mosaics if m.segment == largest)
    image = mosaic.image
    covered = image[mosaic.weight > 0.5]
    low, high = np.percentile(covered, (1, 99.5))
    fig = plt.figure(figsize=(9, 6.4), layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=(3.2, 1), width_ratios=(1, 2.4))
    frame_axes = fig.add_subplot(grid[0, 0])
    index = int(registration.kept_in(largest)[len(registration.kept_in(largest)) // 2])
    frame_axes.imshow(stack[index], cmap="gray", vmin=low, vmax=high)
    frame_axes.set_title(f"frame {index} (input)", fontsize=9)
    frame_axes.axis("off")
    mosaic_axes = fig.add_subplot(grid[0, 1])
    mosaic_axes.imshow(
        np.where(mosaic.weight > 0.05, image, np.nan), cmap="gray", vmin=low, vmax=high
    )
    mosaic_axes.set_title(
        f"mosaic of segment {largest}: {registration.kept_in(largest).size} frames", fontsize=9
    )
    mosaic_axes.axis("off")
    plot = fig.add_subplot(grid[1, :])
    frames = np.arange(registration.n_frames)
    ncc = np.nan_to_num(registration.quality.ncc)
    rejected = registration.rejected
    plot.plot(frames, ncc, color="0.7", linewidth=0.8)
    plot.scatter(frames[~rejected], ncc[~rejected], s=6)
    plot.scatter(frames[rejected], ncc[rejected], s=20, marker="x", color="red")
    for members in registration.segments[1:]:
        plot.axvline(members[0] - 0.5, color="0.5", linewidth=0.5, linestyle=":")
    plot.set_xlabel("frame")
    plot.set_ylabel("best NCC")
    plot.set_xlim(-1, registration.n_frames)
    fig.text(
        0.01,
        0.0,
        "Data: pcle_colorectal_S01V01.mpeg, amphybio/endomicroscopy-analysis (GPL-3).",
        fontsize=7,
        color="0.4",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    print(f"\nfigure written to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figure", type=Path, default=None, help="PNG of the real mosaic")
    parser.add_argument("--skip-phantoms", action="store_true", help="real recording only")
    args = parser.parse_args()
    if not args.skip_phantoms:
        offsets_table()
        fused_frames_table()
        affine_table()
    real_recording(args.figure)


if __name__ == "__main__":
    main()
