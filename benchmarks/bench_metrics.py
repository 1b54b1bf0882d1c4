"""Per-frame time of the metrics at 576×576, side by side with skimage's SSIM in one run.

Run: ``.venv/bin/python benchmarks/bench_metrics.py [--frames 8] [--repeats 5]``.
Target: our ``ssim`` no slower than ``skimage.metrics.structural_similarity`` with the same
settings (Gaussian window σ = 1.5, population covariance, float64 images).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage as ndi
from skimage.metrics import structural_similarity

from napari_pclesr.metrics import evaluate, gcf, ssim

SIZE = 576


def best_times(cases: dict, repeats: int) -> dict[str, float]:
    """The fastest of ``repeats`` runs of each case, in seconds.

    The cases take turns within each repeat, so a burst of load from other processes
    slows all of them alike instead of one.
    """
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(repeats):
        for label, function in cases.items():
            start = time.perf_counter()
            function()
            best[label] = min(best[label], time.perf_counter() - start)
    return best


def make_frames(frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    hr = ndi.gaussian_filter(rng.random((frames, SIZE, SIZE)), sigma=(0, 2, 2))
    hr = (hr - hr.min()) / (hr.max() - hr.min())
    lr = ndi.gaussian_filter(hr, sigma=(0, 1.5, 1.5))
    sr = np.clip(lr + 0.02 * rng.standard_normal(lr.shape), 0, 1)
    return sr, hr, lr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8, help="frames in the stack runs")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sr, hr, lr = make_frames(args.frames)
    n = args.frames

    def skimage_ssim_frame():
        return structural_similarity(
            sr[0],
            hr[0],
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )

    difference = abs(ssim(sr[0], hr[0]) - skimage_ssim_frame())
    cases = {
        ("skimage structural_similarity, 1 frame", 1): skimage_ssim_frame,
        ("ssim, 1 frame", 1): lambda: ssim(sr[0], hr[0]),
        (f"ssim, stack of {n}", n): lambda: ssim(sr, hr),
        ("gcf, 1 frame", 1): lambda: gcf(sr[0]),
        (f"gcf, stack of {n}", n): lambda: gcf(sr),
        (f"evaluate (SSIM, PSNR, 3 GCF), stack of {n}", n): lambda: evaluate(sr, hr, lr),
    }
    rows = [
        (label, seconds, frames)
        for (label, frames), seconds in best_times(cases, args.repeats).items()
    ]
    reference = rows[0][1]
    print(f"per-frame time at {SIZE}×{SIZE}, float64, best of {args.repeats}")
    print(f"{'what':44s} {'ms/frame':>9s} {'vs skimage SSIM':>16s}")
    for label, seconds, frames in rows:
        per_frame = seconds / frames
        print(f"{label:44s} {1e3 * per_frame:9.2f} {reference / per_frame:15.2f}x")
    print(f"|ssim − skimage| on this pair: {difference:.1e}")


if __name__ == "__main__":
    main()
