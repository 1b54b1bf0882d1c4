"""Held-out evaluation: the image sets of the shipped models' quality bar, and their scores.

Three sets, none of which any shipped model was trained on (``docs/models.md``):

* ``phantom``: tissue phantoms of every kind drawn from seeds the training data never use;
* ``natural``: scikit-image's natural images held out of training
  (:data:`~napari_pclesr.data.natural.EVALUATION_IMAGES`), centre crops of at most 512 pixels;
* ``real``: frames of a real pCLE recording taken as HR (they are already band-limited by their
  own bundle, so the honest goal there is to do no harm). The recording is the user's; nothing
  is bundled.

Each HR image is seen through the *standard bundle*: a synthetic Cellvizio-density layout
(:func:`~napari_pclesr.fibre.fibre_count_for`) of seed :data:`STANDARD_BUNDLE_SEED`, seed 000's
noise, and Delaunay interpolation. Scores are taken inside the field of view, eroded by one
pixel so that the interpolation's rim does not count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "EVALUATION_SETS",
    "STANDARD_BUNDLE_SEED",
    "HeldOutImage",
    "held_out_images",
    "markdown_table",
    "natural_images",
    "phantom_images",
    "real_images",
    "score_methods",
    "summarise",
]

#: Seed of the standard bundle every held-out image is seen through (no training bundle uses it:
#: the training bundles are drawn from the data seed, see ``PairedSequences.mixed``).
STANDARD_BUNDLE_SEED = 777
#: First seed of the held-out phantoms (training phantoms draw their seeds from ``[seed, i]``
#: generators, which do not reach these small integers in practice; the kinds alternate).
PHANTOM_SEED = 9001
EVALUATION_SETS = ("phantom", "natural", "real")
_PHANTOM_KINDS = ("colon", "oesophagus", "mixed", "mixed")
#: Frames of the real recording used: every ``_REAL_STEP``-th, at most ``_REAL_FRAMES``.
_REAL_STEP = 40
_REAL_FRAMES = 7


@dataclass(frozen=True)
class HeldOutImage:
    """One evaluation image: the HR, its LR through the standard bundle, and where to score.

    Attributes
    ----------
    set : str
        ``"phantom"``, ``"natural"`` or ``"real"``.
    name : str
    hr, lr : numpy.ndarray, float32, (H, W)
        HR in [0, 1] and its simulated LR (same grid: ×1).
    fov : numpy.ndarray, bool, (H, W)
        The standard bundle's field of view eroded by one pixel.
    """

    set: str
    name: str
    hr: np.ndarray
    lr: np.ndarray
    fov: np.ndarray


def _through_standard_bundle(set_name: str, name: str, hr: np.ndarray, seed: int) -> HeldOutImage:
    from scipy import ndimage

    from napari_pclesr import FibreLayout, Simulator
    from napari_pclesr.fibre import fibre_count_for

    hr = np.ascontiguousarray(hr, dtype=np.float32)
    layout = FibreLayout.synthetic(hr.shape, fibre_count_for(hr.shape), seed=STANDARD_BUNDLE_SEED)
    simulator = Simulator(layout)
    lr = simulator.simulate(hr, seed=seed).astype(np.float32)
    fov = ndimage.binary_erosion(simulator.fov_mask, iterations=1)
    return HeldOutImage(set_name, name, hr, lr, fov)


def _centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    height, width = image.shape
    rows, cols = min(height, size), min(width, size)
    top, left = (height - rows) // 2, (width - cols) // 2
    return image[top : top + rows, left : left + cols]


def phantom_images(count: int = 4, size: int = 384) -> list[HeldOutImage]:
    """``count`` held-out tissue phantoms of side ``size`` through the standard bundle."""
    from napari_pclesr.data import phantom

    images = []
    for index in range(int(count)):
        kind = _PHANTOM_KINDS[index % len(_PHANTOM_KINDS)]
        hr = phantom((size, size), kind, seed=PHANTOM_SEED + index)
        images.append(
            _through_standard_bundle("phantom", f"{kind}-{PHANTOM_SEED + index}", hr, index)
        )
    return images


def natural_images(size: int = 512, names: Sequence[str] | None = None) -> list[HeldOutImage]:
    """The held-out natural images (centre crops of at most ``size``) through the standard
    bundle."""
    from napari_pclesr.data.natural import EVALUATION_IMAGES, natural_image

    images = []
    for index, name in enumerate(EVALUATION_IMAGES if names is None else names):
        hr = _centre_crop(natural_image(name), size)
        images.append(_through_standard_bundle("natural", name, hr, 100 + index))
    return images


def real_images(recording, count: int = _REAL_FRAMES, size: int = 576) -> list[HeldOutImage]:
    """Frames of a real recording taken as HR (every 40th, at most ``count``, centre crops of
    at most ``size``), scaled to [0, 1] by the recording's type, through the standard bundle.

    Raises
    ------
    ValueError
        If the recording's frames are not integers (their scale to [0, 1] is then unknown) or it
        has no frame.
    """
    from napari_pclesr.io import read_sequence

    frames, _ = read_sequence(recording)
    dtype = np.dtype(frames.dtype)
    if dtype.kind not in "ui":
        raise ValueError(
            f"{recording}: real frames are scaled to [0, 1] by their integer type, but this "
            f"recording holds {dtype}; export it as 8- or 16-bit frames."
        )
    indices = list(range(0, len(frames), _REAL_STEP))[: int(count)]
    if not indices:
        raise ValueError(f"{recording} has no frame to evaluate on.")
    scale = float(np.iinfo(dtype).max)
    name = Path(recording).stem
    return [
        _through_standard_bundle(
            "real",
            f"{name}#{index}",
            _centre_crop(np.asarray(frames[index], dtype=np.float32) / scale, size),
            200 + position,
        )
        for position, index in enumerate(indices)
    ]


def held_out_images(real=None, *, quick: bool = False) -> list[HeldOutImage]:
    """All held-out images: phantoms, natural images and, with ``real`` (a recording), real
    frames. ``quick`` keeps two of each, smaller (for tests and ``--quick`` runs)."""
    if quick:
        images = phantom_images(2, 192) + natural_images(192, ("camera", "coffee"))
        return images + (real_images(real, 2, 256) if real is not None else [])
    return phantom_images() + natural_images() + (real_images(real) if real is not None else [])


def score_methods(
    images: Iterable[HeldOutImage],
    methods: Mapping[str, object],
    *,
    device: str = "auto",
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Score every method on every image against its HR, inside the image's FoV.

    Parameters
    ----------
    images : iterable of HeldOutImage
    methods : mapping
        Name → what :func:`~napari_pclesr.infer.super_resolve` accepts (a checkpoint path, a
        ``pretrained:`` name, a module or a baseline name), or a callable ``f(lr, fov) -> sr``.
        The LR itself is always scored, as ``"LR"``.
    device : str
    progress : callable, optional
        Called with a short message per image.

    Returns
    -------
    list of dict
        One row per (image, method): ``set``, ``image``, ``method``, ``ssim``, ``psnr``,
        ``gcf``, ``delta_gcf`` (against the LR), ``tot_cs`` and ``noise_ratio`` (noise σ over
        the LR's).
    """
    import torch

    from napari_pclesr.infer import SuperResolver
    from napari_pclesr.metrics import evaluate_methods

    def runner(method):
        if callable(method) and not isinstance(method, torch.nn.Module):
            return method
        resolver = SuperResolver(method, device=device)  # loaded once, for every image
        return lambda lr, fov: resolver(lr, fov_mask=fov)

    resolvers = {name: runner(method) for name, method in methods.items()}
    rows = []
    for image in images:
        if progress is not None:
            progress(f"{image.set}/{image.name}")
        outputs = {"LR": image.lr}
        outputs.update({name: run(image.lr, image.fov) for name, run in resolvers.items()})
        scores = evaluate_methods(outputs, image.hr, image.lr, mask=image.fov, baseline=None)
        for name in outputs:
            frame = scores[name]
            rows.append(
                {
                    "set": image.set,
                    "image": image.name,
                    "method": name,
                    "ssim": float(frame.ssim[0]),
                    "psnr": float(frame.psnr[0]),
                    "gcf": float(frame.gcf[0]),
                    "delta_gcf": float(frame.delta_gcf_lr[0]),
                    "tot_cs": float(frame.tot_cs[0]),
                    "noise_ratio": float(frame.noise_ratio[0]),
                }
            )
    return rows


