"""Training losses, chosen by name: ``"l1"``, ``"mse"``, ``"ssim"`` and ``"ssim+l1"``.

.. code-block:: python

    from napari_pclesr import losses

    loss = losses.create("ssim+l1", alpha=0.84)
    value = loss(prediction, target)  # (B, 1, H, W) tensors -> a scalar tensor

Every loss is a ``torch.nn.Module`` called as ``loss(prediction, target, mask=None)`` on
(B, C, H, W) tensors of the same shape, and returns a scalar tensor to minimise. A ``mask``
(B, 1 or C, H, W) restricts every term to the pixels where it is nonzero, e.g. the field of
view of a patch cut at the rim of the circular pCLE image: the error at a pixel outside does
not count (SSIM is still computed over an 11 × 11 window, so it sees up to 5 pixels beyond the
mask; the pipeline fills those with the nearest field-of-view values, see
:mod:`napari_pclesr.data.patches`).

SSIM here is exactly the definition of :mod:`napari_pclesr.metrics` (Wang et al. 2004, as
``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1)``): local statistics under an 11×11 Gaussian window
(σ = 1.5, truncated at 3.5σ), population (co)variances, K1 = 0.01, K2 = 0.03, and the mean of
the SSIM map without the 5-pixel border. Because the border that is left out is exactly the
window's radius, no window reaches past the image and the padding rule never matters: the
map is a "valid" convolution. It is computed in float32 (float64 if given float64) even under
mixed precision, because the variances are small differences of large terms.
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "L1Loss",
    "MSELoss",
    "SSIML1Loss",
    "SSIMLoss",
    "available",
    "create",
    "gaussian_kernel1d",
    "ssim",
]

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
#: Zhao et al.'s weight of the SSIM term in the mixed loss.
DEFAULT_ALPHA = 0.84


def gaussian_kernel1d(sigma: float, truncate: float = 4.0, dtype=torch.float32, device=None):
    """The normalised 1-D Gaussian that ``scipy.ndimage.gaussian_filter`` uses.

    Its radius is ``int(truncate · sigma + 0.5)``; σ = 0 gives the identity kernel ``[1]``.
    """
    sigma = float(sigma)
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}.")
    radius = int(truncate * sigma + 0.5)
    if radius == 0:
        return torch.ones(1, dtype=dtype, device=device)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def _check_pair(prediction: torch.Tensor, target: torch.Tensor) -> None:
    for name, tensor in (("prediction", prediction), ("target", target)):
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != 4:
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor)
            raise ValueError(f"{name} must be a (B, C, H, W) tensor, got {shape}.")
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction and target shapes differ: {tuple(prediction.shape)} vs "
            f"{tuple(target.shape)}."
        )


def _window_filter(maps: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of every channel of (N, C, H, W) maps, 'valid' region only."""
    channels = maps.shape[1]
    size = kernel.numel()
    rows = kernel.view(1, 1, 1, size).expand(channels, 1, 1, size)
    cols = kernel.view(1, 1, size, 1).expand(channels, 1, size, 1)
    return F.conv2d(F.conv2d(maps, rows, groups=channels), cols, groups=channels)


