"""The SRGAN generator (SRResNet, Ledig et al., CVPR 2017) for one-channel pCLE frames.

Structure, for ``features`` = F and ``blocks`` = B:

- head: 9×9 conv 1→F, PReLU;
- body: B residual blocks [3×3 conv, BN, PReLU, 3×3 conv, BN] plus the block's input, then a
  3×3 conv and BN, plus the head's output (global skip);
- upsampler (scale > 1): log2(scale) × (3×3 conv F→4F, PixelShuffle(2), PReLU); none at ×1;
- tail: 9×9 conv F→1.

Convolutions followed by batch normalisation have no bias (BN's shift replaces it) and every
PReLU has one slope, as in Ledig et al.'s Torch/TensorLayer code. With B=16, F=64 this gives
**1,231,186 parameters at ×1**: head 9·9·64 + 64 + 1 = 5,249; 16 blocks × (2 × 3·3·64·64 +
2 × 128 + 1) = 1,183,760; body conv + BN 36,864 + 128 = 36,992; tail 9·9·64 + 1 = 5,185.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from napari_pclesr.models._common import (
    check_frames,
    check_positive_int,
    check_scale,
    upsampling_steps,
)

__all__ = ["SRGANGenerator", "SRGANResidualBlock"]


def _conv_bn(features: int) -> list[nn.Module]:
    return [nn.Conv2d(features, features, 3, padding=1, bias=False), nn.BatchNorm2d(features)]


class SRGANResidualBlock(nn.Module):
    """conv–BN–PReLU–conv–BN plus the input."""

    def __init__(self, features: int):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(features), nn.PReLU(), *_conv_bn(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class SRGANGenerator(nn.Module):
    """SRResNet, the generator of SRGAN, for one-channel frames.

    Parameters
    ----------
    scale : int
        Upscaling factor: 1 (same-grid restoration), 2, 4 or 8.
    blocks : int
        Number of residual blocks (16 in SRGAN).
    features : int
        Channels of the body (64 in SRGAN).

    Notes
    -----
    Input (B, 1, H, W) → output (B, 1, scale·H, scale·W). Batch normalisation makes the output
    of one frame depend on the others of the batch in training mode; in eval mode (inference)
    frames are independent.
    """

    def __init__(self, scale: int = 1, blocks: int = 16, features: int = 64):
        super().__init__()
        self.scale = check_scale(scale)
        blocks = check_positive_int(blocks, "blocks")
        features = check_positive_int(features, "features")
        self.hparams = {"scale": scale, "blocks": blocks, "features": features}
        self.head = nn.Sequential(nn.Conv2d(1, features, 9, padding=4), nn.PReLU())
        self.body = nn.Sequential(*(SRGANResidualBlock(features) for _ in range(blocks)))
        self.body_tail = nn.Sequential(*_conv_bn(features))
        upsampler = []
        for _ in range(upsampling_steps(scale)):
            upsampler += [
                nn.Conv2d(features, 4 * features, 3, padding=1),
                nn.PixelShuffle(2),
                nn.PReLU(),
            ]
        self.upsampler = nn.Sequential(*upsampler)
        self.tail = nn.Conv2d(features, 1, 9, padding=4)
        self.to(memory_format=torch.channels_last)

    @property
    def receptive_field(self) -> int:
        """Radius of the receptive field in input pixels, from the layers (rounded up).

        Each k×k convolution adds (k − 1)/2 pixels of its own grid, i.e. (k − 1)/(2·r) input
        pixels for a convolution that runs at r times the input resolution.
        """
        radius, resolution = 0.0, 1
        for module in (self.head, self.body, self.body_tail, self.upsampler, self.tail):
            for layer in module.modules():
                if isinstance(layer, nn.Conv2d):
                    reach = (layer.kernel_size[0] - 1) // 2 * layer.dilation[0]
                    radius += reach / resolution
                elif isinstance(layer, nn.PixelShuffle):
                    resolution *= layer.upscale_factor
        return math.ceil(radius)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_frames(x)
        x = x.contiguous(memory_format=torch.channels_last)
        head = self.head(x)
        features = self.body_tail(self.body(head)) + head
        return self.tail(self.upsampler(features))