def summarise(rows: Sequence[dict]) -> list[dict]:
    """Per (set, method): image count, mean SSIM, PSNR, ΔGCF, Tot_cs and noise ratio, the SSIM
    and PSNR gains over the LR of the same images, and ``noisy`` (a contrast gain that comes
    with noise, :func:`~napari_pclesr.metrics.noisy_contrast`); sets in
    :data:`EVALUATION_SETS` order, methods in their first order."""
    from napari_pclesr.metrics import noisy_contrast

    lr = {(r["set"], r["image"]): r for r in rows if r["method"] == "LR"}
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["set"], row["method"]), []).append(row)
    order = {name: index for index, name in enumerate(EVALUATION_SETS)}
    summary = []
    for (set_name, method), members in sorted(
        groups.items(), key=lambda item: order.get(item[0][0], len(order))
    ):
        entry = {"set": set_name, "method": method, "images": len(members)}
        for key in ("ssim", "psnr", "delta_gcf", "tot_cs", "noise_ratio"):
            entry[key] = float(np.mean([m[key] for m in members]))
            if key in ("ssim", "psnr"):
                gains = [m[key] - lr[(set_name, m["image"])][key] for m in members]
                entry[f"{key}_gain"] = float(np.mean(gains))
        entry["noisy"] = noisy_contrast(entry["delta_gcf"], entry["noise_ratio"])
        summary.append(entry)
    return summary


def markdown_table(summary: Sequence[dict]) -> str:
    """The summary as a Markdown table; the best SSIM of each set in bold, and ⚠ after a noise
    ratio whose method's contrast gain comes with noise."""
    best = {}
    for row in summary:
        if row["ssim"] > best.get(row["set"], -math.inf):
            best[row["set"]] = row["ssim"]
    lines = [
        "| set | method | images | SSIM | ΔSSIM vs LR | PSNR (dB) | ΔPSNR | ΔGCF | Tot_cs "
        "| noise ratio |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in summary:
        ssim = f"{row['ssim']:.4f}"
        if row["ssim"] == best[row["set"]]:
            ssim = f"**{ssim}**"
        lines.append(
            f"| {row['set']} | {row['method']} | {row['images']} | {ssim} | "
            f"{row['ssim_gain']:+.4f} | {row['psnr']:.2f} | {row['psnr_gain']:+.2f} | "
            f"{row['delta_gcf']:+.3f} | {row['tot_cs']:.4f} | {row['noise_ratio']:.2f}"
            f"{' ⚠' if row['noisy'] else ''} |"
        )
    return "\n".join(lines) + "\n"
