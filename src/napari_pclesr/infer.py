"""Inference: :func:`super_resolve` runs a trained network (or a baseline) on frames.

The input is normalised as in training (z-score with the checkpoint's LR statistics, then
per-frame min-max over the field of view), the network runs on batches of frames or of
overlapping tiles, and the output is mapped back to the input's intensity range with the exact
inverse of that normalisation (see :mod:`napari_pclesr.data.patches`).

Tiling
------
Tiles of ``tile`` × ``tile`` pixels overlap by at least ``overlap`` pixels. Along each axis, a
tile's weight is 0 over the outer quarter of each overlap with a neighbour (where the tile sees
its own zero padding), rises linearly over the middle half and is 1 elsewhere; at the image
border it is 1, as the untiled network also sees zero padding there. Outputs are summed with
these weights and divided by the summed weights. The tiled result therefore equals the untiled
one exactly (up to float rounding) when the network's receptive-field radius is at most
``overlap / 4`` pixels; for deeper networks (EDSR: about 35 pixels) a larger overlap makes the
seams vanish, and the default 16 already hides them in practice.

On CUDA out-of-memory, the frames are processed again with tiles of half the size (starting
from half the frame), then with smaller batches, before giving up.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from napari_pclesr._validation import as_grey_float
from napari_pclesr.data.patches import Normalisation, fov_from_frames
from napari_pclesr.devices import autocast_dtype, select_device

__all__ = ["resolve_model", "super_resolve"]

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


def super_resolve(
    frames,
    checkpoint_or_model,
    device: str | torch.device = "auto",
    tile: int | None = None,
    overlap: int = 16,
    batch_size: int = 8,
    half: bool | None = None,
    compile: bool = False,
    fov_mask=None,
    scale: int | None = None,
) -> np.ndarray:
    """Super-resolve one frame or a stack of frames.

    Parameters
    ----------
    frames : array_like, (H, W) or (T, H, W)
        Grey LR frame(s), in any intensity units.
    checkpoint_or_model : str, os.PathLike, dict or torch.nn.Module
        A checkpoint file, a loaded checkpoint dict, a network or baseline module, or the name
        of a baseline (``napari_pclesr.baselines.available()``). Modules and baselines use no
        z-score statistics (only the per-frame min-max normalisation).
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``. A given module is moved
        there.
    tile : int, optional
        Process tiles of this size (LR pixels) instead of whole frames, e.g. for large frames
        or limited memory. ``None`` processes whole frames (and tiles only after a CUDA
        out-of-memory error).
    overlap : int
        Minimum overlap of neighbouring tiles, in LR pixels; ``tile`` must exceed
        ``2 * overlap``.
    batch_size : int
        Frames (or tiles) per forward pass.
    half : bool, optional
        Mixed precision. ``None``: on for CUDA (bfloat16 where supported, else float16), off
        elsewhere. ``True`` on the CPU uses bfloat16.
    compile : bool
        Run the network through ``torch.compile`` (falls back to eager mode with a warning if
        compilation fails).
    fov_mask : bool array (H, W), optional
        The field of view. By default the pixels that are nonzero in at least one frame.
        Output pixels outside it are 0.
    scale : int, optional
        Upscaling factor of a baseline given by name (default 1). For a checkpoint or module
        it must match the network's scale if given.

    Returns
    -------
    numpy.ndarray, float32
        (s·H, s·W) or (T, s·H, s·W) for a network of scale s, in the input's intensity range.

    Raises
    ------
    ValueError
        For bad frames, masks, tile settings or model names.
    FileNotFoundError, CheckpointError
        For a missing or unusable checkpoint.
    torch.cuda.OutOfMemoryError
        If even the smallest tiles with batch 1 do not fit.

    Examples
    --------
    >>> sr = super_resolve(lr_stack, "run/best.pt", tile=256)  # doctest: +SKIP
    """
    array = as_grey_float(frames, name="frames")
    stack = array[None] if array.ndim == 2 else array
    height, width = stack.shape[-2:]
    tile, overlap, batch_size = _check_tiling(tile, overlap, batch_size)
    if fov_mask is None:
        mask = fov_from_frames(stack)
    else:
        mask = np.asarray(fov_mask, dtype=bool)
        if mask.shape != (height, width):
            raise ValueError(
                f"fov_mask has shape {mask.shape} but the frames are {height}x{width}."
            )
    if not mask.any():
        raise ValueError(
            "the field of view is empty (the frames are 0 everywhere, or fov_mask is all "
            "False); nothing to super-resolve."
        )
    device = select_device(device)
    model, normalisation = resolve_model(checkpoint_or_model, device, scale=scale)
    normalised, low, high = normalisation.normalise(stack, mask)
    precision = _precision(half, device)
    was_training = model.training
    model.eval()
    try:
        runner = _Runner(model, device, precision, compile)
        output = _predict_with_retries(runner, normalised, tile, overlap, batch_size)
    finally:
        model.train(was_training)
    restored = normalisation.denormalise(output, low, high, mask)
    return restored[0] if array.ndim == 2 else restored


def resolve_model(
    source, device, scale: int | None = None
) -> tuple[torch.nn.Module, Normalisation]:
    """The network and normalisation of a checkpoint path or dict, module or baseline name.

    ``scale`` builds a baseline at that factor, and is checked against a network's own scale.
    """
    model, normalisation = _load_source(source, select_device(device), scale)
    actual = int(getattr(model, "scale", 1))
    if scale is not None and scale != actual:
        raise ValueError(
            f"scale={scale} was requested but the network upscales ×{actual}; leave scale out "
            "for checkpoints and modules."
        )
    return model, normalisation


def _load_source(source, device, scale) -> tuple[torch.nn.Module, Normalisation]:
    from napari_pclesr.train.checkpoint import load_model

    if isinstance(source, torch.nn.Module):
        return source.to(device), Normalisation()
    if isinstance(source, dict):
        return load_model(source, device)
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if path.is_file():
            return load_model(path, device)
        if path.suffix.lower() in _CHECKPOINT_SUFFIXES or len(path.parts) > 1:
            raise FileNotFoundError(f"checkpoint {path} does not exist.")
        from napari_pclesr import baselines

        name = str(source)
        if name in baselines.available():
            baseline = baselines.create(name, scale=1 if scale is None else scale)
            return baseline.to(device), Normalisation()
        raise ValueError(
            f"{name!r} is neither a checkpoint file nor a baseline; baselines are "
            f"{', '.join(baselines.available())}."
        )
    raise ValueError(
        "checkpoint_or_model must be a checkpoint path or dict, a torch.nn.Module or a "
        f"baseline name, got {type(source).__name__}."
    )


def _check_tiling(tile, overlap, batch_size) -> tuple[int | None, int, int]:
    overlap = int(overlap)
    batch_size = int(batch_size)
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if tile is not None:
        tile = int(tile)
        if tile <= 2 * overlap:
            raise ValueError(
                f"tile ({tile}) must be larger than 2 × overlap ({2 * overlap}); use a larger "
                "tile or a smaller overlap."
            )
    return tile, overlap, batch_size


def _precision(half: bool | None, device: torch.device) -> torch.dtype | None:
    if half is False:
        return None
    if device.type == "cuda":
        return autocast_dtype(device)
    if half is None:
        return None
    return torch.bfloat16 if device.type == "cpu" else torch.float16


class _Runner:
    """Calls the network on a batch: inference mode, autocast, channels_last, compile."""

    def __init__(self, model, device, precision, compile_model: bool):
        self.device = device
        self.precision = precision
        self.channels_last = device.type == "cuda"
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.eager = model
        self.model = torch.compile(model) if compile_model else model
        self.scale = int(getattr(model, "scale", 1))

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device, non_blocking=True)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        try:
            output = self._forward(self.model, batch)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:
            if self.model is self.eager:
                raise
            warnings.warn(
                f"torch.compile failed ({type(exc).__name__}: {exc}); running eagerly.",
                stacklevel=3,
            )
            self.model = self.eager
            output = self._forward(self.model, batch)
        expected = (batch.shape[0], 1, batch.shape[2] * self.scale, batch.shape[3] * self.scale)
        if tuple(output.shape) != expected:
            raise ValueError(
                f"the network turned a batch of shape {tuple(batch.shape)} into "
                f"{tuple(output.shape)}, expected {expected} (scale {self.scale})."
            )
        return output.float()

    def _forward(self, model, batch):
        if self.precision is None:
            return model(batch)
        with torch.autocast(self.device.type, dtype=self.precision):
            return model(batch)


def _predict_with_retries(runner: _Runner, stack: np.ndarray, tile, overlap, batch_size):
    height, width = stack.shape[-2:]
    while True:
        try:
            return _predict(runner, stack, tile, overlap, batch_size)
        except torch.cuda.OutOfMemoryError:
            if runner.device.type == "cuda":
                torch.cuda.empty_cache()
            smaller = (tile or max(height, width)) // 2
            if smaller > 2 * overlap:
                tile = smaller
            elif batch_size > 1:
                batch_size //= 2
            else:
                raise torch.cuda.OutOfMemoryError(
                    f"out of memory even with {tile}x{tile} tiles one at a time (overlap "
                    f"{overlap}); use a smaller overlap or device='cpu'."
                ) from None
            warnings.warn(
                f"out of memory: retrying with {tile}x{tile} tiles, batch {batch_size}.",
                RuntimeWarning,
                stacklevel=3,
            )


def _predict(runner: _Runner, stack: np.ndarray, tile, overlap, batch_size) -> np.ndarray:
    """The network output for every frame of the normalised stack (T, H, W)."""
    frames, height, width = stack.shape
    scale = runner.scale
    output = np.empty((frames, height * scale, width * scale), dtype=np.float32)
    source = torch.from_numpy(stack)
    if tile is None or (tile >= height and tile >= width):
        for start in range(0, frames, batch_size):
            batch = source[start : start + batch_size, None]
            output[start : start + batch_size] = runner(batch)[:, 0].cpu().numpy()
        return output
    rows = _tile_axis(height, tile, overlap, scale)
    cols = _tile_axis(width, tile, overlap, scale)
    weights = {}
    total = torch.zeros(height * scale, width * scale, device=runner.device)
    for row_start, row_weight in rows:
        for col_start, col_weight in cols:
            weight = row_weight.to(runner.device)[:, None] * col_weight.to(runner.device)[None, :]
            weights[row_start, col_start] = weight
            total[_window(row_start, col_start, weight.shape, scale)] += weight
    tiles = list(weights)
    tile_h, tile_w = min(tile, height), min(tile, width)
    # Tiles of several frames share a batch when a frame has fewer tiles than a batch.
    frames_per_chunk = max(1, batch_size // len(tiles))
    for first_frame in range(0, frames, frames_per_chunk):
        chunk = range(first_frame, min(first_frame + frames_per_chunk, frames))
        accumulated = torch.zeros(len(chunk), height * scale, width * scale, device=runner.device)
        jobs = [(frame, r, c) for frame in chunk for r, c in tiles]
        for first in range(0, len(jobs), batch_size):
            batch_jobs = jobs[first : first + batch_size]
            batch = torch.stack(
                [source[frame, r : r + tile_h, c : c + tile_w] for frame, r, c in batch_jobs]
            )[:, None]
            predictions = runner(batch)[:, 0]
            for (frame, r, c), prediction in zip(batch_jobs, predictions, strict=True):
                window = _window(r, c, prediction.shape, scale)
                accumulated[(frame - first_frame, *window)] += prediction * weights[r, c]
        output[chunk.start : chunk.stop] = (accumulated / total).cpu().numpy()
    return output


def _window(row: int, col: int, shape, scale: int) -> tuple[slice, slice]:
    return (
        slice(row * scale, row * scale + shape[0]),
        slice(col * scale, col * scale + shape[1]),
    )


def _tile_axis(length: int, tile: int, overlap: int, scale: int) -> list[tuple[int, torch.Tensor]]:
    """Tile starts along one axis (LR pixels) and each tile's blending weights (output pixels)."""
    if length <= tile:
        return [(0, torch.ones(length * scale))]
    starts = [*range(0, length - tile, tile - overlap), length - tile]
    result = []
    for index, start in enumerate(starts):
        weight = torch.ones(tile * scale, dtype=torch.float32)
        if index > 0:
            shared = (starts[index - 1] + tile - start) * scale
            weight[:shared] *= _ramp(shared)
        if index < len(starts) - 1:
            shared = (start + tile - starts[index + 1]) * scale
            weight[tile * scale - shared :] *= _ramp(shared).flip(0)
        result.append((start, weight))
    return result


def _ramp(width: int) -> torch.Tensor:
    """0 over the first quarter of an overlap, linear to 1 over the middle half, then 1."""
    position = torch.arange(width, dtype=torch.float32) + 0.5
    return ((position - width / 4) / (width / 2)).clamp(0, 1)
