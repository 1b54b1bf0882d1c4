"""Checks and helpers shared by the networks."""

from __future__ import annotations

import math

import torch

SUPPORTED_SCALES = (1, 2, 4, 8)


def check_scale(scale) -> int:
    """Return ``scale`` as an int, or raise ``ValueError`` if it is not 1, 2, 4 or 8."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale not in SUPPORTED_SCALES:
        supported = ", ".join(str(s) for s in SUPPORTED_SCALES)
        raise ValueError(
            f"scale must be one of {supported} (1 restores on the same grid), got {scale!r}."
        )
    return scale


def check_positive_int(value, name: str) -> int:
    """Return ``value`` if it is an int >= 1, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}.")
    return value


def check_positive_float(value, name: str) -> float:
    """Return ``value`` as a float if it is finite and > 0, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number > 0, got {value!r}.")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    return value


def check_frames(x: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``x`` is a (B, 1, H, W) floating-point tensor."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor of shape (B, 1, H, W), got {type(x).__name__}.")
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(
            f"expected a batch of grey frames of shape (B, 1, H, W), got {tuple(x.shape)}; "
            "add the missing axes, e.g. frames[:, None] for a (B, H, W) stack."
        )
    if not x.is_floating_point():
        raise ValueError(f"expected a floating-point tensor, got {x.dtype}; use x.float().")


def upsampling_steps(scale: int) -> int:
    """The number of ×2 steps that make ``scale`` (0 for 1, 3 for 8)."""
    return int(math.log2(scale))