def _working_dtype(tensor: torch.Tensor) -> torch.dtype:
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def ssim(
    prediction: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Differentiable mean SSIM of each image of a batch.

    Parameters
    ----------
    prediction, target : torch.Tensor
        (B, C, H, W) tensors of the same shape, H and W at least 11.
    data_range : float
        The range of the values (1 for frames in [0, 1]).
    mask : torch.Tensor, optional
        (B, 1 or C, H, W), nonzero where a pixel counts (e.g. inside the field of view): the
        mean runs over the SSIM map's pixels inside it. An image with no such pixel scores 0.

    Returns
    -------
    torch.Tensor
        (B,) mean SSIM of each image (averaged over its channels), in float32 or float64.

    Raises
    ------
    ValueError
        For tensors that are not 4-D, differ in shape, or are smaller than the 11×11 window.
    """
    ssim_map, weights = _ssim_map(prediction, target, data_range, mask)
    batch = prediction.shape[0]
    if weights is None:
        return ssim_map.reshape(batch, -1).mean(dim=1)
    total = (ssim_map * weights).reshape(batch, -1).sum(dim=1)
    return total / weights.reshape(batch, -1).sum(dim=1).clamp(min=1.0)


def _ssim_map(prediction, target, data_range, mask):
    """The SSIM map of the 'valid' region, (B·C, H − 10, W − 10), and the mask cropped to it."""
    _check_pair(prediction, target)
    dtype = _working_dtype(prediction)
    kernel = gaussian_kernel1d(SSIM_SIGMA, SSIM_TRUNCATE, dtype=dtype, device=prediction.device)
    size = kernel.numel()
    if min(prediction.shape[-2:]) < size:
        raise ValueError(
            f"SSIM needs frames of at least {size}×{size} pixels (its Gaussian window), got "
            f"{tuple(prediction.shape[-2:])}."
        )
    batch, channels, height, width = prediction.shape
    with torch.autocast(prediction.device.type, enabled=False):
        x = prediction.to(dtype).reshape(batch * channels, 1, height, width)
        y = target.to(dtype).reshape(batch * channels, 1, height, width)
        stats = _window_filter(torch.cat([x, y, x * x, y * y, x * y], dim=1), kernel)
        mu_x, mu_y, xx, yy, xy = stats.unbind(dim=1)
        var_x = xx - mu_x * mu_x
        var_y = yy - mu_y * mu_y
        cov = xy - mu_x * mu_y
        c1 = (SSIM_K1 * data_range) ** 2
        c2 = (SSIM_K2 * data_range) ** 2
        ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
            (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
        )
    if mask is None:
        return ssim_map, None
    radius = size // 2
    weights = _mask_like(mask, prediction)[..., radius:-radius, radius:-radius]
    return ssim_map, weights.reshape(ssim_map.shape).to(ssim_map.dtype)


def _mask_like(mask: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """The mask as float weights of the prediction's shape (channels broadcast)."""
    if (
        mask.ndim != 4
        or mask.shape[0] != prediction.shape[0]
        or mask.shape[-2:] != (prediction.shape[-2:])
    ):
        raise ValueError(
            f"mask must be (B, 1 or C, H, W) matching the prediction {tuple(prediction.shape)}, "
            f"got {tuple(mask.shape)}."
        )
    return mask.to(_working_dtype(prediction)).expand_as(prediction)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` over the pixels where ``mask`` is nonzero (all pixels without one)."""
    if mask is None:
        return values.mean()
    weights = _mask_like(mask, values)
    return (values * weights).sum() / weights.sum().clamp(min=1.0)


def _pooled_ssim(prediction, target, data_range, mask) -> torch.Tensor:
    """Mean of the SSIM map over every counted pixel of the batch."""
    ssim_map, weights = _ssim_map(prediction, target, data_range, mask)
    if weights is None:
        return ssim_map.mean()
    return (ssim_map * weights).sum() / weights.sum().clamp(min=1.0)


class L1Loss(nn.Module):
    """Mean absolute error (over the pixels inside ``mask`` when one is given)."""

    def forward(self, prediction: torch.Tensor, target: torch.Tensor, mask=None) -> torch.Tensor:
        _check_pair(prediction, target)
        return _masked_mean((prediction - target).abs(), mask)


class MSELoss(nn.Module):
    """Mean squared error (over the pixels inside ``mask`` when one is given)."""

    def forward(self, prediction: torch.Tensor, target: torch.Tensor, mask=None) -> torch.Tensor:
        _check_pair(prediction, target)
        return _masked_mean((prediction - target).square(), mask)


class SSIMLoss(nn.Module):
    """1 − SSIM: the SSIM map averaged over the batch (and over ``mask``; see :func:`ssim`)."""

    def __init__(self, data_range: float = 1.0):
        super().__init__()
        self.data_range = _check_data_range(data_range)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor, mask=None) -> torch.Tensor:
        return 1.0 - _pooled_ssim(prediction, target, self.data_range, mask)


class SSIML1Loss(nn.Module):
    """Zhao et al.'s mixed loss, α·(1 − SSIM) + (1 − α)·L1.

    Parameters
    ----------
    alpha : float
        Weight of the SSIM term, in [0, 1] (0.84, Zhao et al. 2017).
    l1 : {"plain", "gaussian"}
        ``"plain"`` (default): the mean absolute error over all pixels. ``"gaussian"``:
        Zhao et al.'s form, the absolute error weighted by the SSIM window, i.e. the mean over
        the SSIM map's region of the Gaussian-filtered absolute error. The plain mean is the
        default because it supervises every pixel equally, the 5-pixel border included, which
        the SSIM term leaves out; Zhao et al. weight the L1 term so that both terms describe the
        same window around each pixel, which matters for their per-pixel back-propagation but
        changes only the border's weight for a whole-frame mean (the window sums to 1).
    data_range : float
        The range of the values (1 for frames in [0, 1]).
    """

    def __init__(self, alpha: float = DEFAULT_ALPHA, l1: str = "plain", data_range: float = 1.0):
        super().__init__()
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}.")
        if l1 not in ("plain", "gaussian"):
            raise ValueError(f"l1 must be 'plain' or 'gaussian', got {l1!r}.")
        self.alpha = float(alpha)
        self.l1 = l1
        self.data_range = _check_data_range(data_range)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor, mask=None) -> torch.Tensor:
        ssim_term = 1.0 - _pooled_ssim(prediction, target, self.data_range, mask)
        error = (prediction - target).abs()
        if self.l1 == "gaussian":
            dtype = _working_dtype(prediction)
            kernel = gaussian_kernel1d(SSIM_SIGMA, SSIM_TRUNCATE, dtype, prediction.device)
            batch, channels, height, width = error.shape
            error = _window_filter(
                error.to(dtype).reshape(batch * channels, 1, height, width), kernel
            ).reshape(batch, channels, height - kernel.numel() + 1, width - kernel.numel() + 1)
            if mask is not None:
                radius = kernel.numel() // 2
                mask = mask[..., radius:-radius, radius:-radius]
        return self.alpha * ssim_term + (1.0 - self.alpha) * _masked_mean(error, mask)


def _check_data_range(data_range) -> float:
    if isinstance(data_range, bool) or not isinstance(data_range, int | float):
        raise ValueError(f"data_range must be a number > 0, got {data_range!r}.")
    if not math.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"data_range must be a finite number > 0, got {data_range!r}.")
    return float(data_range)


_LOSSES = {
    "l1": L1Loss,
    "mse": MSELoss,
    "ssim": SSIMLoss,
    "ssim+l1": SSIML1Loss,
}
_ALIASES = {"mix": "ssim+l1"}


def canonical_name(name: str) -> str:
    """The registry name of a loss: lower case, aliases resolved (``"mix"`` -> ``"ssim+l1"``).

    Raises
    ------
    ValueError
        For an unknown name; the message lists the available ones.
    """
    key = name.strip().lower() if isinstance(name, str) else name
    key = _ALIASES.get(key, key)
    if key not in _LOSSES:
        names = ", ".join([*_LOSSES, *_ALIASES])
        raise ValueError(f"unknown loss {name!r}; available losses: {names}.")
    return key


def available() -> list[str]:
    """Names of the losses (aliases excluded; ``"mix"`` is ``"ssim+l1"``)."""
    return list(_LOSSES)


def create(name: str, **kwargs) -> nn.Module:
    """Build the loss called ``name`` (see :func:`available`; ``"mix"`` = ``"ssim+l1"``).

    Parameters
    ----------
    name : str
        ``"l1"``, ``"mse"``, ``"ssim"``, ``"ssim+l1"`` or ``"mix"`` (case-insensitive).
    **kwargs
        Options of that loss: ``data_range`` for ``"ssim"``; ``alpha``, ``l1`` and
        ``data_range`` for ``"ssim+l1"``.

    Raises
    ------
    ValueError
        For an unknown name or option, or a bad option value.
    """
    key = canonical_name(name)
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    accepted = [
        option
        for option, parameter in inspect.signature(_LOSSES[key]).parameters.items()
        if parameter.kind in named
    ]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"loss {key!r} does not take the option(s) {', '.join(unknown)}; it accepts "
            f"{', '.join(accepted) if accepted else 'no options'}."
        )
    return _LOSSES[key](**kwargs)
