"""The SRGAN discriminator (Ledig et al., CVPR 2017), for patches of any size.

Eight 3×3 convolutions, with LeakyReLU (slope 0.2) after each and batch normalisation from the
second on:

=====  =========  ======  ====
conv   channels   stride  BN
=====  =========  ======  ====
1      1 → F      1       no
2      F → F      2       yes
3      F → 2F     1       yes
4      2F → 2F    2       yes
5      2F → 4F    1       yes
6      4F → 4F    2       yes
7      4F → 8F    1       yes
8      8F → 8F    2       yes
=====  =========  ======  ====

with F = 64 (so 64 → 512 channels). This is Ledig et al.'s Fig. 4 (k3n64s1, k3n64s2,
k3n128s1, …, k3n512s2): the stride-2 convolution is the one that *keeps* the width, and the
next one doubles it. Four stride-2 convolutions reduce a 96 × 96 patch to 6 × 6 and a 64 × 64
patch to 4 × 4. Ledig et al. then flatten into Dense 1024, which fixes the input size; here an
adaptive average pooling to ``pool`` × ``pool`` (4) comes first, so that any patch size is
accepted (for 64 × 64 patches the pooling is the identity, i.e. exactly Ledig's head), then
Dense 1024, LeakyReLU 0.2 and Dense 1. The output is a logit (no sigmoid): the losses use
``binary_cross_entropy_with_logits``, which is exact where a sigmoid followed by a log is not.

``spectral_norm=True`` gives the spectrally normalised variant (Miyato et al. 2018): every
convolution and dense layer is wrapped in spectral normalisation and batch normalisation is
dropped, as in SN-GAN discriminators (both normalise the layer scale; combining them hinders
the Lipschitz bound that spectral normalisation provides).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from napari_pclesr.models._common import check_frames, check_positive_int

__all__ = ["DEFAULT_DISCRIMINATOR_HPARAMS", "Discriminator", "check_discriminator_hparams"]

#: Hyper-parameters of :class:`Discriminator` (Ledig et al.'s network).
DEFAULT_DISCRIMINATOR_HPARAMS = {"features": 64, "dense": 1024, "pool": 4, "spectral_norm": False}
_NEGATIVE_SLOPE = 0.2


def check_discriminator_hparams(hparams: dict) -> dict:
    """All hyper-parameters (defaults filled in), checked; ``ValueError`` names a bad one."""
    unknown = sorted(set(hparams) - set(DEFAULT_DISCRIMINATOR_HPARAMS))
    if unknown:
        raise ValueError(
            f"unknown discriminator hyper-parameter(s) {', '.join(unknown)}; it accepts: "
            f"{', '.join(DEFAULT_DISCRIMINATOR_HPARAMS)}."
        )
    values = {**DEFAULT_DISCRIMINATOR_HPARAMS, **hparams}
    for name in ("features", "dense", "pool"):
        check_positive_int(values[name], f"discriminator {name}")
    if not isinstance(values["spectral_norm"], bool):
        raise ValueError(
            f"discriminator spectral_norm must be True or False, got {values['spectral_norm']!r}."
        )
    return values


class Discriminator(nn.Module):
    """Patch classifier: (B, 1, H, W) images → (B,) logits of "real" (target domain).

    Parameters
    ----------
    features : int
        Channels of the first convolution (64); they double every second convolution up to
        8 × ``features``.
    dense : int
        Units of the hidden dense layer (1024).
    pool : int
        Side of the adaptive average pooling before the dense layers (4).
    spectral_norm : bool
        Spectral normalisation on every layer instead of batch normalisation.
    """

    def __init__(
        self,
        features: int = 64,
        dense: int = 1024,
        pool: int = 4,
        spectral_norm: bool = False,
    ):
        super().__init__()
        self.hparams = check_discriminator_hparams(
            {"features": features, "dense": dense, "pool": pool, "spectral_norm": spectral_norm}
        )
        wrap = _spectral_norm if spectral_norm else (lambda layer: layer)
        layers: list[nn.Module] = []
        channels_in = 1
        for index in range(8):
            channels_out = features * 2 ** (index // 2)
            stride = 2 if index % 2 else 1
            batch_norm = index > 0 and not spectral_norm
            layers.append(
                wrap(nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=not batch_norm))
            )
            if batch_norm:
                layers.append(nn.BatchNorm2d(channels_out))
            layers.append(nn.LeakyReLU(_NEGATIVE_SLOPE, inplace=True))
            channels_in = channels_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            wrap(nn.Linear(channels_in * pool * pool, dense)),
            nn.LeakyReLU(_NEGATIVE_SLOPE, inplace=True),
            wrap(nn.Linear(dense, 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_frames(x)
        return self.classifier(self.pool(self.features(x))).squeeze(1)
