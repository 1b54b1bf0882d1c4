"""EDSR (Lim et al., CVPRW 2017) for one-channel pCLE frames.

Structure, for ``features`` = F and ``blocks`` = B:

- subtract a learnable scalar mean μ from the input;
- head: 3×3 conv 1→F;
- body: B residual blocks (3×3 conv, ReLU, 3×3 conv, times ``res_scale``, plus the block's
  input), no batch normalisation, then a 3×3 conv F→F, plus the head's output (global skip);
- upsampler (scale > 1): log2(scale) × (3×3 conv F→4F, PixelShuffle(2));
- tail: 3×3 conv F→1 without bias, then add μ back.

The baseline (B=16, F=64, res_scale 1) has 1,219,841 parameters at ×1:
head 1·64·9 + 64 = 640; 16 blocks × 2 × (64·64·9 + 64) = 1,181,696; body conv 36,928;
tail 64·9 = 576; μ = 1.

The reference implementations (sanghyun-son/EDSR-PyTorch, torchSR) hard-code a fixed RGB mean
shift, which is not a trainable parameter, and give the tail conv a bias; with one channel they
count the same 1,219,841 trainable parameters. Here the mean is learned (initialised at
``mean``, 0.5 for frames in [0, 1]) and the tail bias is dropped, because a constant added to the
output is exactly what +μ already provides: the network represents the same functions with the
same number of trainable parameters. The "large" EDSR (B=32, F=256, res_scale 0.1) is
registered as ``edsr_large``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from napari_pclesr.models._common import (
    check_frames,
    check_positive_float,
    check_positive_int,
    check_scale,
    receptive_field_radius,
    upsampling_steps,
)

__all__ = ["EDSR", "ResidualBlock"]


def _conv3x3(in_channels: int, out_channels: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)


class ResidualBlock(nn.Module):
    """conv–ReLU–conv, scaled by ``res_scale``, plus the input (no batch normalisation)."""

    def __init__(self, features: int, res_scale: float = 1.0):
        super().__init__()
        self.conv1 = _conv3x3(features, features)
        self.conv2 = _conv3x3(features, features)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The in-place operations act on fresh conv outputs that no backward pass needs, so
        # they save memory traffic and stay correct under autograd.
        residual = self.conv2(F.relu_(self.conv1(x)))
        if self.res_scale != 1.0:
            residual.mul_(self.res_scale)
        return residual.add_(x)


class EDSR(nn.Module):
    """Enhanced deep residual network for one-channel frames.

    Parameters
    ----------
    scale : int
        Upscaling factor: 1 (same-grid restoration), 2, 4 or 8 (×8 is three ×2 steps).
    blocks : int
        Number of residual blocks (16 for the baseline, 32 for the large EDSR).
    features : int
        Channels of the body (64 for the baseline, 256 for the large EDSR).
    res_scale : float
        Factor on each block's residual (1 for the baseline, 0.1 for the large EDSR).
    mean : float
        Initial value of the learnable mean μ subtracted from the input and added back.

    Notes
    -----
    Input (B, 1, H, W) → output (B, 1, scale·H, scale·W). The parameters are kept in the
    channels-last memory format, which the CPU and GPU convolutions prefer.
    """

    def __init__(
        self,
        scale: int = 1,
        blocks: int = 16,
        features: int = 64,
        res_scale: float = 1.0,
        mean: float = 0.5,
    ):
        super().__init__()
        self.scale = check_scale(scale)
        blocks = check_positive_int(blocks, "blocks")
        features = check_positive_int(features, "features")
        res_scale = check_positive_float(res_scale, "res_scale")
        if isinstance(mean, bool) or not isinstance(mean, int | float) or not math.isfinite(mean):
            raise ValueError(f"mean must be a finite number, got {mean!r}.")
        self.hparams = {
            "scale": scale,
            "blocks": blocks,
            "features": features,
            "res_scale": res_scale,
            "mean": float(mean),
        }
        self.mean = nn.Parameter(torch.tensor(float(mean)))
        self.head = _conv3x3(1, features)
        self.body = nn.Sequential(*(ResidualBlock(features, res_scale) for _ in range(blocks)))
        self.body_tail = _conv3x3(features, features)
        upsampler = []
        for _ in range(upsampling_steps(scale)):
            upsampler += [_conv3x3(features, 4 * features), nn.PixelShuffle(2)]
        self.upsampler = nn.Sequential(*upsampler)
        self.tail = _conv3x3(features, 1, bias=False)
        self.to(memory_format=torch.channels_last)

    #: Receptive-field radius in input pixels (2B + 3 at ×1: 35 for the baseline).
    receptive_field = property(receptive_field_radius)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_frames(x)
        x = (x - self.mean).contiguous(memory_format=torch.channels_last)
        head = self.head(x)
        features = self.body_tail(self.body(head)).add_(head)
        return self.tail(self.upsampler(features)).add_(self.mean)
