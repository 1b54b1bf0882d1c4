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
    "GAN_LOSSES",
    "L1Loss",
    "MSELoss",
    "SSIML1Loss",
    "SSIMLoss",
    "available",
    "create",
    "discriminator_loss",
    "fibre_vector_loss",
    "gaussian_kernel1d",
    "generator_adversarial_loss",
    "row_column_loss",
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


# -- adversarial and cycle-consistency terms ----------------------------------------------------

#: ``"bce"``: the standard GAN cross-entropy; ``"ragan"``: relativistic average GAN (ESRGAN).
GAN_LOSSES = ("bce", "ragan")


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def _check_gan_loss(kind: str) -> None:
    if kind not in GAN_LOSSES:
        raise ValueError(f"unknown GAN loss {kind!r}; choose one of {', '.join(GAN_LOSSES)}.")


def discriminator_loss(
    real_logits: torch.Tensor,
    fake_logits: torch.Tensor,
    kind: str = "bce",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """The discriminator's loss on logits of real (target-domain) and fake (generated) patches.

    ``"bce"``: −log D(real) − log(1 − D(fake)), D = sigmoid(logit) (seed 001, Eq. 1, as a
    minimisation), each term a batch mean. ``"ragan"``: the relativistic average form of ESRGAN,
    with D_Ra(x, y) = sigmoid(C(x) − mean C(y)): −log D_Ra(real, fake) − log(1 − D_Ra(fake,
    real)). ``label_smoothing`` s makes the target of real patches 1 − s (one-sided).
    """
    _check_gan_loss(kind)
    if kind == "ragan":
        real_logits, fake_logits = (
            real_logits - fake_logits.mean(),
            fake_logits - real_logits.mean(),
        )
    return _bce(real_logits, 1.0 - label_smoothing) + _bce(fake_logits, 0.0)


def generator_adversarial_loss(
    fake_logits: torch.Tensor, real_logits: torch.Tensor | None = None, kind: str = "bce"
) -> torch.Tensor:
    """The generator's adversarial term.

    ``"bce"``: −log D(fake) (seed 001, Eq. 5; SRGAN's non-saturating loss), a batch mean;
    ``real_logits`` is not needed. ``"ragan"``: −log(1 − D_Ra(real, fake)) − log D_Ra(fake,
    real), so the generator also learns from the real patches' logits (pass them detached).
    """
    _check_gan_loss(kind)
    if kind == "bce":
        return _bce(fake_logits, 1.0)
    if real_logits is None:
        raise ValueError("the relativistic GAN loss needs the logits of real patches.")
    return _bce(real_logits - fake_logits.mean(), 0.0) + _bce(fake_logits - real_logits.mean(), 1.0)


def fibre_vector_loss(
    lr_vectors: torch.Tensor,
    sr_vectors: torch.Tensor,
    valid: torch.Tensor,
    normalisation: str = "lr",
    eps: float = 1e-6,
) -> torch.Tensor:
    """l_Vec of seed 001 (Eq. 4): the mean squared difference of fibre vectors over real entries.

    Each patch's vectors are brought to [0, 1] first (the seed's last vectorisation step):

    - ``"lr"`` (default): both with the minimum and maximum of the LR vector over the patch's
      real entries. The comparison stays in the same intensity units for both, so a change of
      the SR's contrast or brightness costs, and every patch weighs the same whatever its
      contrast.
    - ``"separate"``: each vector with its own minimum and maximum (the seed's literal reading);
      the term is then blind to the SR's contrast and offset, which l_Reg has to restore.

    Padded entries (``valid`` False) take no part: they neither add to the sum nor to the count.

    Parameters
    ----------
    lr_vectors, sr_vectors : torch.Tensor (B, K)
        V(I_LR) and V̂(SR) per patch, zero padded.
    valid : torch.Tensor (B, K) of bool
    normalisation : {"lr", "separate"}
    eps : float
        Smallest span used for a flat vector.

    Returns
    -------
    torch.Tensor
        A scalar (0 when no entry is real).
    """
    if normalisation not in ("lr", "separate"):
        raise ValueError(f"normalisation must be 'lr' or 'separate', got {normalisation!r}.")
    if not (lr_vectors.shape == sr_vectors.shape == valid.shape):
        raise ValueError(
            f"vector shapes differ: {tuple(lr_vectors.shape)}, {tuple(sr_vectors.shape)} and "
            f"validity {tuple(valid.shape)}."
        )
    lr_vectors, sr_vectors = lr_vectors.float(), sr_vectors.float()
    low, span = _valid_range(lr_vectors, valid, eps)
    if normalisation == "separate":
        sr_low, sr_span = _valid_range(sr_vectors, valid, eps)
    else:
        sr_low, sr_span = low, span
    difference = (lr_vectors - low) / span - (sr_vectors - sr_low) / sr_span
    squares = torch.where(valid, difference.square(), torch.zeros_like(difference))
    return squares.sum() / valid.sum().clamp_min(1)


def _valid_range(vectors: torch.Tensor, valid: torch.Tensor, eps: float):
    """Per-row minimum and (max − min, at least ``eps``) over the valid entries, as (B, 1)."""
    low = torch.where(valid, vectors, torch.full_like(vectors, math.inf)).amin(1, keepdim=True)
    high = torch.where(valid, vectors, torch.full_like(vectors, -math.inf)).amax(1, keepdim=True)
    low = torch.where(torch.isfinite(low), low, torch.zeros_like(low))
    span = torch.where(torch.isfinite(high), high - low, torch.ones_like(high))
    return low, span.clamp_min(eps)


def row_column_loss(sr: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
    """l_Reg of seed 001 (Eq. 6): squared differences of the row means and column means.

    ``mean_y (rowmean(SR) − rowmean(LR))² + mean_x (colmean(SR) − colmean(LR))²``, averaged over
    the batch. For an SR ``s`` times larger than the LR, the SR is first averaged over s × s
    blocks, so the means compare the same rows and columns of the scene.

    Parameters
    ----------
    sr : torch.Tensor (B, 1, s·H, s·W)
    lr : torch.Tensor (B, 1, H, W)
    """
    if sr.ndim != 4 or lr.ndim != 4 or sr.shape[:2] != lr.shape[:2]:
        raise ValueError(
            f"expected (B, C, H, W) tensors, got {tuple(sr.shape)} and {tuple(lr.shape)}."
        )
    factor = sr.shape[-1] // lr.shape[-1]
    if factor < 1 or sr.shape[-2:] != (factor * lr.shape[-2], factor * lr.shape[-1]):
        raise ValueError(
            f"the SR {tuple(sr.shape)} is not a whole multiple of the LR {tuple(lr.shape)}."
        )
    sr, lr = sr.float(), lr.float()
    if factor > 1:
        sr = F.avg_pool2d(sr, factor)
    rows = (sr.mean(dim=-1) - lr.mean(dim=-1)).square().mean(dim=-1)
    cols = (sr.mean(dim=-2) - lr.mean(dim=-2)).square().mean(dim=-1)
    return (rows + cols).mean()
