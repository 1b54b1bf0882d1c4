"""Parsing of metadata values shared by the readers."""

from __future__ import annotations

import math


def positive_float(value) -> float | None:
    """``value`` as a float if it is a finite number > 0 (or a string of one), else None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None
