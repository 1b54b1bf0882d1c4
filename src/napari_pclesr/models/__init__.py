"""Super-resolution networks for one-channel pCLE frames, built by name.

>>> from napari_pclesr import models
>>> models.available()
['densenet_sr', 'edsr', 'edsr_large', 'fsrcnn', 'srgan']
>>> net = models.create("fsrcnn", scale=2)
>>> models.count_parameters(net)
12809

Every network maps (B, 1, H, W) float frames to (B, 1, scale·H, scale·W), for scale 1, 2, 4
or 8, and has ``receptive_field``: the radius, in input pixels, of the input region one
output pixel depends on (:func:`receptive_field_radius` derives it from the layers). See
``docs/models.md``.
"""

from napari_pclesr.models._common import SUPPORTED_SCALES, receptive_field_radius
from napari_pclesr.models.densenet_sr import DenseNetSR
from napari_pclesr.models.discriminator import Discriminator
from napari_pclesr.models.edsr import EDSR
from napari_pclesr.models.fsrcnn import FSRCNN
from napari_pclesr.models.registry import (
    ModelSpec,
    available,
    count_parameters,
    create,
    create_discriminator,
    default_hparams,
    register,
    spec,
)
from napari_pclesr.models.srgan import SRGANGenerator

__all__ = [
    "EDSR",
    "FSRCNN",
    "SUPPORTED_SCALES",
    "DenseNetSR",
    "Discriminator",
    "ModelSpec",
    "SRGANGenerator",
    "available",
    "count_parameters",
    "create",
    "create_discriminator",
    "default_hparams",
    "receptive_field_radius",
    "register",
    "spec",
]
