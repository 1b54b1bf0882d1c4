"""Calibrate the noise flag of the metrics table on the demo's data.

The metrics table marks a method whose contrast gain (ΔGCF vs LR > 0) comes with a noise
ratio above ``NOISE_RATIO_LIMIT`` (see docs/metrics.md). This script prints, for the demo's
test frames (576×576 phantom sequence, seed 1000, a 30,000-fibre bundle, seed 000's noise) and
for the other phantom kinds, the noise ratio of every baseline, of a mildly smoothing model
(a Gaussian blur of σ = 0.7 px), of the true HR and, if given, of a trained checkpoint (the
demo's FSRCNN: ``demo_output/run/best.pt``), at several tap spacings, with ΔGCF and whether
the current limit flags it.

    python scripts/calibrate_noise_limit.py [--checkpoint demo_output/run/best.pt]
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import ndimage as ndi

from napari_pclesr import FibreLayout, Simulator
from napari_pclesr.data import phantom_sequence
from napari_pclesr.fibre import fibre_count_for
from napari_pclesr.infer import super_resolve
from napari_pclesr.metrics import (
    NOISE_RATIO_LIMIT,
    NOISE_SPACING_PX,
    gcf,
    noise_sigma,
    noisy_contrast,
)

SHAPE = (576, 576)
DEMO_SEED = 1000  # the demo's test sequence: seed 0 + its TEST_SEED_OFFSET
SPACINGS = (1, 2, 3, 4, 5)
BASELINES = ("wiener", "richardson_lucy", "tv", "unsharp", "bicubic")


def methods(lr, hr, mask, checkpoint) -> dict[str, np.ndarray]:
    results = {"HR (truth)": hr}
    for name in BASELINES:
        results[name] = super_resolve(lr, name, device="cpu", fov_mask=mask)
    blurred = np.stack([ndi.gaussian_filter(frame, 0.7) for frame in lr]) * mask
    results["mild smoothing (σ 0.7 px)"] = blurred
    if checkpoint is not None:
        results["checkpoint"] = super_resolve(lr, checkpoint, device="cpu", fov_mask=mask)
    return results


def report(kind: str, frames: int, seed: int, checkpoint) -> None:
    hr = phantom_sequence(frames, SHAPE, kind=kind, seed=seed).frames
    layout = FibreLayout.synthetic(SHAPE, fibre_count_for(SHAPE), seed=seed)
    simulator = Simulator(layout)
    lr = simulator.simulate(hr, sigma_mult=0.05, sigma_add=0.01, seed=seed)
    mask = simulator.fov_mask
    hr = hr * mask
    lr_noise = {s: noise_sigma(lr, mask, s) for s in SPACINGS}
    lr_gcf = gcf(lr, mask)
    print(f"\n{kind} phantom, seed {seed}, {frames} frames: noise ratio (min–max over frames)")
    print(f"{'method':28s}" + "".join(f"  spacing {s:<9d}" for s in SPACINGS) + "  ΔGCF    flag")
    for name, image in methods(lr, hr, mask, checkpoint).items():
        ratios = {s: noise_sigma(image, mask, s) / lr_noise[s] for s in SPACINGS}
        cells = "".join(f"  {r.min():5.2f}–{r.max():5.2f}    " for r in ratios.values())
        delta = float(np.mean(gcf(image, mask) - lr_gcf))
        flagged = noisy_contrast(delta, ratios[NOISE_SPACING_PX].mean())
        print(f"{name:28s}{cells}  {delta:+.3f}  {'⚠' if flagged else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a trained model to include (e.g. the demo's)")
    parser.add_argument("--frames", type=int, default=4)
    args = parser.parse_args()
    print(f"limit {NOISE_RATIO_LIMIT:g} at spacing {NOISE_SPACING_PX} px")
    report("mixed", args.frames, DEMO_SEED, args.checkpoint)
    for kind, seed in (("colon", 2000), ("oesophagus", 3000)):
        report(kind, 2, seed, args.checkpoint)


if __name__ == "__main__":
    main()
