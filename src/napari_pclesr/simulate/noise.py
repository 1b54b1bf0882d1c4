"""The fibre-signal noise model of seed 000: nfs = (1 + m)·fs + a."""

from __future__ import annotations

import numpy as np


def add_fibre_noise(
    signals: np.ndarray, sigma_mult: float, sigma_add: float, rng: np.random.Generator
) -> np.ndarray:
    """Return ``(1 + m)·signals + a`` for (T, N) fibre signals.

    ``m ~ N(0, sigma_mult)`` and ``a ~ N(0, sigma_add·(max fs − min fs))`` are drawn independently
    for every fibre and frame; the range ``max fs − min fs`` is taken per frame.
    """
    signals = np.asarray(signals, dtype=np.float32)
    multiplicative, additive = rng.standard_normal((2, *signals.shape), dtype=np.float32)
    spread = signals.max(axis=-1, keepdims=True) - signals.min(axis=-1, keepdims=True)
    multiplicative *= sigma_mult
    multiplicative += 1
    additive *= sigma_add * spread
    return signals * multiplicative + additive
