"""The model registry: build a network by name, with checked hyper-parameters.

A checkpoint stores the registry name and ``model.hparams`` (every hyper-parameter, the scale
included), and rebuilds the network with ``create(name, **hparams)``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from torch import nn

from napari_pclesr.models.densenet_sr import DenseNetSR
from napari_pclesr.models.discriminator import Discriminator, check_discriminator_hparams
from napari_pclesr.models.edsr import EDSR
from napari_pclesr.models.fsrcnn import FSRCNN
from napari_pclesr.models.srgan import SRGANGenerator

__all__ = [
    "ModelSpec",
    "available",
    "count_parameters",
    "create",
    "create_discriminator",
    "default_hparams",
    "register",
    "spec",
]


@dataclass(frozen=True)
class ModelSpec:
    """A registered network.

    Attributes
    ----------
    name : str
        Registry name.
    builder : callable
        Called as ``builder(scale=scale, **hparams)``; returns the ``nn.Module``.
    defaults : dict
        Every hyper-parameter other than ``scale``, with its default value.
    summary : str
        One line for listings.
    """

    name: str
    builder: type[nn.Module]
    defaults: dict = field(default_factory=dict)
    summary: str = ""


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, builder, defaults: dict, summary: str) -> None:
    """Add a network to the registry (for new architectures; names must be new)."""
    if name in _REGISTRY:
        raise ValueError(f"a model named {name!r} is already registered.")
    _REGISTRY[name] = ModelSpec(name, builder, dict(defaults), summary)


register(
    "fsrcnn",
    FSRCNN,
    {"features": 56, "shrink_features": 12, "mapping_layers": 4},
    "FSRCNN (Dong et al. 2016), d=56, s=12, m=4, PReLU",
)
register(
    "edsr",
    EDSR,
    {"blocks": 16, "features": 64, "res_scale": 1.0, "mean": 0.5},
    "EDSR baseline (Lim et al. 2017): 16 residual blocks, 64 features, learnable mean shift",
)
register(
    "edsr_large",
    EDSR,
    {"blocks": 32, "features": 256, "res_scale": 0.1, "mean": 0.5},
    "EDSR large: 32 residual blocks, 256 features, residual scaling 0.1",
)
register(
    "densenet_sr",
    DenseNetSR,
    {"low_features": 64, "blocks": 12, "layers": 8, "growth": 16},
    "DenseNet SR for CLE (Izadi et al. 2018): 12 dense blocks of 8 layers, growth 16",
)
register(
    "srgan",
    SRGANGenerator,
    {"blocks": 16, "features": 64},
    "SRGAN generator / SRResNet (Ledig et al. 2017): 16 residual blocks with BN, PReLU",
)


def available() -> list[str]:
    """Names of the registered networks, sorted."""
    return sorted(_REGISTRY)


def spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered as ``name``; ``ValueError`` for unknown names."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available models: {', '.join(available())}.")
    return _REGISTRY[name]


def default_hparams(name: str) -> dict:
    """The default hyper-parameters of model ``name`` (without ``scale``), as a new dict."""
    return copy.deepcopy(spec(name).defaults)


def create(name: str, scale: int = 1, **hparams) -> nn.Module:
    """Build the network registered as ``name``.

    Parameters
    ----------
    name : str
        One of :func:`available`.
    scale : int
        Upscaling factor: 1 (same-grid restoration), 2, 4 or 8.
    **hparams
        Hyper-parameters that replace the defaults (see :func:`default_hparams`).

    Returns
    -------
    torch.nn.Module
        Maps (B, 1, H, W) float frames to (B, 1, scale·H, scale·W). It has the attributes
        ``scale``, ``hparams`` (all hyper-parameters with ``scale``, enough to rebuild it) and
        ``arch`` (the registry name).

    Raises
    ------
    ValueError
        For an unknown name or hyper-parameter, or a bad value (e.g. channels < 1, scale 3).
    """
    model_spec = spec(name)
    unknown = sorted(set(hparams) - set(model_spec.defaults))
    if unknown:
        accepted = ", ".join(["scale", *model_spec.defaults])
        raise ValueError(
            f"unknown hyper-parameter(s) {', '.join(unknown)} for model {name!r}; "
            f"it accepts: {accepted}."
        )
    try:
        model = model_spec.builder(scale=scale, **{**model_spec.defaults, **hparams})
    except ValueError as exc:
        raise ValueError(f"model {name!r}: {exc}") from None
    model.arch = name
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """The number of parameter values in ``model`` (only those with ``requires_grad`` if
    ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def create_discriminator(**hparams) -> nn.Module:
    """Build the adversarial discriminator (see :mod:`napari_pclesr.models.discriminator`).

    It is not in :func:`available`, which lists super-resolution networks only.

    Parameters
    ----------
    **hparams
        ``features`` (64), ``dense`` (1024), ``pool`` (4), ``spectral_norm`` (False).

    Raises
    ------
    ValueError
        For an unknown hyper-parameter or a bad value.
    """
    return Discriminator(**check_discriminator_hparams(hparams))
