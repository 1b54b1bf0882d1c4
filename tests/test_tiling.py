"""Receptive fields derived from the layers, and tiled inference equal to whole frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_pclesr import baselines, models
from napari_pclesr.infer import _tile_spans, super_resolve
from napari_pclesr.models import receptive_field_radius

#: Small settings for the big networks, so CI stays fast; other models use their defaults.
TINY = {
    "fsrcnn": {"features": 8, "shrink_features": 4, "mapping_layers": 2},
    "edsr": {"blocks": 2, "features": 8},
    "edsr_large": {"blocks": 2, "features": 8},
    "densenet_sr": {"low_features": 8, "blocks": 2, "layers": 2, "growth": 4},
    "srgan": {"blocks": 2, "features": 8},
}


def tiny_model(name: str, scale: int) -> nn.Module:
    """A registered network with random weights of unit gain, so its output spans ~1."""
    torch.manual_seed(0)
    net = models.create(name, scale=scale, **TINY.get(name, {}))
    with torch.no_grad():
        for parameter in net.parameters():
            if parameter.ndim >= 2:
                parameter.normal_(0.0, parameter[0].numel() ** -0.5)
            elif parameter.numel() > 1:
                parameter.normal_(0.0, 0.1)
    return net.eval()


def frames_in_unit_range(shape=(2, 37, 53), seed=1):
    """Frames whose values span exactly [0, 1], so the output is the raw network output."""
    stack = np.random.default_rng(seed).random(shape).astype(np.float32)
    stack -= stack.min(axis=(1, 2), keepdims=True)
    return stack / stack.max(axis=(1, 2), keepdims=True)


def support_radius(net: nn.Module) -> int:
    """Independent measure: how far from its source pixel the input pixels that one output
    pixel depends on lie (from the gradient of that output pixel), on an input wide enough
    to hold the whole support."""
    size = 2 * net.receptive_field + 16
    x = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(2))
    x.requires_grad_(True)
    scale = int(net.scale)
    centre = size // 2
    net(x)[0, 0, centre * scale, centre * scale].backward()
    rows, cols = np.nonzero(x.grad[0, 0].numpy())
    return int(max(np.abs(rows - centre).max(), np.abs(cols - centre).max()))


@pytest.mark.parametrize("name", models.available())
def test_receptive_field_bounds_the_dependence_of_every_registered_model(name):
    at_1 = tiny_model(name, 1)
    # At ×1 the chain of layers is the longest path, and random weights use all of it.
    assert support_radius(at_1) == at_1.receptive_field
    at_2 = tiny_model(name, 2)
    assert support_radius(at_2) <= at_2.receptive_field


def test_receptive_fields_of_the_default_networks():
    assert models.create("fsrcnn").receptive_field == 10  # 5×5, four 3×3, 9×9: 2 + 4 + 4
    assert models.create("fsrcnn", scale=2).receptive_field == 8  # the ×2 deconvolution: 2
    assert models.create("edsr").receptive_field == 35  # head, 2·16 block convs, body, tail
    assert models.create("edsr", scale=2).receptive_field == 36
    assert models.create("densenet_sr").receptive_field == 99  # 2 + 12·8 + 1


def test_receptive_field_radius_of_layer_chains():
    chain = nn.Sequential(
        nn.Conv2d(1, 4, 9, padding=4),
        nn.BatchNorm2d(4),
        nn.PReLU(),
        nn.Conv2d(4, 16, 3, padding=1),
        nn.PixelShuffle(2),
        nn.Conv2d(4, 1, 9, padding=4),  # 4 pixels of the ×2 grid: 2 input pixels
    )
    assert receptive_field_radius(chain) == 4 + 1 + 2
    dilated = nn.Conv2d(1, 1, 3, padding="same", dilation=3)
    assert receptive_field_radius(dilated) == 3
    assert receptive_field_radius(nn.Upsample(scale_factor=2, mode="bicubic")) == 2

    class Custom(nn.Module):
        def widen_receptive_field(self, radius):
            return radius + 5

    assert receptive_field_radius(nn.Sequential(Custom(), nn.Conv2d(1, 1, 3, padding=1))) == 6
    with pytest.raises(TypeError, match="InstanceNorm2d"):
        receptive_field_radius(nn.Sequential(nn.Conv2d(1, 1, 3), nn.InstanceNorm2d(1)))
    with pytest.raises(TypeError, match="Conv2d"):
        receptive_field_radius(nn.Conv2d(1, 1, 3, stride=2))


@pytest.mark.parametrize("scale", [1, 2])
@pytest.mark.parametrize("name", models.available())
def test_tiled_equals_untiled_for_every_registered_model(name, scale):
    net = tiny_model(name, scale)
    # Tiles of 2·radius + 11 pixels (the halo is the radius) on frames they do not divide.
    tile = 2 * net.receptive_field + 11
    frames = frames_in_unit_range(shape=(2, tile + 13, 2 * tile + 5))
    assert min(len(_tile_spans(n, tile, net.receptive_field)) for n in frames.shape[1:]) > 1
    whole = super_resolve(frames, net, device="cpu", batch_size=2)
    tiled = super_resolve(frames, net, device="cpu", tile=tile, batch_size=7)
    assert np.ptp(whole) > 0.05, "the check needs an output that varies"
    # The input spans [0, 1]: 1e-5 of that range, or of the output's if it is wider.
    assert np.abs(tiled - whole).max() <= 1e-5 * max(np.ptp(whole), 1.0)


@pytest.mark.parametrize("scale", [1, 2])
@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("nearest", {}),
        ("bilinear", {}),
        ("bicubic", {}),
        ("unsharp", {}),
        ("richardson_lucy", {"sigma": 1.0, "iterations": 2}),
        ("tv", {"sigma": 0.7, "iterations": 3}),
    ],
)
def test_tiled_equals_untiled_for_baselines(name, params, scale):
    method = baselines.create(name, scale=scale, **params)
    frames = frames_in_unit_range(shape=(2, 61, 67))
    tile = 2 * method.receptive_field + 9
    assert len(_tile_spans(61, tile, method.receptive_field)) > 1
    whole = super_resolve(frames, method, device="cpu")
    tiled = super_resolve(frames, method, device="cpu", tile=tile)
    assert np.abs(tiled - whole).max() <= 1e-5 * max(np.ptp(whole), 1.0)


def test_a_halo_one_pixel_short_is_not_exact():
    net = tiny_model("fsrcnn", 1)
    frames = frames_in_unit_range()
    whole = super_resolve(frames, net, device="cpu")
    radius = net.receptive_field
    with pytest.warns(UserWarning, match="seams"):
        short = super_resolve(frames, net, device="cpu", tile=2 * radius + 5, overlap=radius - 1)
    assert np.abs(short - whole).max() > 1e-4 * np.ptp(whole)
