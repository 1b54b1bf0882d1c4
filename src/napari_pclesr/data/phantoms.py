"""Procedural tissue phantoms that look like pCLE images of mucosa, and probe-motion sequences.

The phantoms are built at the pixel scale of a Cellvizio frame (about 0.42 µm per pixel for a
240 µm field of view on 576 pixels), so that a 576×576 phantom holds a handful of colonic crypts
or oesophageal papillae, and carries texture finer than the ~3 pixel fibre pitch of the bundle,
which the simulated LR loses and a super-resolution model must restore.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from napari_pclesr._validation import check_grid_shape

PhantomKind = Literal["colon", "oesophagus", "mixed"]
PHANTOM_KINDS = ("colon", "oesophagus", "mixed")

_CRYPT_SPACING = 130.0  # px between colonic crypt centres
_CRYPT_RADIUS = (42.0, 60.0)  # px, outer radius of the epithelial ring
_EPITHELIAL_CELL = 7.0  # px between epithelial cell centres
_SQUAMOUS_CELL = 18.0  # px between squamous cell centres
_PAPILLA_SPACING = 150.0  # px between oesophageal papillae


def phantom(
    shape: tuple[int, int] = (576, 576),
    kind: PhantomKind = "mixed",
    seed: int | None = 0,
) -> np.ndarray:
    """Make a seeded procedural pCLE-like tissue image of any size.

    Parameters
    ----------
    shape : tuple of int
        (H, W) in pixels; the tissue scale is fixed, so larger images hold more structures.
    kind : {"colon", "oesophagus", "mixed"}
        ``"colon"``: crypts, i.e. dark lumens ringed by bright epithelium with dark goblet cells,
        in a fibrous lamina propria. ``"oesophagus"``: polygonal squamous cells with bright
        borders, papillae holding bright capillary loops, and winding capillaries.
        ``"mixed"``: both, blended through a smooth random mask.
    seed : int or None
        The same seed gives the same image.

    Returns
    -------
    numpy.ndarray, float32, shape (H, W), values in [0, 1]

    Examples
    --------
    >>> image = phantom((128, 160), kind="colon", seed=3)
    >>> image.shape, image.dtype
    ((128, 160), dtype('float32'))
    """
    height, width = check_grid_shape(shape, minimum=8)
    if kind not in PHANTOM_KINDS:
        raise ValueError(f"kind must be one of {', '.join(PHANTOM_KINDS)}, got {kind!r}.")
    rng = np.random.default_rng(seed)
    pixels = np.indices((height, width), dtype=np.float32).reshape(2, -1).T
    if kind == "colon":
        tissue = _colon(pixels, (height, width), rng)
    elif kind == "oesophagus":
        tissue = _oesophagus(pixels, (height, width), rng)
    else:
        colon = _colon(pixels, (height, width), rng)
        oesophagus = _oesophagus(pixels, (height, width), rng)
        blend = _smoothstep(_smooth_noise((height, width), 90.0, rng), -0.4, 0.4)
        tissue = blend * colon + (1 - blend) * oesophagus
    tissue += 0.06 * _fine_texture((height, width), rng) * (0.4 + tissue)
    return np.clip(tissue, 0, 1).astype(np.float32)


@dataclass(frozen=True)
class PhantomSequence:
    """Frames of a probe moving over a phantom, with the truth to test registration against.

    Attributes
    ----------
    frames : numpy.ndarray, float32, shape (T, H, W)
        The true HR frames. Frame ``t`` at pixel (i, j) shows ``canvas`` at
        ``(i + offsets[t, 0], j + offsets[t, 1])``.
    offsets : numpy.ndarray, float64, shape (T, 2)
        (row, col) of each frame's top-left pixel in canvas coordinates, sub-pixel.
    canvas : numpy.ndarray, float32
        The larger phantom the probe moves over (the ideal mosaic).
    """

    frames: np.ndarray
    offsets: np.ndarray
    canvas: np.ndarray


def phantom_sequence(
    n_frames: int = 16,
    shape: tuple[int, int] = (576, 576),
    seed: int | None = 0,
    kind: PhantomKind = "mixed",
    speed: float = 4.0,
) -> PhantomSequence:
    """Make a phantom sequence with smooth probe motion over a larger phantom.

    The probe drifts at ``speed`` pixels per frame along a direction that turns smoothly and
    randomly, as a hand-held probe sliding on tissue. Frames are sampled from the canvas with
    cubic-spline sub-pixel shifts.

    Parameters
    ----------
    n_frames : int
        Number of frames T (>= 1).
    shape : tuple of int
        (H, W) of each frame.
    seed : int or None
        Seeds both the canvas and the trajectory.
    kind : {"colon", "oesophagus", "mixed"}
        Tissue type, see :func:`phantom`.
    speed : float
        Probe speed in pixels per frame (>= 0).

    Returns
    -------
    PhantomSequence
    """
    height, width = _check_sequence(n_frames, shape, speed)
    rng = np.random.default_rng(seed)
    offsets, extent = _probe_path(int(n_frames), speed, rng)
    canvas = phantom((height + extent[0], width + extent[1]), kind=kind, seed=seed)
    frames = np.stack([_crop(canvas, offset, (height, width)) for offset in offsets])
    return PhantomSequence(frames=frames, offsets=offsets, canvas=canvas)


def image_sequence(
    image,
    n_frames: int = 8,
    shape: tuple[int, int] = (256, 256),
    seed: int | None = 0,
    speed: float = 4.0,
) -> PhantomSequence:
    """Frames of a probe sliding over any grey image (e.g. a natural image) in [0, 1].

    The same smooth random motion as :func:`phantom_sequence`, started at a random place in
    ``image``; the image must be large enough for the frames and the path.

    Parameters
    ----------
    image : array_like, (H', W')
        The canvas, values in [0, 1].
    n_frames, shape, seed, speed
        As for :func:`phantom_sequence`.

    Raises
    ------
    ValueError
        If the image is smaller than a frame plus the probe's path.
    """
    canvas = np.asarray(image, dtype=np.float32)
    height, width = _check_sequence(n_frames, shape, speed)
    if canvas.ndim != 2:
        raise ValueError(f"image must be a grey (H, W) array, got shape {canvas.shape}.")
    rng = np.random.default_rng(seed)
    offsets, extent = _probe_path(int(n_frames), speed, rng)
    room = np.array(canvas.shape) - (height + extent[0], width + extent[1])
    if np.any(room < 0):
        raise ValueError(
            f"the {canvas.shape[0]}x{canvas.shape[1]} image is too small for {height}x{width} "
            f"frames and a path of {extent[0]}x{extent[1]} pixels; use smaller frames, fewer "
            "frames or a lower speed."
        )
    offsets = offsets + rng.integers(0, room + 1)
    frames = np.stack([_crop(canvas, offset, (height, width)) for offset in offsets])
    return PhantomSequence(frames=frames, offsets=offsets, canvas=canvas)


def _check_sequence(n_frames, shape, speed) -> tuple[int, int]:
    height, width = check_grid_shape(shape, minimum=8)
    if int(n_frames) < 1:
        raise ValueError(f"n_frames must be at least 1, got {n_frames}.")
    if not np.isfinite(speed) or speed < 0:
        raise ValueError(f"speed must be a finite number >= 0, got {speed}.")
    return height, width


def _probe_path(n_frames: int, speed: float, rng: np.random.Generator):
    """Sub-pixel top-left offsets of a smoothly turning probe path, and the canvas margin it
    needs beyond one frame."""
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.15, n_frames))
    steps = speed * np.stack([np.sin(heading), np.cos(heading)], axis=-1)
    path = np.cumsum(steps, axis=0) - steps[0]
    margin = 3  # room for the cubic spline's support at the canvas edge
    offsets = path - path.min(axis=0) + margin
    extent = np.ceil(offsets.max(axis=0)).astype(int) + margin
    return offsets, extent


def _crop(canvas: np.ndarray, offset: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``canvas`` sampled on a (H, W) grid whose top-left lies at the sub-pixel ``offset``."""
    whole = np.floor(offset).astype(int)
    start = whole - 2
    window = canvas[start[0] : start[0] + shape[0] + 4, start[1] : start[1] + shape[1] + 4]
    shifted = ndimage.shift(window, -(offset - whole), order=3, mode="nearest")
    return np.clip(shifted[2 : 2 + shape[0], 2 : 2 + shape[1]], 0, 1).astype(np.float32)


