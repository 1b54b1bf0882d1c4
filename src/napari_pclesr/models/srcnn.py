"""SRCNN (Dong, Loy, He and Tang, ECCV 2014 / TPAMI 2016) for one-channel frames.

The first deep SR network, and one of the learned baselines of seed 002's Table 1. SRCNN works
on the bicubic-interpolated image: the input is enlarged ``scale`` times with bicubic
interpolation, then three convolutions restore it:

1. patch extraction: ``first_kernel`` × ``first_kernel`` conv 1 → n1, ReLU (9, 64);
2. non-linear mapping: ``mid_kernel`` × ``mid_kernel`` conv n1 → n2, ReLU (1, 32);
3. reconstruction: ``last_kernel`` × ``last_kernel`` conv n2 → 1 (5), no activation.

The defaults are the paper's base network "9-1-5": 9·9·64 + 64 + 64·32 + 32 + 32·5·5 + 1 =
8,129 parameters for one channel at every scale (the upscaling has no weights). Dong et al.
report "9-5-5" (``mid_kernel=5``, 57,281 parameters) as slightly better. The original pads
nothing and so shrinks the image; here every convolution is zero-padded to keep the size,
so the network maps (B, 1, H, W) to (B, 1, scale·H, scale·W) like every network of the
registry.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from napari_pclesr.models._common import (
    check_frames,
    check_positive_int,
    check_scale,
    receptive_field_radius,
)

__all__ = ["SRCNN"]


class SRCNN(nn.Module):
    """Super-resolution CNN on the bicubic-enlarged input.

    Parameters
    ----------
    scale : int
        Upscaling factor: 1 (same-grid restoration, no interpolation), 2, 4 or 8.
    features : int
        n1, the channels of the patch-extraction layer (64).
    mid_features : int
        n2, the channels of the mapping layer (32).
    first_kernel, mid_kernel, last_kernel : int
        Odd kernel sizes of the three layers (9, 1, 5).

    Notes
    -----
    Input (B, 1, H, W) → output (B, 1, scale·H, scale·W).
    """

    def __init__(
        self,
        scale: int = 1,
        features: int = 64,
        mid_features: int = 32,
        first_kernel: int = 9,
        mid_kernel: int = 1,
        last_kernel: int = 5,
    ):
        super().__init__()
        self.scale = check_scale(scale)
        n1 = check_positive_int(features, "features")
        n2 = check_positive_int(mid_features, "mid_features")
        kernels = {"first_kernel": first_kernel, "mid_kernel": mid_kernel}
        kernels["last_kernel"] = last_kernel
        for name, size in kernels.items():
            if check_positive_int(size, name) % 2 == 0:
                raise ValueError(f"{name} must be odd (the output keeps its size), got {size}.")
        self.hparams = {"scale": scale, "features": n1, "mid_features": n2, **kernels}
        self.upscale = (
            nn.Upsample(scale_factor=scale, mode="bicubic", align_corners=False)
            if scale > 1
            else nn.Identity()
        )
        self.body = nn.Sequential(
            nn.Conv2d(1, n1, first_kernel, padding=first_kernel // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(n1, n2, mid_kernel, padding=mid_kernel // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(n2, 1, last_kernel, padding=last_kernel // 2),
        )
        self._initialise()

    def _initialise(self) -> None:
        # He initialisation for the ReLU layers; the last layer starts small so that training
        # begins near a flat output and is not thrown off by large initial errors.
        for conv in self.body:
            if isinstance(conv, nn.Conv2d):
                fan_in = conv.in_channels * conv.weight[0, 0].numel()
                nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / fan_in))
                nn.init.zeros_(conv.bias)
        nn.init.normal_(self.body[-1].weight, 0.0, 1e-3)

    #: Receptive-field radius in input pixels (4 + 0 + 2 = 6 at ×1 for 9-1-5).
    receptive_field = property(receptive_field_radius)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_frames(x)
        return self.body(self.upscale(x))
