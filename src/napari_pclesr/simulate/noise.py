"""The fibre-signal noise model of seed 000: nfs = (1 + m)·fs + a."""

from __future__ import annotations

import numpy as np


def add_fibre_noise(
    signals: np.ndarray, sigma_mult: float, sigma_add: float, rng: np.random.Generator
) -> np.ndarray:
    """Return noisy (T, N) or (N,) fibre signals ``nfs = (1 + m)·fs + a``.

    ``m ~ N(0, sigma_mult)`` and ``a ~ N(0, sigma_add·(max fs − min fs))`` are independent for
    every fibre and frame; the range ``max fs − min fs`` is taken per frame.

    For a given signal ``fs``, ``m·fs + a`` is a sum of two independent zero-mean normals, so it
    is exactly ``N(0, sqrt((sigma_mult·fs)² + (sigma_add·(max fs − min fs))²))``. One normal draw
    per fibre therefore gives the same distribution as two, at half the cost (the draws are the
    largest part of a simulated frame's time).

    Raises
    ------
    ValueError
        If the noise overflows float32 (absurdly large sigmas): nothing non-finite is returned.
    """
    signals = np.asarray(signals, dtype=np.float32)
    spread = signals.max(axis=-1, keepdims=True) - signals.min(axis=-1, keepdims=True)
    with np.errstate(over="ignore", invalid="ignore"):  # reported below, in words
        scale = np.hypot(sigma_mult * signals, sigma_add * spread)
        noisy = signals + scale * rng.standard_normal(signals.shape, dtype=np.float32)
    if not np.all(np.isfinite(noisy)):
        raise ValueError(
            f"the noise sigma_mult={sigma_mult:g}, sigma_add={sigma_add:g} makes the simulated "
            "fibre signals overflow to infinity; use sigmas of order 1 or below (seed 000 "
            "uses 0.05 and 0.01)."
        )
    return noisy
