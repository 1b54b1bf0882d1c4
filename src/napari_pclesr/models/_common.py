"""Checks and helpers shared by the networks."""

from __future__ import annotations

import math

import torch
from torch import nn

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


#: Layers that act on each pixel alone (in inference mode), so they do not widen the
#: receptive field. Instance, layer and group normalisation are not here: their statistics
#: span the whole frame.
POINTWISE_LAYERS = (
    nn.ReLU,
    nn.PReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Identity,
    nn.Dropout,
    nn.BatchNorm2d,
)


def receptive_field_radius(module: nn.Module) -> int:
    """The receptive-field radius of a network, in input pixels, derived from its layers.

    An output pixel of a ×s network at (y, x) comes from the input pixel (y // s, x // s) and
    depends only on input pixels within this radius of it (in each axis). Tiles run with a
    halo of at least this many input pixels therefore give exactly the untiled output in
    their centre.

    The layers are taken in registration order as one chain, which is how the networks here
    are written (residual and dense connections add paths that are never longer than the
    chain through every layer). Going back from the output, each layer widens the radius
    ``r`` (in pixels of its own output grid):

    * ``Conv2d`` (stride 1) of kernel k, dilation d and padding p: ``r + max(p, d(k−1) − p)``;
    * ``ConvTranspose2d`` of stride s: ``ceil(r / s)`` plus the input pixels one output
      pixel depends on;
    * ``PixelShuffle(f)`` and nearest ``Upsample``: ``ceil(r / f)`` (plus 1 for bilinear,
      2 for bicubic);
    * pointwise layers (:data:`POINTWISE_LAYERS`): nothing.

    A submodule with a method ``widen_receptive_field(radius) -> int`` states its own rule
    (its children are then not visited); networks with other layers should define their own
    ``receptive_field``.

    Parameters
    ----------
    module : torch.nn.Module

    Returns
    -------
    int

    Raises
    ------
    TypeError
        For a layer whose effect on the receptive field is unknown (e.g. global pooling,
        attention, instance normalisation), naming it.

    Examples
    --------
    >>> from torch import nn
    >>> receptive_field_radius(nn.Sequential(nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(),
    ...                                      nn.Conv2d(8, 1, 3, padding=1)))
    3
    """
    return _widen(module, 0, root=True)


def _widen(module: nn.Module, radius: int, root: bool = False) -> int:
    rule = getattr(module, "widen_receptive_field", None)
    if rule is not None and not root:
        return int(rule(radius))
    children = list(module.children())
    if children:
        for child in reversed(children):
            radius = _widen(child, radius)
        return radius
    if isinstance(module, POINTWISE_LAYERS) or _is_empty_container(module):
        return radius
    if isinstance(module, nn.Conv2d) and all(stride == 1 for stride in module.stride):
        reach = 0
        for kernel, dilation, padding in zip(
            module.kernel_size, module.dilation, _padding(module), strict=True
        ):
            span = dilation * (kernel - 1)
            reach = max(reach, padding, span - padding)
        return radius + reach
    if isinstance(module, nn.ConvTranspose2d):
        return max(
            transposed_conv_reach(radius, kernel, stride, padding, dilation)
            for kernel, stride, padding, dilation in zip(
                module.kernel_size, module.stride, module.padding, module.dilation, strict=True
            )
        )
    if isinstance(module, nn.PixelShuffle):
        return math.ceil(radius / module.upscale_factor)
    if isinstance(module, nn.Upsample) and module.size is None:
        factor = module.scale_factor
        factor = max(factor) if isinstance(factor, tuple) else factor
        extra = {"nearest": 0, "bilinear": 1, "bicubic": 2}.get(module.mode)
        if extra is not None and float(factor).is_integer():
            return math.ceil(radius / int(factor)) + extra
    raise TypeError(
        f"cannot derive the receptive field of the layer {type(module).__name__} ({module!r}); "
        "give the network a receptive_field property."
    )


def _is_empty_container(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential | nn.ModuleList | nn.ModuleDict)


def _padding(conv: nn.Conv2d) -> tuple[int, ...]:
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":  # PyTorch puts the odd pixel of an even kernel after
        return tuple(d * (k - 1) // 2 for k, d in zip(conv.kernel_size, conv.dilation, strict=True))
    return conv.padding


def transposed_conv_reach(
    radius: int, kernel: int, stride: int, padding: int, dilation: int = 1
) -> int:
    """The input radius of a transposed convolution whose output radius is ``radius``.

    Output pixel o takes input pixels i with ``i·stride − padding + t·dilation = o`` for a
    tap t of the kernel: from ``ceil((o + padding − dilation(k−1)) / stride)`` to
    ``floor((o + padding) / stride)``, i.e. within ``max(before, after)`` of ``o // stride``.
    """
    span = dilation * (kernel - 1)
    before = (span - padding) // stride
    after = (stride - 1 + padding) // stride
    return math.ceil(radius / stride) + max(before, after, 0)