# -- tissue components ---------------------------------------------------------------------------


def _colon(pixels: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Crypts: dark lumens in bright epithelial rings with goblet cells, in fibrous stroma."""
    centres = _jittered_lattice(shape, _CRYPT_SPACING, 0.25, rng)
    radii = rng.uniform(*_CRYPT_RADIUS, len(centres))
    distance, nearest = cKDTree(centres).query(pixels)
    wobble = 1 + 0.12 * _smooth_noise(shape, 14.0, rng).ravel()
    rho = (distance / (radii[nearest] * wobble)).reshape(shape).astype(np.float32)

    stroma = 0.32 + 0.10 * _smooth_noise(shape, 6.0, rng) + 0.06 * _fibres(shape, rng)
    cells, goblets = _cell_pattern(pixels, shape, _EPITHELIAL_CELL, rng)
    epithelium = 0.78 - 0.18 * cells - 0.45 * goblets
    ring = _smoothstep(rho, 0.30, 0.42) * (1 - _smoothstep(rho, 0.88, 1.0))
    lumen = 1 - _smoothstep(rho, 0.22, 0.36)
    tissue = ring * epithelium + (1 - ring) * stroma
    return tissue * (1 - 0.85 * lumen)


def _oesophagus(pixels: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Squamous cells with bright borders, papillae with capillary loops, and capillaries."""
    cells, _ = _cell_pattern(pixels, shape, _SQUAMOUS_CELL, rng, goblet_fraction=0.0)
    tissue = 0.22 + 0.08 * _smooth_noise(shape, 10.0, rng) + 0.35 * cells

    centres = _jittered_lattice(shape, _PAPILLA_SPACING, 0.35, rng)
    radii = rng.uniform(24, 36, len(centres))
    distance, nearest = cKDTree(centres).query(pixels)
    distance = distance.reshape(shape)
    radius = radii[nearest].reshape(shape)
    papilla = 1 - _smoothstep(distance / radius, 0.9, 1.1)
    loop_radius = radius * (0.55 + 0.1 * _smooth_noise(shape, 8.0, rng))
    loop = np.exp(-(((distance - loop_radius) / 2.2) ** 2))
    tissue = tissue * (1 - 0.6 * papilla) + 0.75 * loop * papilla
    return tissue + 0.6 * _capillaries(shape, rng)


def _cell_pattern(
    pixels: np.ndarray,
    shape: tuple[int, int],
    spacing: float,
    rng: np.random.Generator,
    goblet_fraction: float = 0.15,
) -> tuple[np.ndarray, np.ndarray]:
    """Cell borders (1 on borders) and goblet cells (1 inside) of a Voronoi cell tiling."""
    seeds = _jittered_lattice(shape, spacing, 0.35, rng)
    distances, nearest = cKDTree(seeds).query(pixels, k=2)
    gap = (distances[:, 1] - distances[:, 0]).reshape(shape)
    borders = np.exp(-((gap / 1.2) ** 2))
    is_goblet = rng.random(len(seeds)) < goblet_fraction
    inside = np.exp(-((distances[:, 0] / (0.3 * spacing)) ** 2)).reshape(shape)
    goblets = inside * is_goblet[nearest[:, 0]].reshape(shape)
    return borders.astype(np.float32), goblets.astype(np.float32)


def _capillaries(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Bright winding vessels, 2–4 px wide: random smooth curves through the field."""
    height, width = shape
    n_vessels = max(1, round(height * width / 576**2 * 3))
    centreline = np.zeros(shape, dtype=bool)
    t = np.linspace(0, 1, 4 * (height + width))
    for _ in range(n_vessels):
        start = rng.uniform(0, 1, 2) * shape
        angle = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.6, 1.2) * max(shape)
        wiggle = sum(
            rng.normal(0, 0.08) * np.sin(2 * np.pi * (k * t + rng.random())) for k in (1, 2, 3)
        )
        heading = angle + 2 * np.pi * wiggle
        path = start + np.cumsum(np.stack([np.sin(heading), np.cos(heading)], -1), 0) * (
            length / len(t)
        )
        inside = np.all((path >= 0) & (path <= np.array(shape) - 1), axis=1)
        rows, cols = np.rint(path[inside]).astype(int).T
        centreline[rows, cols] = True
    distance = ndimage.distance_transform_edt(~centreline)
    return np.exp(-((distance / 1.6) ** 2)).astype(np.float32)


def _fibres(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Oriented collagen-like streaks of the lamina propria (anisotropic filtered noise)."""
    noise = rng.standard_normal(shape).astype(np.float32)
    streaks = ndimage.gaussian_filter(noise, (0.8, 5.0))
    streaks = ndimage.rotate(streaks, rng.uniform(0, 180), reshape=False, mode="reflect", order=1)
    return streaks / (streaks.std() + 1e-12)


def _fine_texture(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Band-pass texture with 2–4 px features, finer than the bundle's ~3 px fibre pitch."""
    noise = rng.standard_normal(shape).astype(np.float32)
    band = ndimage.gaussian_filter(noise, 0.7) - ndimage.gaussian_filter(noise, 1.6)
    return band / (band.std() + 1e-12)


def _smooth_noise(shape: tuple[int, int], scale: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian random field with correlation length ``scale`` px and unit std.

    It is drawn on a grid ``scale / 2`` times coarser and upsampled, so large scales stay cheap.
    """
    factor = max(1, int(scale // 2))
    coarse_shape = tuple(side // factor + 3 for side in shape)
    coarse = ndimage.gaussian_filter(
        rng.standard_normal(coarse_shape).astype(np.float32), scale / factor, mode="wrap"
    )
    field = ndimage.zoom(coarse, factor, order=1)[: shape[0], : shape[1]]
    return field / (field.std() + 1e-12)


def _jittered_lattice(
    shape: tuple[int, int], spacing: float, jitter: float, rng: np.random.Generator
) -> np.ndarray:
    """Hexagonal lattice points with ``jitter``·``spacing`` random displacement, covering shape."""
    row_step = spacing * np.sqrt(3) / 2
    rows = np.arange(-2 * spacing, shape[0] + spacing, row_step)
    cols = np.arange(-2 * spacing, shape[1] + spacing, spacing)
    grid_r, grid_c = np.meshgrid(rows, cols, indexing="ij")
    grid_c = grid_c + (np.arange(len(rows))[:, None] % 2) * spacing / 2
    points = np.stack([grid_r.ravel(), grid_c.ravel()], axis=-1)
    points += rng.uniform(0, spacing, 2)  # random phase of the lattice
    points += rng.normal(0, jitter * spacing, points.shape)
    return points


def _smoothstep(x: np.ndarray, low: float, high: float) -> np.ndarray:
    t = np.clip((x - low) / (high - low), 0, 1)
    return (t * t * (3 - 2 * t)).astype(np.float32)
