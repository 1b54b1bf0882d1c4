"""DenseNet super-resolution for confocal laser endomicroscopy (Izadi et al. 2018, seed 002).

What the paper states:

- low-level features: two 3×3 convs with ReLU, 64 then 128 channels;
- high-level features: 12 dense blocks "stacked in a feed-forward fashion", each of m=8 layers
  with growth rate k=16; layer i gets the concatenation of the outputs of all preceding layers,
  L_i = ReLU(ψ_i(L_1 ++ … ++ L_{i−1})), and each block "receives and produces 128 feature maps"
  (m·k = 128);
- upsampling: successive ×2 sub-pixel blocks, each "a single convolutional layer with 3×3 kernel
  size and ReLU" (Shi et al.'s sub-pixel convolution: F → 4F channels, then PixelShuffle(2));
- integration: a 3×3 conv to one channel, then a sigmoid.

What it leaves open, and how it is read here:

- The block's input takes part in the concatenation (it is L_0), since otherwise the first
  layer would have no input: layer i of a block sees 128 + 16·(i − 1) channels.
- A block's output is the concatenation of its 8 new layers (8·16 = 128 maps), not including
  its input, which is what makes "receives and produces 128 feature maps" hold.
- Blocks are chained one after the other: there is no concatenation across blocks (SRDenseNet's
  "all" skip connections) and no 1×1 bottleneck, since the paper names neither.
- Each dense layer is a 3×3 conv with bias followed by ReLU (Eq. 1), with no batch
  normalisation (the paper names none, and SR networks usually drop it).
- The sub-pixel conv keeps the width: 128 → 4·128 channels, ReLU, PixelShuffle(2) back to 128.
- At ×1 there are no upsampling blocks.

The parameter count follows (for the defaults, at ×1):
conv 1→64: 1·64·9 + 64 = 640; conv 64→128: 64·128·9 + 128 = 73,856; one dense block:
(8·128 + 16·(0+1+…+7))·16·9 + 8·16 = 1472·144 + 128 = 212,096, times 12 = 2,545,152;
integration 128·9 + 1 = 1,153; total 2,620,801. Each ×2 block adds 128·512·9 + 512 = 590,336.

The dense block is computed by accumulation rather than concatenation (see
:meth:`DenseBlock.forward`): the same sums in another order, about twice as fast on a CPU
(``docs/models.md``), with the same parameters as the plain definition.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_pclesr.models._common import (
    check_frames,
    check_positive_int,
    check_scale,
    receptive_field_radius,
    upsampling_steps,
)

__all__ = ["DenseBlock", "DenseNetSR"]


class DenseBlock(nn.Module):
    """``layers`` densely connected 3×3 conv + ReLU layers of ``growth`` maps each.

    Input: ``in_channels`` maps; output: the ``layers · growth`` new maps.
    """

    def __init__(self, in_channels: int, layers: int, growth: int):
        super().__init__()
        self.in_channels = in_channels
        self.growth = growth
        self.layers = nn.ModuleList(
            nn.Conv2d(in_channels + i * growth, growth, 3, padding=1) for i in range(layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Layer i's input is the concatenation [x, L_1, ..., L_{i-1}], so its pre-activation
        # is a sum of one convolution per part. As soon as a part is known, its contribution
        # to every later layer is added with ONE convolution that has many output channels,
        # which the CPU runs far better than 8 convolutions to 16 channels; no feature stack
        # is ever copied. The block's output [L_1, ..., L_m] is then ReLU(accumulator).
        growth, first = self.growth, self.in_channels
        weights = [conv.weight for conv in self.layers]
        bias = torch.cat([conv.bias for conv in self.layers])
        from_input = torch.cat([w[:, :first] for w in weights])
        accumulator = F.conv2d(x, from_input, bias, padding=1)
        for j in range(1, len(weights)):
            start = first + (j - 1) * growth
            layer_output = F.relu(accumulator[:, (j - 1) * growth : j * growth])
            to_later = torch.cat([w[:, start : start + growth] for w in weights[j:]])
            accumulator[:, j * growth :] += F.conv2d(layer_output, to_later, padding=1)
        return F.relu_(accumulator)


class DenseNetSR(nn.Module):
    """Izadi et al.'s DenseNet for CLE super-resolution, for one-channel frames.

    Parameters
    ----------
    scale : int
        Upscaling factor: 1 (same-grid restoration; no upsampling block), 2, 4 or 8.
    low_features : int
        Channels of the first 3×3 conv (64).
    blocks : int
        Number of dense blocks (12).
    layers : int
        Layers per dense block, m (8).
    growth : int
        Growth rate k, the maps each dense layer adds (16). The second conv, every block and
        the upsampling blocks are ``layers · growth`` wide (128).

    Notes
    -----
    Input (B, 1, H, W) → output (B, 1, scale·H, scale·W) in (0, 1) (sigmoid output). The
    parameters are kept in the channels-last memory format, which the convolutions prefer.
    """

    def __init__(
        self,
        scale: int = 1,
        low_features: int = 64,
        blocks: int = 12,
        layers: int = 8,
        growth: int = 16,
    ):
        super().__init__()
        self.scale = check_scale(scale)
        low_features = check_positive_int(low_features, "low_features")
        blocks = check_positive_int(blocks, "blocks")
        layers = check_positive_int(layers, "layers")
        growth = check_positive_int(growth, "growth")
        self.hparams = {
            "scale": scale,
            "low_features": low_features,
            "blocks": blocks,
            "layers": layers,
            "growth": growth,
        }
        width = layers * growth
        self.low_level = nn.Sequential(
            nn.Conv2d(1, low_features, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(low_features, width, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.dense = nn.Sequential(*(DenseBlock(width, layers, growth) for _ in range(blocks)))
        upsampler = []
        for _ in range(upsampling_steps(scale)):
            upsampler += [
                nn.Conv2d(width, 4 * width, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.PixelShuffle(2),
            ]
        self.upsampler = nn.Sequential(*upsampler)
        self.integration = nn.Conv2d(width, 1, 3, padding=1)
        self.to(memory_format=torch.channels_last)

    #: Receptive-field radius in input pixels (2 + blocks·layers + 1 at ×1: 99 by default).
    receptive_field = property(receptive_field_radius)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_frames(x)
        x = x.contiguous(memory_format=torch.channels_last)
        features = self.upsampler(self.dense(self.low_level(x)))
        return torch.sigmoid(self.integration(features))
