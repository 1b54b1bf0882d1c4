"""FSRCNN (Dong, Loy and Tang, ECCV 2016) for one-channel pCLE frames.

Layers, for ``features`` = d, ``shrink_features`` = s and ``mapping_layers`` = m:

1. feature extraction: 5×5 conv 1→d, PReLU;
2. shrinking: 1×1 conv d→s, PReLU;
3. mapping: m × (3×3 conv s→s, PReLU);
4. expanding: 1×1 conv s→d, PReLU;
5. deconvolution: 9×9 transposed conv d→1 with stride ``scale`` (padding 4, output padding
   ``scale − 1``).

With d=56, s=12, m=4 the convolutions hold 12,464 weights (plus 173 biases and 172 PReLU
slopes). The parameter names follow yjn870/FSRCNN-pytorch (``first_part``, ``mid_part``,
``last_part``), so a state dict in that layout loads directly.

At ``scale=1`` the deconvolution is an ordinary 9×9 convolution from d channels to one, and it
dominates the cost. A convolution to a single output channel uses the CPU badly, so
:class:`Deconvolution` offers several formulations of the same layer, all computed from the same
(d, 1, 9, 9) weight, and uses the fastest by default (``"rows"``): a 1×9 convolution from d to 9
channels, channel i holding kernel row i, followed by the sum of the 9 channels shifted by
i − 4 rows. See ``docs/models.md`` for the measurements.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from napari_pclesr.models._common import (
    check_frames,
    check_positive_int,
    check_scale,
    receptive_field_radius,
    transposed_conv_reach,
)

__all__ = ["FORMULATIONS", "FSRCNN", "Deconvolution"]

#: Ways to compute the last layer at scale 1; they give the same output from the same weight.
FORMULATIONS = ("rows", "conv2d", "conv_transpose", "fold")


class Deconvolution(nn.Module):
    """FSRCNN's last layer: a k×k transposed convolution from ``channels`` to one channel.

    The weight has the ``ConvTranspose2d`` layout (channels, 1, k, k), so one state dict serves
    every formulation.

    Parameters
    ----------
    channels : int
        Input channels.
    kernel_size : int
        Odd kernel size (9 in FSRCNN).
    scale : int
        Stride of the transposed convolution (the upscaling factor).
    formulation : str
        How to compute the layer at ``scale=1`` (one of :data:`FORMULATIONS`); at other scales
        it is always ``ConvTranspose2d``.
    """

    def __init__(self, channels: int, kernel_size: int = 9, scale: int = 1, formulation="rows"):
        super().__init__()
        self.scale = scale
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(1))
        self.formulation = formulation

    @property
    def formulation(self) -> str:
        """The formulation used at scale 1 (one of :data:`FORMULATIONS`)."""
        return self._formulation

    def widen_receptive_field(self, radius: int) -> int:
        """Every formulation computes the transposed convolution, so it has its reach."""
        return transposed_conv_reach(radius, self.kernel_size, self.scale, self.kernel_size // 2)

    @formulation.setter
    def formulation(self, name: str) -> None:
        if name not in FORMULATIONS:
            raise ValueError(
                f"unknown FSRCNN formulation {name!r}; choose one of {', '.join(FORMULATIONS)}."
            )
        self._formulation = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.kernel_size // 2
        if self.scale != 1 or self.formulation == "conv_transpose":
            return F.conv_transpose2d(
                x,
                self.weight,
                self.bias,
                stride=self.scale,
                padding=pad,
                output_padding=self.scale - 1,
            )
        # A stride-1 transposed convolution is a convolution with the flipped kernel.
        kernel = self.weight.flip(-1, -2).transpose(0, 1)  # (1, channels, k, k)
        if self.formulation == "conv2d":
            return F.conv2d(x, kernel, self.bias, padding=pad)
        if self.formulation == "fold":
            return self._fold(x)
        return self._rows(x, kernel[0])

    def _rows(self, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        # Channel i of `partial` is x convolved with kernel row i; the output is the sum of
        # those channels shifted vertically by i - pad.
        k = self.kernel_size
        pad = k // 2
        row_kernels = kernel.transpose(0, 1).unsqueeze(2)  # (k rows, channels, 1, k)
        partial = F.conv2d(x, row_kernels, padding=(0, pad))
        partial = F.pad(partial, (0, 0, pad, pad))
        height = x.shape[-2]
        out = partial[:, :1, :height] + self.bias.view(1, 1, 1, 1)
        for row in range(1, k):
            out = out + partial[:, row : row + 1, row : row + height]
        return out

    def _fold(self, x: torch.Tensor) -> torch.Tensor:
        # A 1×1 convolution to k² channels (one per kernel tap), then col2im sums the taps.
        batch, channels, height, width = x.shape
        taps = self.weight.reshape(channels, -1).t()[..., None, None]  # (k², channels, 1, 1)
        columns = F.conv2d(x, taps).reshape(batch, -1, height * width)
        out = F.fold(columns, (height, width), self.kernel_size, padding=self.kernel_size // 2)
        return out + self.bias.view(1, 1, 1, 1)


class FSRCNN(nn.Module):
    """Fast super-resolution CNN for one-channel frames.

    Parameters
    ----------
    scale : int
        Upscaling factor: 1 (same-grid restoration), 2, 4 or 8.
    features : int
        d, the channels of the feature extraction and expanding layers (56).
    shrink_features : int
        s, the channels of the mapping layers (12).
    mapping_layers : int
        m, the number of 3×3 mapping layers (4).

    Notes
    -----
    Input (B, 1, H, W) → output (B, 1, scale·H, scale·W). The parameters are kept in the
    channels-last memory format, which the CPU and GPU convolutions prefer.
    """

    def __init__(
        self,
        scale: int = 1,
        features: int = 56,
        shrink_features: int = 12,
        mapping_layers: int = 4,
    ):
        super().__init__()
        self.scale = check_scale(scale)
        d = check_positive_int(features, "features")
        s = check_positive_int(shrink_features, "shrink_features")
        m = check_positive_int(mapping_layers, "mapping_layers")
        self.hparams = {
            "scale": scale,
            "features": d,
            "shrink_features": s,
            "mapping_layers": m,
        }
        self.first_part = nn.Sequential(nn.Conv2d(1, d, 5, padding=2), nn.PReLU(d))
        mid = [nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            mid += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        mid += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.mid_part = nn.Sequential(*mid)
        self.last_part = Deconvolution(d, 9, scale)
        self._initialise()
        self.to(memory_format=torch.channels_last)

    def _initialise(self) -> None:
        # He initialisation for the PReLU layers, and a small Gaussian for the deconvolution
        # (Dong et al. 2016, §4.1).
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.out_channels * module.weight[0, 0].numel()
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.last_part.weight, 0.0, 0.001)
        nn.init.zeros_(self.last_part.bias)

    #: Receptive-field radius in input pixels (2 + m + 4 at ×1: 10 for the defaults).
    receptive_field = property(receptive_field_radius)

    @property
    def formulation(self) -> str:
        """How the last layer is computed at scale 1 (see :data:`FORMULATIONS`)."""
        return self.last_part.formulation

    @formulation.setter
    def formulation(self, name: str) -> None:
        self.last_part.formulation = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_frames(x)
        x = x.contiguous(memory_format=torch.channels_last)
        return self.last_part(self.mid_part(self.first_part(x)))
