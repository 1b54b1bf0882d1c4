"""Simulator speed against PyFibreBundle's Delaunay interpolation, in one run.

Targets (576×576 grid, 30,000 fibres, 2-core machine): set-up <= 2 s, and a full simulation
(Voronoi means, noise and interpolation) per frame in batched mode no slower than
PyFibreBundle's interpolation alone (``recon_tri_interp`` with numba) per frame.

    python benchmarks/bench_simulator.py [--size 576] [--fibres 30000]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _timing import median_seconds, print_table

from napari_pclesr import FibreLayout, Simulator


def pybundle_reference(layout: FibreLayout, frame: np.ndarray):
    """Set-up seconds and per-frame seconds of PyFibreBundle, or None when not installed."""
    try:
        import pybundle
    except ImportError:
        return None
    height, width = layout.shape
    # PyFibreBundle reads core values at integer camera pixels and reconstructs a square grid
    # centred on (centreX, centreY) with the given radius: this covers our grid pixel for pixel.
    cores = np.rint(layout.positions).astype(np.int64)
    centre_row, centre_col = (height - 1) / 2, (width - 1) / 2
    radius = (max(height, width) - 1) / 2

    def calibrate():
        return pybundle.init_tri_interp(
            frame, cores[:, 1], cores[:, 0], centre_col, centre_row, radius, max(height, width)
        )

    setup = median_seconds(calibrate, repeats=3, warmup=0)
    calibration = calibrate()
    per_frame = {
        numba: median_seconds(
            lambda numba=numba: pybundle.recon_tri_interp(frame, calibration, numba=numba),
            repeats=21,
            warmup=2,
        )
        for numba in (True, False)
    }
    return setup, per_frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=576)
    parser.add_argument("--fibres", type=int, default=30000)
    args = parser.parse_args()

    shape = (args.size, args.size)
    layout = FibreLayout.synthetic(shape, n_fibres=args.fibres, seed=0)
    rng = np.random.default_rng(0)
    setup = median_seconds(lambda: Simulator(layout), repeats=3, warmup=1)
    simulator = Simulator(layout)
    reference = pybundle_reference(layout, rng.random(shape) * 255)
    if reference is None:
        reference_setup, numba_ms, numpy_ms = "n/a", "n/a", "n/a"
    else:
        reference_setup = reference[0]
        numba_ms, numpy_ms = reference[1][True] * 1e3, reference[1][False] * 1e3

    rows = [("set-up (s)", setup, reference_setup, "n/a")]
    simulate_ms = {}
    for frames in (1, 8, 32):
        stack = rng.random((frames, *shape), dtype=np.float32)
        hr = stack[0] if frames == 1 else stack
        seconds = median_seconds(lambda hr=hr: simulator.simulate(hr, seed=0), repeats=7)
        simulate_ms[frames] = seconds * 1e3 / frames
        name = f"simulate, {frames} frame(s) a call (ms/frame)"
        rows.append((name, simulate_ms[frames], numba_ms, numpy_ms))
    for frames in (1, 32):
        signals = rng.random((frames, layout.n_fibres), dtype=np.float32)
        values = signals[0] if frames == 1 else signals
        seconds = median_seconds(lambda values=values: simulator.interpolate(values), repeats=7)
        name = f"interpolate, {frames} frame(s) a call (ms/frame)"
        rows.append((name, seconds * 1e3 / frames, numba_ms, numpy_ms))

    print(f"grid {shape[0]}x{shape[1]}, {layout.n_fibres} fibres, {os.cpu_count()} CPU cores")
    print_table(
        "napari-pclesr Simulator vs PyFibreBundle recon_tri_interp (interpolation only)",
        ("measure", "napari-pclesr", "pybundle numba", "pybundle numpy"),
        rows,
    )
    print(f"\nset-up target <= 2 s: {setup:.2f} s -> {'met' if setup <= 2 else 'MISSED'}")
    if reference is None:
        print("PyFibreBundle is not installed (pip install pyfibrebundle): reference skipped.")
        return
    for frames in (8, 32):
        verdict = "met" if simulate_ms[frames] <= numba_ms else "MISSED"
        print(
            f"batched full simulate, {frames} frames a call: {simulate_ms[frames]:.2f} ms/frame vs "
            f"pybundle interpolation only {numba_ms:.2f} ms/frame -> {verdict}"
        )


if __name__ == "__main__":
    main()
