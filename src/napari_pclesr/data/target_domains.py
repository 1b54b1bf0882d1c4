"""Target-domain patches: the "real" images the cycle objective's discriminator learns from.

Seed 001 (§3.6) trains with four target domains; three of them are patch sets cut here (the
fourth, ``paired``, is the HR aligned with each training patch, which the training data carry
already):

- :func:`natural_patches`: grey natural images, scikit-image's bundled ones
  (:data:`~napari_pclesr.data.natural.NATURAL_IMAGES`, nothing is downloaded) or the images of
  a folder.
- :func:`unpaired_patches`: HR-hat of other sequences, the TIFF stacks of a folder (or of its
  ``hr/`` sub-folder, as ``pclesr mosaic`` writes); the field of view of a stack is its pixels
  that are nonzero in some frame.
- :func:`rescaled_patches`: the LR frames themselves, downscaled ×4 by block means, so that
  details that recur at a larger scale appear at the fibre scale.

Every image or frame is mapped to the network's units as the training LR frames are
(:class:`~napari_pclesr.data.patches.Normalisation`: its 1st and 99th percentiles inside its
field of view to 0 and 1), so that real and generated patches share one intensity scale.

All cut non-overlapping patches on a centred grid (:func:`~napari_pclesr.data.patches
.patch_corners`) and keep only those inside the field of view, as the training patches are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_pclesr.data.patches import (
    Normalisation,
    extract_patches,
    fov_from_frames,
    patch_corners,
)

__all__ = ["IMAGE_SUFFIXES", "natural_patches", "rescaled_patches", "unpaired_patches"]

#: Image files read from a ``natural`` target folder.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: Downscaling factor of the ``rescaled`` target domain (seed 001).
RESCALE_FACTOR = 4


def natural_patches(size: int, folder=None) -> np.ndarray:
    """Grey natural-image patches, (n, size, size) float32.

    Parameters
    ----------
    size : int
        Patch side (the super-resolved patch size).
    folder : str or os.PathLike, optional
        A folder of images (PNG, JPEG, TIFF, BMP; colour is converted to grey); scikit-image's
        bundled images when None.

    Raises
    ------
    ValueError
        If the folder holds no image, or no image is at least ``size`` pixels on each side.
    """
    if folder is None:
        from napari_pclesr.data.natural import NATURAL_IMAGES, natural_image

        images = [natural_image(name) for name in NATURAL_IMAGES]
        source = "scikit-image's bundled images"
    else:
        images = [_read_image(path) for path in _files(folder, IMAGE_SUFFIXES)]
        source = str(folder)
    chunks = []
    for image in images:
        if min(image.shape) < size:
            continue
        scaled, _, _ = Normalisation().normalise(image)
        full = np.ones(image.shape, dtype=bool)
        chunks.append(extract_patches(scaled[None], patch_corners(full, size), size))
    return _concatenate(chunks, size, source)


def unpaired_patches(size: int, folder) -> np.ndarray:
    """HR-hat patches of the TIFF stacks in ``folder`` (or ``folder/hr``).

    Patches lie entirely inside the field of view (the pixels nonzero in some frame of the
    stack).

    Raises
    ------
    FileNotFoundError
        If the folder does not exist.
    ValueError
        If it holds no TIFF, or no patch fits inside the fields of view.
    """
    from napari_pclesr.io import read_sequence

    folder = Path(folder)
    if (folder / "hr").is_dir():
        folder = folder / "hr"
    chunks = []
    for path in _files(folder, (".tif", ".tiff")):
        frames, _ = read_sequence(path)
        stack = np.asarray(frames[:], dtype=np.float32)
        mask = fov_from_frames(stack)
        if min(mask.shape) < size:
            continue
        scaled, _, _ = Normalisation().normalise(stack, mask)
        chunks.append(extract_patches(scaled, patch_corners(mask, size), size))
    return _concatenate(chunks, size, str(folder))


def rescaled_patches(frames: list, masks: list, size: int) -> np.ndarray:
    """Patches of normalised LR frames downscaled ×4 (4 × 4 block means).

    Parameters
    ----------
    frames : list of arrays (T, H, W)
        Normalised LR stacks.
    masks : list of bool arrays (H, W)
        Their fields of view; a downscaled pixel is inside when its whole block is.
    size : int

    Raises
    ------
    ValueError
        If no patch fits inside the downscaled fields of view.
    """
    factor = RESCALE_FACTOR
    chunks = []
    for stack, mask in zip(frames, masks, strict=True):
        height, width = (side // factor * factor for side in mask.shape)
        if min(height, width) // factor < size:
            continue
        blocks = stack[:, :height, :width].reshape(len(stack), height // factor, factor, -1, factor)
        small = blocks.mean(axis=(2, 4), dtype=np.float64).astype(np.float32)
        inside = (
            mask[:height, :width].reshape(height // factor, factor, -1, factor).all(axis=(1, 3))
        )
        if not inside.any():
            continue
        scaled, _, _ = Normalisation().normalise(small, inside)
        chunks.append(extract_patches(scaled, patch_corners(inside, size), size))
    return _concatenate(chunks, size, f"the LR frames downscaled x{factor}")


def _files(folder, suffixes: tuple[str, ...]) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"target-domain folder {folder} does not exist.")
    files = sorted(
        p for p in folder.iterdir() if p.suffix.lower() in suffixes and not p.name.startswith(".")
    )
    if not files:
        raise ValueError(f"{folder} holds no {'/'.join(suffixes)} file for the target domain.")
    return files


def _read_image(path: Path) -> np.ndarray:
    from skimage import color, io, util

    try:
        image = io.imread(path)
    except Exception as exc:  # imageio raises many types for unreadable files
        raise ValueError(f"{path}: cannot read the image ({exc}).") from None
    if image.ndim == 3:
        image = color.rgb2gray(image[..., :3]) if image.shape[-1] >= 3 else image[..., 0]
    if image.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D image, got shape {image.shape}.")
    return util.img_as_float32(image) if image.dtype.kind in "uib" else image.astype(np.float32)


def _concatenate(chunks: list, size: int, source: str) -> np.ndarray:
    chunks = [chunk for chunk in chunks if len(chunk)]
    if not chunks:
        raise ValueError(
            f"no {size}x{size} target-domain patch fits inside {source}; use a smaller patch "
            "size or larger images."
        )
    return np.concatenate(chunks, axis=0).astype(np.float32)
