"""Image-quality metrics of the pCLE SR papers: SSIM, PSNR, GCF, ΔGCF, Tot_cs and t-tests,
plus a no-reference noise estimate (Immerkær) that exposes contrast bought with noise.

``ssim``, ``psnr``, ``gcf`` and ``noise_sigma`` take a frame (H, W) or a stack (T, H, W) and
return a float or a (T,) array. ``evaluate``/``evaluate_methods`` give per-frame
:class:`FrameScores`, and ``compare`` turns them into the papers' :class:`ComparisonTable`.
``docs/metrics.md`` states every definition exactly.
"""

from napari_pclesr.metrics._compare import (
    NOISE_RATIO_LIMIT,
    NOISE_SPACING_PX,
    SCORES,
    TOT_CS_DEFINITION,
    TOT_CS_GCF_SCALE,
    ComparisonTable,
    FrameScores,
    MethodSummary,
    compare,
    evaluate,
    evaluate_methods,
    noisy_contrast,
    tot_cs,
)
from napari_pclesr.metrics._fidelity import (
    K1,
    K2,
    WINDOW_RADIUS,
    WINDOW_SIGMA,
    gaussian_window_1d,
    psnr,
    ssim,
)
from napari_pclesr.metrics._gcf import gcf, gcf_weights
from napari_pclesr.metrics._noise import noise_sigma

__all__ = [
    "K1",
    "K2",
    "NOISE_RATIO_LIMIT",
    "NOISE_SPACING_PX",
    "SCORES",
    "TOT_CS_DEFINITION",
    "TOT_CS_GCF_SCALE",
    "WINDOW_RADIUS",
    "WINDOW_SIGMA",
    "ComparisonTable",
    "FrameScores",
    "MethodSummary",
    "compare",
    "evaluate",
    "evaluate_methods",
    "gaussian_window_1d",
    "gcf",
    "gcf_weights",
    "noise_sigma",
    "noisy_contrast",
    "psnr",
    "ssim",
    "tot_cs",
]
