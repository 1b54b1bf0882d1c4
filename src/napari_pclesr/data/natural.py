"""Grey-level natural and histology images that scikit-image ships inside its package."""

from __future__ import annotations

import numpy as np

# Each of these is a file inside scikit-image's own package: nothing is downloaded.
NATURAL_IMAGES = (
    "immunohistochemistry",
    "retina",
    "cell",
    "camera",
    "coins",
    "moon",
    "brick",
    "grass",
    "gravel",
    "astronaut",
    "coffee",
    "rocket",
    "chelsea",
    "hubble_deep_field",
    "clock",
    "page",
    "text",
    "microaneurysms",
    "motorcycle",
)
#: Held out from the training of the shipped (pretrained) models: they measure how those
#: models do on images they never saw (``docs/models.md``).
EVALUATION_IMAGES = ("camera", "coffee", "rocket", "chelsea", "hubble_deep_field")
#: The natural images the shipped models are trained on.
TRAINING_IMAGES = tuple(name for name in NATURAL_IMAGES if name not in EVALUATION_IMAGES)


def natural_image(name: str = "immunohistochemistry") -> np.ndarray:
    """Return one of scikit-image's bundled images as a grey float32 array in [0, 1].

    These serve as a second source of HR images next to the procedural phantoms, e.g. for
    training a model on natural textures (a target domain of seed 001).

    Parameters
    ----------
    name : str
        One of :data:`NATURAL_IMAGES`. Colour images are converted with
        ``skimage.color.rgb2gray``.

    Returns
    -------
    numpy.ndarray, float32, shape (H, W)
    """
    from skimage import color, data, util

    if name not in NATURAL_IMAGES:
        raise ValueError(
            f"unknown natural image {name!r}; choose one of {', '.join(NATURAL_IMAGES)}."
        )
    # The stereo pair's left view; the right one is nearly the same picture.
    image = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    if image.ndim == 3:
        image = color.rgb2gray(image[..., :3])
    return util.img_as_float32(image)
