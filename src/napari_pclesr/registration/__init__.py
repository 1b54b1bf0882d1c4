"""Pseudo-ground-truth (HR-hat) from a user's own recordings (seed 000, §3.1).

No true high-resolution image exists in pCLE. Seed 000 gets its training targets by
registering the frames of a recording, fusing them into a mosaic and mapping the fused mosaic
back into every frame; the result (HR-hat) is aligned with each input frame and less noisy,
with fewer interpolation artefacts. This package does that with generic techniques (low-pass
Fourier cross-correlation, Lucas–Kanade refinement, robust least squares, weighted averaging);
``docs/registration.md`` describes the method and its measured accuracy.

* :func:`register_sequence` → :class:`Registration` (offsets, rejected frames and reasons,
  segments, per-frame quality, every pair; saved to and loaded from JSON);
* :func:`build_mosaic` → the fused mosaic of a segment and its weight;
* :func:`hr_hat_sequence` → HR-hat for every frame, lazily;
* :func:`refine_affine` → per-frame affine maps refined against the mosaic;
* :func:`iter_mosaic` → the whole pipeline as a generator of progress events.
"""

from napari_pclesr.registration._affine import iter_refine_affine, refine_affine
from napari_pclesr.registration._mosaic import (
    Mosaic,
    build_mosaic,
    canvas_geometry,
    hr_hat_sequence,
    iter_mosaics,
)
from napari_pclesr.registration._pipeline import MosaicResult, iter_mosaic, write_training_pairs
from napari_pclesr.registration._register import (
    Progress,
    SegmentWarning,
    iter_register,
    register_sequence,
)
from napari_pclesr.registration._result import FrameQuality, PairTable, Registration

__all__ = [
    "FrameQuality",
    "Mosaic",
    "MosaicResult",
    "PairTable",
    "Progress",
    "Registration",
    "SegmentWarning",
    "build_mosaic",
    "canvas_geometry",
    "hr_hat_sequence",
    "iter_mosaic",
    "iter_mosaics",
    "iter_refine_affine",
    "iter_register",
    "refine_affine",
    "register_sequence",
    "write_training_pairs",
]
