"""Inference: run a trained network (or a baseline) on frames, in memory or streamed.

* :class:`SuperResolver` loads a network once and super-resolves any number of stacks:
  ``resolver(frames)`` returns an array, ``resolver.iter_batches(frames)`` yields the output
  batch by batch (with progress) while reading the input batch by batch, so a recording of
  any length is processed in constant memory.
* :func:`super_resolve` is the one-call form for frames in memory.
* :func:`super_resolve_recording` streams a recording file (``.mkt``, video, TIFF, folder of
  frames) into a float32 TIFF that is written as the frames come.

Each frame is normalised as in training, by the checkpoint's :class:`Normalisation` (an
affine map of each frame set by its own FoV pixels, see :mod:`napari_pclesr.data.patches`), the
network runs on batches of frames or of tiles, and the output is mapped back to the input's
intensity range with the exact inverse of that map. A frame that is constant inside the field
of view (a blank or all-zero frame) holds nothing to resolve: it is returned unchanged.

Tiling
------
Each tile of ``tile`` × ``tile`` input pixels is run with a *halo* of ``overlap`` pixels of
context on every side that has a neighbour, and only its centre is kept; the centres cover the
frame without overlapping. When the halo is at least the network's receptive-field radius
(``model.receptive_field``, derived from its layers, see
:func:`napari_pclesr.models.receptive_field_radius`), every kept pixel sees exactly what it
sees in the whole frame, so tiled output equals untiled output up to float rounding. That
radius is the default halo; a smaller one gives seams and warns (:class:`SeamWarning`). A
method that needs the whole frame (``receptive_field`` None, e.g. Wiener deconvolution) is
never tiled.

Memory
------
Frames are read, normalised, run and returned ``batch_size`` frames at a time (or enough
frames to fill a batch of tiles), so memory does not grow with the number of frames. The
batch is also capped so that one forward pass needs at most about :data:`PASS_MEMORY_BYTES`
(half the free memory on CUDA), estimated from the network's widest layer; a larger request
is reduced with a warning. On CUDA out-of-memory, the frames are processed again with tiles
of half the size (starting from half the frame), then with smaller batches, before giving up.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from napari_pclesr._validation import as_grey_float, check_grey_shape
from napari_pclesr.data.patches import Normalisation
from napari_pclesr.devices import autocast_dtype, select_device

__all__ = [
    "InferenceProgress",
    "RecordingResult",
    "SeamWarning",
    "SuperResolvedBatch",
    "SuperResolver",
    "resolve_model",
    "super_resolve",
    "super_resolve_recording",
]

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
#: Largest estimated memory of one forward pass on the CPU (and MPS); on CUDA half the free
#: memory is used. Larger batches bring no speed on a CPU.
PASS_MEMORY_BYTES = 2 * 2**30
#: Tensors of a layer's width alive at once in a forward pass (input, output, one skip).
_TENSORS_PER_PASS = 3
#: Values per input pixel of the widest network that needs no memory estimate.
_WIDEST_ASSUMED = 1024
#: Marks a model without a ``receptive_field`` of its own.
_DERIVE = object()
#: Frames per step when the default FoV of an in-memory stack is computed.
_FOV_BATCH_FRAMES = 64


class SeamWarning(UserWarning):
    """The tile halo is smaller than the network's receptive field: tiles will show seams."""


