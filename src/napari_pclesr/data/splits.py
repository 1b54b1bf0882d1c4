"""Reproducible train/validation/test splits by sequence.

Frames of one sequence are strongly correlated, so a split by frame would leak the validation
and test data into training. Splits here assign whole sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DEFAULT_FRACTIONS", "SequenceSplit", "split_sequences"]

DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)


@dataclass(frozen=True)
class SequenceSplit:
    """Indices of the sequences in each part of a split (sorted, disjoint)."""

    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]

    def to_dict(self) -> dict[str, list[int]]:
        """The split as a JSON-friendly dict of lists."""
        return {"train": list(self.train), "val": list(self.val), "test": list(self.test)}


def split_sequences(
    n_sequences: int,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> SequenceSplit:
    """Split ``n_sequences`` sequences into train, validation and test parts.

    The counts follow ``fractions`` by largest remainders, and every part with a positive
    fraction gets at least one sequence (taken from the largest part). Which sequences go where
    is a random permutation drawn from ``seed``, so the split is reproducible.

    Parameters
    ----------
    n_sequences : int
        Number of sequences.
    fractions : tuple of 3 floats
        Shares of (train, validation, test), non-negative, summing to 1. Default 70/15/15.
    seed : int
        Seed of the permutation.

    Returns
    -------
    SequenceSplit

    Raises
    ------
    ValueError
        If the fractions are invalid, or there are too few sequences to give every part with a
        positive fraction at least one sequence and keep one for training.

    Examples
    --------
    >>> split_sequences(10, seed=0)
    SequenceSplit(train=(2, 3, 4, 5, 6, 7, 9), val=(0, 8), test=(1,))
    """
    n_sequences = int(n_sequences)
    shares = np.asarray(fractions, dtype=np.float64)
    if shares.shape != (3,) or np.any(~np.isfinite(shares)) or np.any(shares < 0):
        raise ValueError(
            f"fractions must be three non-negative numbers (train, val, test), got {fractions!r}."
        )
    if shares[0] <= 0 or not np.isclose(shares.sum(), 1.0):
        raise ValueError(
            f"fractions must sum to 1 with a positive training share, got {fractions!r}."
        )
    needed = int(np.count_nonzero(shares))
    if n_sequences < needed:
        raise ValueError(
            f"{n_sequences} sequence(s) cannot be split by sequence into {needed} non-empty "
            f"parts with fractions {tuple(fractions)}; give at least {needed} sequences (frames "
            "of one sequence are never split across parts), or set the validation/test "
            "fraction to 0."
        )
    counts = _largest_remainder_counts(n_sequences, shares)
    order = np.random.default_rng(seed).permutation(n_sequences)
    bounds = np.cumsum(counts)
    parts = np.split(order, bounds[:-1])
    return SequenceSplit(*(tuple(int(i) for i in np.sort(part)) for part in parts))


def _largest_remainder_counts(total: int, shares: np.ndarray) -> np.ndarray:
    exact = shares * total
    counts = np.floor(exact).astype(int)
    remainders = exact - counts
    for index in np.argsort(-remainders, kind="stable")[: total - counts.sum()]:
        counts[index] += 1
    for index in np.flatnonzero((shares > 0) & (counts == 0)):
        counts[index] += 1
        counts[np.argmax(counts)] -= 1
    return counts
