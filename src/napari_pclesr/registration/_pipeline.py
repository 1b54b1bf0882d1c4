"""The whole path from a recording to HR-hat and training pairs."""

from __future__ import annotations

import os
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_pclesr.registration._frames import BATCH_FRAMES, FrameSource
from napari_pclesr.registration._mosaic import Mosaic, hr_hat_sequence, iter_mosaics
from napari_pclesr.registration._register import Progress, iter_register
from napari_pclesr.registration._result import Registration

MODELS = ("translation", "affine")
#: A segment needs at least this many kept, distinct frames to give training pairs: with fewer,
#: HR-hat is hardly more than the frame itself.
MIN_PAIR_FRAMES = 4


@dataclass(frozen=True)
class MosaicResult:
    """What :func:`iter_mosaic` produces.

    Attributes
    ----------
    registration : Registration
    mosaics : list of Mosaic
        One per segment with kept frames (empty when every frame was rejected).
    hr_hat : napari_pclesr.io.LazyFrames
        (T, H, W) HR-hat aligned with the input, computed when read; NaN for rejected frames.
    """

    registration: Registration
    mosaics: list[Mosaic]
    hr_hat: object


def iter_mosaic(
    frames,
    mask=None,
    *,
    model: str = "translation",
    method: str = "mosaic",
    layout=None,
    signals=None,
    device="auto",
    batch_frames: int = BATCH_FRAMES,
    **register_options,
) -> Generator[Progress, None, MosaicResult]:
    """Register, optionally refine to affine maps, fuse and map back, yielding progress.

    Parameters
    ----------
    frames : array_like or lazy stack
        (T, H, W) frames of one recording.
    mask : array_like of bool, optional
        The FoV; estimated from the frames by default.
    model : {"translation", "affine"}
        ``"affine"`` refines every frame against the translation mosaic
        (:func:`~napari_pclesr.registration.refine_affine`).
    method : {"mosaic", "fibre"}
        How frames are fused (see :func:`~napari_pclesr.registration.build_mosaic`).
    layout, signals
        Fibre layout and signals for ``method="fibre"``.
    device : str or torch.device
    batch_frames : int
    **register_options
        Passed to :func:`~napari_pclesr.registration.register_sequence`.

    Returns
    -------
    MosaicResult
        (the generator's return value).
    """
    from napari_pclesr.registration._affine import iter_refine_affine

    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}.")
    source = FrameSource(frames)
    registration = yield from iter_register(
        source.frames, mask, device=device, batch_frames=batch_frames, **register_options
    )
    if not registration.kept.size:
        nothing = hr_hat_sequence(source.frames, registration, mosaics=[])
        return MosaicResult(registration, [], nothing)
    if model == "affine":
        registration = yield from iter_refine_affine(
            source.frames, registration, device=device, batch_frames=batch_frames
        )
    mosaics = yield from iter_mosaics(
        source.frames,
        registration,
        method=method,
        layout=layout,
        signals=signals,
        batch_frames=batch_frames,
    )
    hr_hat = hr_hat_sequence(source.frames, registration, mosaics=mosaics)
    return MosaicResult(registration, mosaics, hr_hat)


def write_training_pairs(
    frames,
    result: MosaicResult,
    folder: str | os.PathLike,
    name: str,
    *,
    clip_frames: int | None = 32,
    batch_frames: int = BATCH_FRAMES,
) -> list[Path]:
    """Write (LR, HR-hat) stacks that ``pclesr train --data FOLDER`` reads.

    For every segment with at least ``MIN_PAIR_FRAMES`` kept frames, its kept frames (repeated
    frames left out) go to ``FOLDER/lr/NAME_sSS_cCC.tif`` and their HR-hat to
    ``FOLDER/hr/NAME_sSS_cCC.tif``, frame for frame aligned, both float32 and 0 outside the
    field of view (which is how the training data recovers the FoV). Each segment is cut into
    clips of at most ``clip_frames`` consecutive kept frames, each its own sequence: training
    splits by sequence, so one recording gives the several sequences a train/validation/test
    split needs. Clips of one recording show neighbouring tissue, so its validation figures
    are optimistic; several recordings written into one folder give an honest split.

    Nothing is overwritten: if any target file exists, nothing is written.

    Returns
    -------
    list of pathlib.Path
        The HR-hat files written (each with its LR twin).

    Raises
    ------
    FileExistsError
        If a target file exists already.
    ValueError
        If no segment has enough kept frames.
    """
    from napari_pclesr.io import write_image

    registration = result.registration
    source = FrameSource(frames)
    if clip_frames is not None and int(clip_frames) < 2:
        raise ValueError(
            f"clip_frames must be >= 2 (or None for whole segments), got {clip_frames}."
        )
    clips = []
    for segment in range(len(registration.segments)):
        chosen = registration.kept_in(segment)
        chosen = chosen[~registration.quality.duplicate[chosen]]
        if chosen.size < MIN_PAIR_FRAMES:
            continue
        size = chosen.size if clip_frames is None else int(clip_frames)
        parts = [chosen[start : start + size] for start in range(0, chosen.size, size)]
        if len(parts) > 1 and parts[-1].size < MIN_PAIR_FRAMES:
            parts[-2] = np.concatenate([parts[-2], parts.pop()])
        clips += [(segment, index, part) for index, part in enumerate(parts)]
    if not clips:
        raise ValueError(
            f"no segment has {MIN_PAIR_FRAMES} or more kept, distinct frames, so no training "
            f"pairs can be made ({registration.summary()['kept']} of {registration.n_frames} "
            "frames kept); see the report for the reasons."
        )
    folder = Path(folder)
    targets = [
        (folder / "lr" / f"{name}_s{segment:02d}_c{index:02d}.tif", part, segment)
        for segment, index, part in clips
    ]
    existing = [
        str(path)
        for path, _, _ in targets
        for path in (path, path.parent.parent / "hr" / path.name)
        if path.exists()
    ]
    if existing:
        raise FileExistsError(
            f"{len(existing)} training file(s) exist already (e.g. {existing[0]}); nothing was "
            "written. Choose another name or folder, or remove them."
        )
    for sub in ("lr", "hr"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    mask = registration.fov_mask
    written = []
    for lr_path, part, segment in targets:
        lr = np.concatenate([batch for _, batch in source.batches(part, batch_frames)])
        hr_hat = np.concatenate(
            [
                result.hr_hat.read(part[i : i + batch_frames])
                for i in range(0, part.size, batch_frames)
            ]
        )
        extra = {"source_frames": part.tolist(), "segment": segment, "pairs_of": name}
        write_image(lr_path, np.where(mask, lr, 0.0), extra=extra)
        hr_path = folder / "hr" / lr_path.name
        write_image(hr_path, hr_hat, extra={**extra, "hr_hat": True})
        written.append(hr_path)
    return written
