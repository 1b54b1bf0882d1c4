"""Non-learned baselines with the call shape of a model, so that every table can include them.

>>> from napari_pclesr import baselines
>>> baselines.available()
['bicubic', 'bilinear', 'nearest', 'richardson_lucy', 'tv', 'unsharp', 'wiener']
>>> wiener = baselines.create("wiener", sigma=2.0, balance=0.01)

Each baseline is a ``torch.nn.Module`` without trainable parameters that maps a batch of frames
(B, 1, H, W) with values in [0, 1] to (B, 1, s·H, s·W) in [0, 1], for s = ``scale`` in 1, 2, 4
or 8, batched and on any device (CPU included).

- ``nearest``, ``bilinear``, ``bicubic``: ``torch.nn.functional.interpolate``
  (``align_corners=False``; bicubic with a = −0.75, clipped to [0, 1]). At scale 1 they return
  the input.
- ``unsharp``: unsharp masking ("contrast enhancement"), x + amount·(x − G_radius ∗ x),
  clipped to [0, 1]; :func:`tune_unsharp` picks ``radius`` and ``amount`` on a training set.
- ``wiener``: Wiener deconvolution with a Gaussian PSF (σ = 2 by default, the seeds' setting).
- ``richardson_lucy``: Richardson–Lucy deconvolution with a Gaussian PSF.
- ``tv``: total-variation-regularised deconvolution with a Gaussian PSF, standing in for the
  seeds' variational Bayesian baseline (see :class:`TVDeconvolution` for exactly what it is).

The deconvolutions share one forward model: the blur is a Gaussian filter of standard deviation
``sigma`` (output pixels), truncated at 4σ, with the image extended by half-sample symmetry
beyond its borders, exactly ``scipy.ndimage.gaussian_filter(mode="reflect")``. This blur is
self-adjoint, which the iterative methods rely on. At scale s > 1 the frame is first enlarged
by bicubic interpolation, and the PSF is on the enlarged grid.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_pclesr._validation import as_grey_float
from napari_pclesr.devices import select_device
from napari_pclesr.losses import gaussian_kernel1d, ssim
from napari_pclesr.models._common import check_frames, check_scale

__all__ = [
    "Baseline",
    "Interpolation",
    "RichardsonLucy",
    "TVDeconvolution",
    "UnsharpMask",
    "WienerDeconvolution",
    "available",
    "create",
    "default_params",
    "gaussian_blur",
    "tune_unsharp",
]

#: Truncation of the Gaussian PSF and blur, in standard deviations (scipy's default).
TRUNCATE = 4.0


# --- checks --------------------------------------------------------------------------------


def _number(value, name: str, minimum: float = 0.0, strict: bool = False) -> float:
    bad = isinstance(value, bool) or not isinstance(value, int | float)
    if not bad:
        value = float(value)
        bad = not math.isfinite(value) or value < minimum or (strict and value == minimum)
    if bad:
        relation = ">" if strict else ">="
        raise ValueError(f"{name} must be a finite number {relation} {minimum:g}, got {value!r}.")
    return value


def _count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}.")
    return value


# --- filtering helpers ---------------------------------------------------------------------


def _blur_radius(sigma: float, truncate: float = TRUNCATE) -> int:
    """Radius in pixels of the Gaussian kernel of :func:`gaussian_blur`."""
    return int(truncate * sigma + 0.5)


def _reflect_indices(size: int, radius: int, device) -> torch.Tensor:
    """Indices that extend an axis of ``size`` by ``radius`` on both sides with half-sample
    symmetry (scipy's ``mode="reflect"``, numpy's ``"symmetric"``), for any radius."""
    positions = torch.arange(-radius, size + radius, device=device) % (2 * size)
    return torch.where(positions >= size, 2 * size - 1 - positions, positions)


def gaussian_blur(frames: torch.Tensor, sigma: float, truncate: float = TRUNCATE) -> torch.Tensor:
    """Gaussian filter of (B, C, H, W) frames, as ``scipy.ndimage.gaussian_filter(frame,
    sigma, mode="reflect", truncate=truncate)`` does to each frame.

    Parameters
    ----------
    frames : torch.Tensor
        (B, C, H, W) floating-point tensor.
    sigma : float
        Standard deviation in pixels (0 returns the frames unchanged).
    truncate : float
        Radius of the kernel in standard deviations.

    Returns
    -------
    torch.Tensor
        The filtered frames, same shape and type.
    """
    kernel = gaussian_kernel1d(sigma, truncate, dtype=frames.dtype, device=frames.device)
    radius = kernel.numel() // 2
    if radius == 0:
        return frames
    height, width = frames.shape[-2:]
    channels = frames.shape[1]
    rows = _reflect_indices(height, radius, frames.device)
    cols = _reflect_indices(width, radius, frames.device)
    size = kernel.numel()
    horizontal = kernel.view(1, 1, 1, size).expand(channels, 1, 1, size)
    vertical = kernel.view(1, 1, size, 1).expand(channels, 1, size, 1)
    out = F.conv2d(frames.index_select(-1, cols), horizontal, groups=channels)
    return F.conv2d(out.index_select(-2, rows), vertical, groups=channels)


def _mirror(frames: torch.Tensor) -> torch.Tensor:
    """The (2H, 2W) half-sample-symmetric extension, whose periodic repetition is the
    reflect extension of the frame: a circular convolution of it is a reflect-boundary one."""
    wide = torch.cat([frames, frames.flip(-1)], dim=-1)
    return torch.cat([wide, wide.flip(-2)], dim=-2)


def _gaussian_otf(height: int, width: int, sigma: float, dtype, device) -> torch.Tensor:
    """rfft2 of the Gaussian PSF centred at the origin of a periodic (height, width) grid."""
    kernel = gaussian_kernel1d(sigma, TRUNCATE, dtype=torch.float64)
    radius = kernel.numel() // 2
    offsets = torch.arange(-radius, radius + 1)
    spectra = []
    for size, transform in ((height, torch.fft.fft), (width, torch.fft.rfft)):
        wrapped = torch.zeros(size, dtype=torch.float64).index_add_(0, offsets % size, kernel)
        spectra.append(transform(wrapped))
    otf = spectra[0][:, None] * spectra[1][None, :]
    complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    return otf.to(dtype=complex_dtype, device=device)


# --- baselines -----------------------------------------------------------------------------


class Baseline(nn.Module):
    """Common part of the baselines: checks, bicubic enlargement for scale > 1, clipping.

    Subclasses implement :meth:`restore` on frames already on the output grid.
    """

    def __init__(self, scale: int = 1):
        super().__init__()
        self.scale = check_scale(scale)
        self.params: dict = {}

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        check_frames(frames)
        if self.scale != 1:
            frames = F.interpolate(
                frames, scale_factor=self.scale, mode="bicubic", align_corners=False
            ).clamp_(0.0, 1.0)
        return self.restore(frames).clamp(0.0, 1.0)

    def restore(self, frames: torch.Tensor) -> torch.Tensor:
        """Restore (B, 1, H, W) frames on their own grid (identity here)."""
        return frames

    def restore_radius(self) -> int | None:
        """How far (output pixels) :meth:`restore` looks around a pixel; None if the whole
        frame matters."""
        return 0

    @property
    def receptive_field(self) -> int | None:
        """Receptive-field radius in input pixels, or None for a global method.

        The bicubic enlargement (scale > 1) reaches 2 input pixels; the restoration's radius
        on the enlarged grid adds ``ceil(radius / scale)``. With a tile halo at least this
        large, tiled processing equals whole frames (at the image border both see the same
        boundary extension).
        """
        restore = self.restore_radius()
        if restore is None:
            return None
        return math.ceil(restore / self.scale) + (2 if self.scale != 1 else 0)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in {"scale": self.scale, **self.params}.items())


class Interpolation(Baseline):
    """Nearest-neighbour, bilinear or bicubic enlargement by ``scale``."""

    def __init__(self, scale: int = 1, mode: str = "bicubic"):
        super().__init__(scale)
        if mode not in ("nearest", "bilinear", "bicubic"):
            raise ValueError(f"mode must be nearest, bilinear or bicubic, got {mode!r}.")
        self.mode = mode

    @property
    def receptive_field(self) -> int:
        """0 for nearest, 1 for bilinear and 2 for bicubic enlargement (0 at scale 1)."""
        return 0 if self.scale == 1 else {"nearest": 0, "bilinear": 1, "bicubic": 2}[self.mode]

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        check_frames(frames)
        if self.scale == 1:
            return frames
        extra = {} if self.mode == "nearest" else {"align_corners": False}
        out = F.interpolate(frames, scale_factor=self.scale, mode=self.mode, **extra)
        return out.clamp_(0.0, 1.0) if self.mode == "bicubic" else out


class UnsharpMask(Baseline):
    """Unsharp masking: x + amount·(x − G_radius ∗ x), clipped to [0, 1].

    Parameters
    ----------
    scale : int
        Upscaling factor (bicubic enlargement first).
    radius : float
        Standard deviation of the Gaussian blur, in output pixels (> 0).
    amount : float
        Strength of the sharpening (>= 0; 0 returns the input).

    Notes
    -----
    The same as ``skimage.filters.unsharp_mask(frame, radius, amount)`` for frames in [0, 1].
    """

    def __init__(self, scale: int = 1, radius: float = 2.0, amount: float = 1.0):
        super().__init__(scale)
        self.params = {
            "radius": _number(radius, "radius", strict=True),
            "amount": _number(amount, "amount"),
        }

    def restore_radius(self) -> int:
        return _blur_radius(self.params["radius"])

    def restore(self, frames: torch.Tensor) -> torch.Tensor:
        blurred = gaussian_blur(frames, self.params["radius"])
        return frames + self.params["amount"] * (frames - blurred)


class WienerDeconvolution(Baseline):
    """Wiener deconvolution with a Gaussian PSF and a constant noise-to-signal ratio.

    The estimate is, in the Fourier domain, X = conj(K)·Y / (|K|² + balance), with K the
    transfer function of the Gaussian PSF. ``balance`` is the ratio of the noise power to the
    signal power, taken constant over frequencies (MATLAB's ``deconvwnr(I, PSF, NSR)``); it is
    the same as ``skimage.restoration.wiener(image, psf, balance, reg=[[1]])``. Larger values
    trade sharpness for less amplified noise. The frame is extended by half-sample symmetry
    (so the FFT's periodic convolution is the reflect-boundary blur) and the result cropped.

    Parameters
    ----------
    scale : int
        Upscaling factor (bicubic enlargement first).
    sigma : float
        Standard deviation of the Gaussian PSF in output pixels (2, the seeds' setting).
    balance : float
        Noise-to-signal power ratio (> 0; 0.01 by default, i.e. a signal-to-noise power
        ratio of 100).
    """

    def __init__(self, scale: int = 1, sigma: float = 2.0, balance: float = 0.01):
        super().__init__(scale)
        self.params = {
            "sigma": _number(sigma, "sigma"),
            "balance": _number(balance, "balance", strict=True),
        }

    def restore_radius(self) -> None:
        """None: the Fourier-domain filter acts on the whole frame at once. Its impulse
        response decays within a few σ, but tiles would differ from whole frames, so Wiener
        deconvolution always runs on whole frames."""
        return None

    def restore(self, frames: torch.Tensor) -> torch.Tensor:
        height, width = frames.shape[-2:]
        work = frames.double() if frames.dtype == torch.float64 else frames.float()
        mirrored = _mirror(work)
        otf = _gaussian_otf(2 * height, 2 * width, self.params["sigma"], work.dtype, work.device)
        wiener = otf.conj() / (otf.abs().square() + self.params["balance"])
        restored = torch.fft.irfft2(torch.fft.rfft2(mirrored) * wiener, s=mirrored.shape[-2:])
        return restored[..., :height, :width].to(frames.dtype)


class RichardsonLucy(Baseline):
    """Richardson–Lucy deconvolution with a Gaussian PSF.

    Iterates x ← x · K(y / (K x + ε)), with K the reflect-boundary Gaussian blur (self-adjoint,
    so it is also its own transpose), starting from the observed frame or from a constant.

    Parameters
    ----------
    scale : int
        Upscaling factor (bicubic enlargement first).
    sigma : float
        Standard deviation of the Gaussian PSF in output pixels.
    iterations : int
        Number of iterations (more sharpens more, and amplifies noise more).
    init : "image" or float
        Starting estimate: the observed frame (as MATLAB's ``deconvlucy``), or a constant
        (scikit-image starts from 0.5).
    """

    def __init__(self, scale: int = 1, sigma: float = 2.0, iterations: int = 30, init="image"):
        super().__init__(scale)
        if init != "image":
            init = _number(init, "init", strict=True)
        self.params = {
            "sigma": _number(sigma, "sigma"),
            "iterations": _count(iterations, "iterations"),
            "init": init,
        }

    def restore_radius(self) -> int:
        """Each iteration blurs twice."""
        return 2 * self.params["iterations"] * _blur_radius(self.params["sigma"])

    def restore(self, frames: torch.Tensor) -> torch.Tensor:
        sigma = self.params["sigma"]
        eps = 1e-12 if frames.dtype == torch.float64 else 1e-6
        observed = frames.clamp_min(0.0)
        if self.params["init"] == "image":
            estimate = observed.clone()
        else:
            estimate = torch.full_like(observed, self.params["init"])
        for _ in range(self.params["iterations"]):
            ratio = observed / (gaussian_blur(estimate, sigma) + eps)
            estimate = estimate * gaussian_blur(ratio, sigma)
        return estimate


def _gradient(x: torch.Tensor) -> torch.Tensor:
    """Forward differences along rows and columns, 0 at the last row/column (Neumann):
    (B, 1, H, W) → (B, 2, H, W)."""
    down = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    right = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1, 0, 0))
    return torch.cat([down, right], dim=1)


def _gradient_adjoint(p: torch.Tensor) -> torch.Tensor:
    """The transpose of :func:`_gradient` (minus the divergence): (B, 2, H, W) → (B, 1, H, W)."""
    down, right = p[:, :1, :-1, :], p[:, 1:, :, :-1]
    return (
        F.pad(down, (0, 0, 1, 0))
        - F.pad(down, (0, 0, 0, 1))
        + F.pad(right, (1, 0, 0, 0))
        - F.pad(right, (0, 1, 0, 0))
    )


class TVDeconvolution(Baseline):
    """Total-variation-regularised deconvolution with a Gaussian PSF.

    It stands in for the seeds' variational Bayesian super-resolution (Villena et al. 2013),
    which also restores with a TV image prior, but estimates the weights of its terms from the
    data; here the weight ``lam`` is fixed. The estimate solves exactly::

        minimise over x in [0, 1]^N:   ½‖K x − y‖² + lam · Σ_pixels ‖(∇x)_pixel‖₂

    with K the reflect-boundary Gaussian blur, and ∇ forward differences with a zero
    difference past the last row and column (isotropic TV, no smoothing). It runs a fixed
    number of iterations of the Chambolle–Pock primal-dual algorithm, with the operator
    [K; ∇] (‖K‖ ≤ 1, ‖∇‖² ≤ 8, so steps τ = σ = 0.99/3), starting from x = y. With
    ``sigma=0`` (K the identity) it is the ROF denoising that
    ``skimage.restoration.denoise_tv_chambolle`` solves.

    Parameters
    ----------
    scale : int
        Upscaling factor (bicubic enlargement first).
    sigma : float
        Standard deviation of the Gaussian PSF in output pixels (0: denoising only).
    lam : float
        Weight of the total variation (>= 0; larger is smoother).
    iterations : int
        Number of primal-dual iterations.
    """

    def __init__(
        self, scale: int = 1, sigma: float = 2.0, lam: float = 0.002, iterations: int = 200
    ):
        super().__init__(scale)
        self.params = {
            "sigma": _number(sigma, "sigma"),
            "lam": _number(lam, "lam"),
            "iterations": _count(iterations, "iterations"),
        }

    def restore_radius(self) -> int:
        """Each iteration blurs twice (data term) or takes two differences (TV term)."""
        return self.params["iterations"] * max(2 * _blur_radius(self.params["sigma"]), 2)

    def restore(self, frames: torch.Tensor) -> torch.Tensor:
        sigma, lam = self.params["sigma"], self.params["lam"]
        step = 0.99 / 3.0  # 1 / sqrt(‖K‖² + ‖∇‖²) with ‖K‖ <= 1 and ‖∇‖² <= 8
        observed = frames
        x = frames.clone()
        x_bar = x
        dual_data = torch.zeros_like(frames)
        dual_tv = torch.zeros_like(_gradient(frames))
        for _ in range(self.params["iterations"]):
            dual_data = (dual_data + step * (gaussian_blur(x_bar, sigma) - observed)) / (1 + step)
            # Projection onto the pixel-wise balls of radius lam (the dual of lam·‖·‖_{2,1}).
            dual_tv = dual_tv + step * _gradient(x_bar)
            if lam > 0:
                norm = dual_tv.square().sum(dim=1, keepdim=True).sqrt_()
                dual_tv = dual_tv / torch.clamp(norm / lam, min=1.0)
            else:
                dual_tv = torch.zeros_like(dual_tv)
            x_new = x - step * (gaussian_blur(dual_data, sigma) + _gradient_adjoint(dual_tv))
            x_new = x_new.clamp_(0.0, 1.0)
            x_bar = 2 * x_new - x
            x = x_new
        return x


_BASELINES = {
    "nearest": (Interpolation, {"mode": "nearest"}),
    "bilinear": (Interpolation, {"mode": "bilinear"}),
    "bicubic": (Interpolation, {"mode": "bicubic"}),
    "unsharp": (UnsharpMask, {}),
    "wiener": (WienerDeconvolution, {}),
    "richardson_lucy": (RichardsonLucy, {}),
    "tv": (TVDeconvolution, {}),
}


def available() -> list[str]:
    """Names of the baselines, sorted."""
    return sorted(_BASELINES)


def default_params(name: str) -> dict:
    """The tunable parameters of baseline ``name`` with their defaults (without ``scale``)."""
    return dict(create(name).params)


def create(name: str, scale: int = 1, **params) -> Baseline:
    """Build the baseline called ``name``.

    Parameters
    ----------
    name : str
        One of :func:`available`.
    scale : int
        Upscaling factor: 1, 2, 4 or 8.
    **params
        That baseline's parameters (see :func:`default_params` and its class).

    Returns
    -------
    Baseline
        A module mapping (B, 1, H, W) frames in [0, 1] to (B, 1, scale·H, scale·W); its
        ``name`` attribute holds ``name``.

    Raises
    ------
    ValueError
        For an unknown name or parameter, or a bad value.
    """
    if not isinstance(name, str) or name not in _BASELINES:
        raise ValueError(f"unknown baseline {name!r}; available: {', '.join(available())}.")
    cls, fixed = _BASELINES[name]
    accepted = [p for p in inspect.signature(cls).parameters if p not in fixed and p != "scale"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        takes = ", ".join(["scale", *accepted])
        raise ValueError(f"baseline {name!r} does not take {', '.join(unknown)}; it takes {takes}.")
    baseline = cls(scale=scale, **fixed, **params)
    baseline.name = name
    return baseline


def tune_unsharp(
    lr_frames,
    hr_frames,
    scale: int = 1,
    radii=(0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0),
    amounts=(0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0),
    batch_size: int = 16,
    device="cpu",
    return_scores: bool = False,
):
    """Grid-search the unsharp-masking parameters that maximise the mean SSIM on a training set.

    Parameters
    ----------
    lr_frames : array_like
        (T, h, w) input frames (or one (h, w) frame), values in [0, 1].
    hr_frames : array_like
        (T, scale·h, scale·w) targets, values in [0, 1].
    scale : int
        Upscaling factor of the baseline (bicubic enlargement first).
    radii, amounts : sequences of float
        The grid. Amount 0 (no sharpening) is in the default grid, so the result is never worse
        on the training set than bicubic enlargement alone.
    batch_size : int
        Frames processed together.
    device : str or torch.device
        Where to compute: ``"cpu"`` (default), ``"auto"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    return_scores : bool
        Also return the (len(radii), len(amounts)) array of mean SSIM values.

    Returns
    -------
    dict or (dict, numpy.ndarray)
        ``{"radius": r, "amount": a}``, ready for ``create("unsharp", scale=scale, **params)``,
        and the scores if asked.

    Raises
    ------
    ValueError
        For frames that are not grey images in matching shapes, or an empty grid.
    """
    lr = as_grey_float(lr_frames, name="lr_frames")
    hr = as_grey_float(hr_frames, name="hr_frames")
    lr = lr[None] if lr.ndim == 2 else lr
    hr = hr[None] if hr.ndim == 2 else hr
    scale = check_scale(scale)
    if len(lr) != len(hr) or hr.shape[1:] != (lr.shape[1] * scale, lr.shape[2] * scale):
        raise ValueError(
            f"hr_frames must be the lr_frames enlarged {scale}×, frame for frame: got "
            f"{lr.shape} and {hr.shape}."
        )
    radii = [_number(r, "radius", strict=True) for r in radii]
    amounts = [_number(a, "amount") for a in amounts]
    if not radii or not amounts:
        raise ValueError("radii and amounts must each hold at least one value.")
    batch_size = _count(batch_size, "batch_size")
    device = select_device(device)
    totals = np.zeros((len(radii), len(amounts)))
    enlarge = Interpolation(scale, "bicubic")
    with torch.inference_mode():
        for start in range(0, len(lr), batch_size):
            inputs = enlarge(torch.from_numpy(lr[start : start + batch_size, None]).to(device))
            targets = torch.from_numpy(hr[start : start + batch_size, None]).to(device)
            for i, radius in enumerate(radii):
                detail = inputs - gaussian_blur(inputs, radius)
                for j, amount in enumerate(amounts):
                    sharpened = (inputs + amount * detail).clamp_(0.0, 1.0)
                    totals[i, j] += ssim(sharpened, targets).sum().item()
    scores = totals / len(lr)
    best_i, best_j = np.unravel_index(np.argmax(scores), scores.shape)
    params = {"radius": radii[best_i], "amount": amounts[best_j]}
    return (params, scores) if return_scores else params