@dataclass(frozen=True)
class InferenceProgress:
    """How far a run is: ``done`` of ``total`` frames after ``elapsed_s`` seconds."""

    done: int
    total: int
    elapsed_s: float

    @property
    def frames_per_s(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else float("inf")

    @property
    def eta_s(self) -> float:
        """Seconds left at the rate so far."""
        if self.done == 0:
            return float("inf")
        return (self.total - self.done) * self.elapsed_s / self.done


@dataclass(frozen=True)
class SuperResolvedBatch:
    """Consecutive output frames ``start`` to ``start + len(frames) − 1`` of a stack."""

    start: int
    frames: np.ndarray
    progress: InferenceProgress

    @property
    def stop(self) -> int:
        return self.start + len(self.frames)


@dataclass(frozen=True)
class RecordingResult:
    """What :func:`super_resolve_recording` did."""

    source: Path
    output: Path
    n_frames: int
    frame_shape: tuple[int, int]
    output_shape: tuple[int, int]
    elapsed_s: float

    @property
    def frames_per_s(self) -> float:
        return self.n_frames / self.elapsed_s if self.elapsed_s > 0 else float("inf")


class _Span(NamedTuple):
    """One tile along an axis: it starts at ``start``; its pixels ``keep_from`` to
    ``keep_to − 1`` (frame coordinates) are kept."""

    start: int
    keep_from: int
    keep_to: int


class SuperResolver:
    """A network or baseline, loaded once, that super-resolves frames in memory or streamed.

    Parameters
    ----------
    checkpoint_or_model : str, os.PathLike, dict or torch.nn.Module
        A checkpoint file, a loaded checkpoint dict, a network or baseline module, or the name
        of a baseline (``napari_pclesr.baselines.available()``). Modules and baselines use the
        default :class:`Normalisation`.
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``. A given module is moved
        there.
    tile : int, optional
        Run tiles of this size (input pixels, halo included) instead of whole frames, e.g. for
        large frames or limited GPU memory. ``None`` runs whole frames (and tiles only after a
        CUDA out-of-memory error).
    overlap : int, optional
        The halo: input pixels of context kept around each tile's centre (neighbouring tiles
        share ``2 · overlap`` pixels). Default: the network's receptive-field radius, which
        makes tiled output equal to untiled output. A smaller value warns
        (:class:`SeamWarning`). ``tile`` must exceed ``2 * overlap``.
    batch_size : int
        Frames (or tiles) per forward pass, at most; capped to fit the memory of one pass.
    half : bool, optional
        Mixed precision. ``None``: on for CUDA (bfloat16 where supported, else float16), off
        elsewhere. ``True`` on the CPU uses bfloat16.
    compile : bool
        Run the network through ``torch.compile`` (falls back to eager mode with a warning if
        compilation fails).
    scale : int, optional
        Upscaling factor of a baseline given by name (default 1). For a checkpoint or module
        it must match the network's scale if given.

    Attributes
    ----------
    model : torch.nn.Module
        The network, in evaluation mode while frames are processed.
    normalisation : Normalisation
        How frames are mapped into the network's units and back.
    scale : int
        Upscaling factor s: output frames are (s·H, s·W).
    receptive_field : int or None
        Receptive-field radius in input pixels; None for a method that needs the whole
        frame.
    label : str
        A short name of the model (checkpoint file name, baseline or class name).

    Raises
    ------
    ValueError
        For bad tile settings or model names, or a tile requested for a whole-frame method.
    FileNotFoundError, CheckpointError
        For a missing or unusable checkpoint.

    Examples
    --------
    >>> resolver = SuperResolver("run/best.pt", tile=256)  # doctest: +SKIP
    >>> for batch in resolver.iter_batches(lazy_frames, fov_mask=meta["fov_mask"]):
    ...     save(batch.start, batch.frames)  # doctest: +SKIP
    """

    def __init__(
        self,
        checkpoint_or_model,
        *,
        device: str | torch.device = "auto",
        tile: int | None = None,
        overlap: int | None = None,
        batch_size: int = 8,
        half: bool | None = None,
        compile: bool = False,
        scale: int | None = None,
    ):
        tile, overlap, batch_size = _check_settings(tile, overlap, batch_size)
        self.device = select_device(device)
        self.model, self.normalisation = resolve_model(checkpoint_or_model, self.device, scale)
        self.scale = int(getattr(self.model, "scale", 1))
        self.label = _label(checkpoint_or_model, self.model)
        self.receptive_field, unknown_reason = _receptive_field(self.model)
        self._halo = self._choose_halo(overlap, unknown_reason, tile is not None)
        if tile is not None and tile <= 2 * self._halo:
            raise ValueError(
                f"tile ({tile}) must be larger than 2 × the halo ({self._halo} pixels"
                f"{', the receptive-field radius of ' + self.label if overlap is None else ''}"
                f"); use a tile above {2 * self._halo} or leave the tile out."
            )
        self._tile = tile
        self._requested_batch_size = self._batch_size = batch_size
        self._runner = _Runner(self.model, self.device, _precision(half, self.device), compile)
        self._floats_per_pixel = None

    def _choose_halo(self, overlap, unknown_reason, tiling: bool) -> int | None:
        """The halo tiles get, or None when this model cannot be tiled."""
        radius = self.receptive_field
        if unknown_reason is None and radius is None:
            if tiling:
                raise ValueError(
                    f"{self.label} needs the whole frame at once (it has no finite receptive "
                    "field), so it cannot be tiled; leave the tile out."
                )
            return None
        if overlap is None:
            if unknown_reason is not None and tiling:
                raise ValueError(
                    f"the receptive field of {self.label} is unknown ({unknown_reason}); give "
                    "the overlap (halo) in pixels, or leave the tile out."
                )
            return radius
        if radius is not None and overlap < radius and tiling:
            warnings.warn(
                f"a tile halo of {overlap} pixels is smaller than the receptive-field radius "
                f"of {self.label} ({radius} pixels): the result will show seams between tiles. "
                f"Leave the overlap out to use {radius}.",
                SeamWarning,
                stacklevel=3,
            )
        return overlap

    # -- public -------------------------------------------------------------------------------

    def __call__(self, frames, *, fov_mask=None, name: str = "frames") -> np.ndarray:
        """Super-resolve one frame (H, W) or a stack (T, H, W) and return the whole result.

        Returns
        -------
        numpy.ndarray, float32
            (s·H, s·W) or (T, s·H, s·W), in the input's intensity range, 0 outside the FoV.
        """
        stack, single = _as_stack(frames, name)
        output = np.empty(
            (stack.shape[0], stack.shape[1] * self.scale, stack.shape[2] * self.scale),
            np.float32,
        )
        for batch in self.iter_batches(stack, fov_mask=fov_mask, name=name):
            output[batch.start : batch.stop] = batch.frames
        return output[0] if single else output

    def iter_batches(
        self, frames, *, fov_mask=None, name: str = "frames"
    ) -> Iterator[SuperResolvedBatch]:
        """Super-resolve a stack batch by batch, reading only the frames each batch needs.

        The frames and settings are checked at once; the returned iterator then reads,
        processes and yields consecutive batches of output frames, in order. Memory stays
        that of a batch, whatever the length of the stack.

        Parameters
        ----------
        frames : array_like or lazy stack, (T, H, W) or (H, W)
            Grey LR frames in any intensity units: an array, a memory map or a
            :class:`~napari_pclesr.io.LazyFrames` (as :func:`napari_pclesr.io.read_sequence`
            returns).
        fov_mask : bool array (H, W), optional
            The field of view; output pixels outside it are 0. By default the pixels that are
            nonzero in at least one frame: every frame of an in-memory array, a few frames
            spread over a lazy or memory-mapped stack (so it is never read twice). When no
            pixel is nonzero, the whole frame.
        name : str
            How the frames are called in error messages (e.g. the file they come from).

        Returns
        -------
        iterator of SuperResolvedBatch
            ``start``, ``frames`` ((n, s·H, s·W) float32) and ``progress`` of each batch.

        Raises
        ------
        ValueError
            For frames that are not grey images or hold NaN (naming ``name`` and the frames),
            or a mask of the wrong shape or empty.
        """
        stack, _ = _as_stack(frames, name)
        height, width = stack.shape[1:]
        if fov_mask is None:
            mask = _default_fov(stack)
        else:
            mask = np.asarray(fov_mask, dtype=bool)
            if mask.shape != (height, width):
                raise ValueError(
                    f"fov_mask has shape {mask.shape} but the frames of {name} are "
                    f"{height}x{width}."
                )
            if not mask.any():
                raise ValueError(
                    "the field of view is empty (fov_mask is all False); nothing to super-resolve."
                )
        return self._stream(stack, mask, name)

    # -- streaming ----------------------------------------------------------------------------

    def _stream(self, stack, mask: np.ndarray, name: str) -> Iterator[SuperResolvedBatch]:
        from napari_pclesr.io.lazy import iter_frame_batches

        total = stack.shape[0]
        chunk = self._frames_per_chunk(stack.shape[1:], total)
        start_time = time.perf_counter()
        start = 0
        for raw in iter_frame_batches(stack, chunk):
            stop = start + len(raw)
            where = f"{name} (frames {start}–{stop - 1})" if total > 1 else name
            batch = as_grey_float(raw, name=where, ndims=(3,))
            normalised, low, high = self.normalisation.normalise(batch, mask)
            output = self._predict_with_retries(normalised)
            # A frame constant inside the FoV is returned as it is: the network's answer to a
            # blank input is not information about the sample. (Its `low` is that constant.)
            inside = batch[:, mask]
            output[inside.min(axis=1) == inside.max(axis=1)] = 0.0
            restored = self.normalisation.denormalise(output, low, high, mask)
            progress = InferenceProgress(stop, total, time.perf_counter() - start_time)
            yield SuperResolvedBatch(start, restored, progress)
            start = stop

    def _frames_per_chunk(self, frame_shape: tuple[int, int], total: int) -> int:
        """Frames read and processed together: enough to fill one batch of frames or tiles,
        with the batch capped to fit the memory of one forward pass."""
        height, width = frame_shape
        tiled = self._tile is not None and (self._tile < height or self._tile < width)
        tiles_per_frame = 1
        pass_pixels = height * width
        if tiled:
            rows = _tile_spans(height, self._tile, self._halo)
            cols = _tile_spans(width, self._tile, self._halo)
            tiles_per_frame = len(rows) * len(cols)
            pass_pixels = min(self._tile, height) * min(self._tile, width)
        wanted = min(self._requested_batch_size, total * tiles_per_frame)
        self._batch_size = self._batch_that_fits(
            wanted, pass_pixels, "tiles" if tiled else "frames"
        )
        return max(1, self._batch_size // tiles_per_frame)

    def _batch_that_fits(self, wanted: int, pass_pixels: int, what: str) -> int:
        """``wanted``, or the largest batch whose forward pass fits the memory budget."""
        if self.device.type == "cuda":
            budget = torch.cuda.mem_get_info(self.device)[0] // 2
        else:
            budget = PASS_MEMORY_BYTES
        # Probing the network's width costs a forward pass; skip it when even a network of
        # _WIDEST_ASSUMED channels would fit.
        if wanted * pass_pixels * _TENSORS_PER_PASS * 4 * _WIDEST_ASSUMED <= budget:
            return wanted
        if self._floats_per_pixel is None:
            self._floats_per_pixel = _widest_layer(self.model, self.device)
        pass_bytes = _TENSORS_PER_PASS * 4 * self._floats_per_pixel * pass_pixels
        fitting = max(1, int(budget // pass_bytes))
        if wanted <= fitting:
            return wanted
        warnings.warn(
            f"a batch of {wanted} {what} of {pass_pixels / 1e6:.2g} Mpixel would need about "
            f"{wanted * pass_bytes / 2**30:.2g} GiB per forward pass of {self.label}; using "
            f"batches of {fitting}.",
            RuntimeWarning,
            stacklevel=5,
        )
        return fitting

    # -- prediction ---------------------------------------------------------------------------

    def _predict_with_retries(self, stack: np.ndarray) -> np.ndarray:
        height, width = stack.shape[-2:]
        was_training = self.model.training
        self.model.eval()
        try:
            while True:
                try:
                    return self._predict(stack)
                except torch.cuda.OutOfMemoryError:
                    self._shrink_after_out_of_memory(max(height, width))
        finally:
            self.model.train(was_training)

    def _shrink_after_out_of_memory(self, frame_size: int) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        smaller = (self._tile or frame_size) // 2
        if self._halo is not None and smaller > 2 * self._halo:
            self._tile = smaller
        elif self._batch_size > 1:
            self._batch_size //= 2
        else:
            tiles = "whole frames" if self._tile is None else f"{self._tile}x{self._tile} tiles"
            raise torch.cuda.OutOfMemoryError(
                f"out of memory even with {tiles} one at a time (halo {self._halo}); use "
                "device='cpu'."
            ) from None
        warnings.warn(
            f"out of memory: retrying with {self._tile}x{self._tile} tiles, batch "
            f"{self._batch_size}.",
            RuntimeWarning,
            stacklevel=5,
        )

    def _predict(self, stack: np.ndarray) -> np.ndarray:
        """The network output for every frame of the normalised stack (T, H, W)."""
        frames, height, width = stack.shape
        scale, batch_size, tile = self.scale, self._batch_size, self._tile
        output = np.empty((frames, height * scale, width * scale), dtype=np.float32)
        source = torch.from_numpy(stack)
        if tile is None or (tile >= height and tile >= width):
            for start in range(0, frames, batch_size):
                batch = source[start : start + batch_size, None]
                output[start : start + batch_size] = self._runner(batch)[:, 0].cpu().numpy()
            return output
        rows = _tile_spans(height, tile, self._halo)
        cols = _tile_spans(width, tile, self._halo)
        tile_h, tile_w = min(tile, height), min(tile, width)
        jobs = [(frame, row, col) for frame in range(frames) for row in rows for col in cols]
        for first in range(0, len(jobs), batch_size):
            group = jobs[first : first + batch_size]
            batch = torch.stack(
                [
                    source[frame, row.start : row.start + tile_h, col.start : col.start + tile_w]
                    for frame, row, col in group
                ]
            )[:, None]
            predictions = self._runner(batch)[:, 0].cpu().numpy()
            for (frame, row, col), prediction in zip(group, predictions, strict=True):
                output[frame, _kept(row, scale), _kept(col, scale)] = prediction[
                    _kept(row, scale, relative=True), _kept(col, scale, relative=True)
                ]
        return output


def super_resolve(frames, checkpoint_or_model, *, fov_mask=None, **options) -> np.ndarray:
    """Super-resolve one frame or a stack of frames.

    Parameters
    ----------
    frames : array_like, (H, W) or (T, H, W)
        Grey LR frame(s), in any intensity units.
    checkpoint_or_model : str, os.PathLike, dict or torch.nn.Module
        A checkpoint, a module or a baseline name, as for :class:`SuperResolver`.
    fov_mask : bool array (H, W), optional
        The field of view; by default the pixels that are nonzero in at least one frame (see
        :meth:`SuperResolver.iter_batches`). Output pixels outside it are 0.
    **options
        ``device``, ``tile``, ``overlap``, ``batch_size``, ``half``, ``compile`` and
        ``scale``, as for :class:`SuperResolver`.

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
    return SuperResolver(checkpoint_or_model, **options)(frames, fov_mask=fov_mask)


def super_resolve_recording(
    source: str | os.PathLike,
    output: str | os.PathLike,
    model,
    *,
    frames: slice | range | None = None,
    overwrite: bool = False,
    progress: Callable[[InferenceProgress], None] | None = None,
    **options,
) -> RecordingResult:
    """Super-resolve a recording file into a float32 TIFF, streaming both.

    Frames are read, super-resolved and appended to the TIFF a batch at a time, so memory
    does not depend on the length of the recording. The TIFF is written under a temporary
    name and renamed at the end: a failed or interrupted run leaves no partial file. Its
    metadata keeps the frame rate, the pixel size and FoV circle (scaled to the output grid),
    the model and the source.

    Parameters
    ----------
    source : str or os.PathLike
        Anything :func:`napari_pclesr.io.read_sequence` opens (``.mkt``, video, TIFF, folder
        of frames). The reader's FoV estimate is used as the field of view.
    output : str or os.PathLike
        The ``.tif``/``.tiff`` file to write.
    model : SuperResolver or str or os.PathLike or dict or torch.nn.Module
        A ready :class:`SuperResolver` (reuse one for many files), or what it accepts; then
        ``**options`` are its keyword arguments.
    frames : slice or range, optional
        The frames to process (all by default).
    overwrite : bool
        Replace ``output`` if it exists; otherwise an existing file is an error.
    progress : callable, optional
        Called with an :class:`InferenceProgress` after each batch.

    Returns
    -------
    RecordingResult

    Raises
    ------
    FileExistsError
        If ``output`` exists and ``overwrite`` is False.
    ValueError, napari_pclesr.io.PclesrFileError
        For unreadable recordings, NaN frames or an empty frame range (naming the file).
    """
    from napari_pclesr.io import read_sequence
    from napari_pclesr.io.lazy import select_frames
    from napari_pclesr.io.tiff import write_image_batches

    source, output = Path(source), Path(output)
    if isinstance(model, SuperResolver):
        if options:
            raise TypeError(f"options {sorted(options)} cannot change a ready SuperResolver.")
        resolver = model
    else:
        resolver = SuperResolver(model, **options)
    if output.exists() and not overwrite:
        raise FileExistsError(
            f"{output} already exists; choose another name or allow overwriting it."
        )
    recording, meta = read_sequence(source)
    try:
        indices = range(len(recording))[frames if frames is not None else slice(None)]
        if len(indices) == 0:
            raise ValueError(
                f"{source}: the frame range selects none of its {len(recording)} frames."
            )
        selected = select_frames(recording, indices)
        height, width = (int(n) for n in recording.shape[1:])
        start_time = time.perf_counter()
        batches = resolver.iter_batches(selected, fov_mask=meta["fov_mask"], name=str(source))

        def output_frames():
            for batch in batches:
                if progress is not None:
                    progress(batch.progress)
                yield batch.frames

        scale = resolver.scale
        out_shape = (height * scale, width * scale)
        circle, pixel_size = meta.get("fov_circle"), meta.get("pixel_size_um")
        write_image_batches(
            output,
            output_frames(),
            (len(indices), *out_shape) if len(indices) > 1 else out_shape,
            frame_rate=meta.get("frame_rate"),
            pixel_size_um=None if pixel_size is None else pixel_size / scale,
            # Pixel centres are at integer coordinates, so a centre c maps to (c + 0.5)·s − 0.5.
            fov_circle=None
            if circle is None
            else (
                (circle[0] + 0.5) * scale - 0.5,
                (circle[1] + 0.5) * scale - 0.5,
                circle[2] * scale,
            ),
            model=resolver.label,
            extra={
                "source": os.fspath(source),
                "source_frames": [indices.start, indices.stop, indices.step],
            },
        )
    finally:
        close = getattr(recording, "close", None)
        if close is not None:
            close()
    return RecordingResult(
        source, output, len(indices), (height, width), out_shape, time.perf_counter() - start_time
    )


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
    from napari_pclesr import pretrained
    from napari_pclesr.train.checkpoint import load_model

    source = pretrained.resolve(source)
    if isinstance(source, torch.nn.Module):
        return source.to(device), Normalisation()
    if isinstance(source, dict):
        return load_model(source, device)
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if path.is_file():
            return load_model(path, device)
        if path.is_dir():
            inside = sorted(p.name for p in path.glob("*") if p.suffix in _CHECKPOINT_SUFFIXES)
            hint = f" It holds {', '.join(inside)}." if inside else ""
            raise IsADirectoryError(
                f"checkpoint {path} is a folder, not a checkpoint file; give a file in it, "
                f"e.g. {path / 'best.pt'}.{hint}"
            )
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


def _label(source, model: torch.nn.Module) -> str:
    if isinstance(source, str | os.PathLike):
        return Path(source).name
    if isinstance(source, dict):
        return str(source.get("model", {}).get("name") or "checkpoint")
    return str(getattr(model, "name", None) or getattr(model, "arch", None) or type(model).__name__)


def _receptive_field(model: torch.nn.Module) -> tuple[int | None, str | None]:
    """The model's receptive-field radius (None: whole frame), or None and why it is unknown.

    A model's own ``receptive_field`` wins; otherwise it is derived from the layers.
    """
    from napari_pclesr.models import receptive_field_radius

    try:
        radius = getattr(model, "receptive_field", _DERIVE)
        if radius is _DERIVE:
            radius = receptive_field_radius(model)
    except TypeError as exc:
        return None, str(exc)
    return (None if radius is None else int(radius)), None


def _widest_layer(model: torch.nn.Module, device: torch.device, size: int = 16) -> float:
    """The most values per input pixel that a layer of ``model`` outputs, probed on a small
    input (at least 16, for methods whose work arrays no layer shows)."""
    widest = 16.0

    def record(module, inputs, output):
        nonlocal widest
        if isinstance(output, torch.Tensor):
            widest = max(widest, output.numel() / size**2)

    handles = [module.register_forward_hook(record) for module in model.modules()]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 1, size, size, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return widest


def _as_stack(frames, name: str):
    """``frames`` as a (T, H, W) array-like (lazy stacks stay lazy) and whether it was 2-D."""
    if not all(hasattr(frames, attribute) for attribute in ("shape", "dtype", "__getitem__")):
        frames = np.asarray(frames)
    check_grey_shape(frames.shape, frames.dtype, name=name)
    if len(frames.shape) == 2:
        return np.asarray(frames)[None], True
    return frames, False


def _default_fov(stack) -> np.ndarray:
    """Pixels nonzero in at least one frame (of all frames in memory, of a bounded sample of a
    lazy or memory-mapped stack), or the whole frame if there are none."""
    from napari_pclesr.io.lazy import memory_map_of
    from napari_pclesr.io.sequence import sample_frames

    if isinstance(stack, np.ndarray) and memory_map_of(stack) is None:
        mask = np.zeros(stack.shape[1:], dtype=bool)
        for start in range(0, stack.shape[0], _FOV_BATCH_FRAMES):
            mask |= np.any(stack[start : start + _FOV_BATCH_FRAMES] != 0, axis=0)
    else:
        mask = np.any(sample_frames(stack) != 0, axis=0)
    return mask if mask.any() else np.ones_like(mask)


def _check_settings(tile, overlap, batch_size) -> tuple[int | None, int | None, int]:
    batch_size = _whole_number(batch_size, "batch_size", minimum=1)
    if overlap is not None:
        overlap = _whole_number(overlap, "overlap", minimum=0)
    if tile is not None:
        tile = _whole_number(tile, "tile", minimum=1)
        if overlap is not None and tile <= 2 * overlap:
            raise ValueError(
                f"tile ({tile}) must be larger than 2 × overlap ({2 * overlap}); use a larger "
                "tile or a smaller overlap."
            )
    return tile, overlap, batch_size


def _whole_number(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}.")
    return int(value)


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


def _tile_spans(length: int, tile: int, halo: int) -> list[_Span]:
    """Tiles along one axis: each is ``tile`` long and keeps its pixels that lie at least
    ``halo`` from its inner edges (the frame border needs no halo); the kept parts cover the
    axis exactly once."""
    if length <= tile:
        return [_Span(0, 0, length)]
    spans = []
    kept = 0
    while kept < length:
        start = min(max(kept - halo, 0), length - tile)
        end = start + tile
        keep_to = length if end == length else end - halo
        spans.append(_Span(start, kept, keep_to))
        kept = keep_to
    return spans


def _kept(span: _Span, scale: int, relative: bool = False) -> slice:
    """The output pixels kept from a tile, in frame coordinates or relative to the tile."""
    offset = span.start if relative else 0
    return slice((span.keep_from - offset) * scale, (span.keep_to - offset) * scale)
