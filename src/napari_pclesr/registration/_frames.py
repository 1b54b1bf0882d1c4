"""Input checks and batched reading of the frames of a recording.

Recordings can be much larger than memory, so every pass over the frames reads them in small
batches of consecutive frames; nothing here holds more than one batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from napari_pclesr._validation import as_grey_float

#: Frames read and processed together. Small enough that a batch of 576² float32 frames stays
#: well under the cache of a lazy reader (:class:`~napari_pclesr.io.LazyFrames`).
BATCH_FRAMES = 16
#: Frames spread over the recording from which a missing FoV mask is estimated.
FOV_SAMPLE_FRAMES = 8


class FrameSource:
    """A (T, H, W) recording of any kind, read as float32 in batches.

    Parameters
    ----------
    frames : array_like
        A (T, H, W) array, memory map or lazy stack (anything with ``shape`` and NumPy-style
        indexing on the first axis), or a sequence of (H, W) frames.

    Raises
    ------
    ValueError
        If there are fewer than 2 frames, the frames differ in shape, or they are not grey.
    """

    def __init__(self, frames):
        if isinstance(frames, (list, tuple)):
            shapes = [np.shape(frame) for frame in frames]
            for index, shape in enumerate(shapes):
                if shape != shapes[0]:
                    raise ValueError(
                        f"frame {index} has shape {shape} but frame 0 has shape {shapes[0]}; all "
                        "frames of a sequence must have the same shape (crop or resize them "
                        "first)."
                    )
            frames = np.stack([np.asarray(frame) for frame in frames]) if frames else None
        shape = tuple(np.shape(frames)) if frames is not None else (0,)
        if len(shape) == 4 and shape[-1] in (3, 4):
            raise ValueError(
                f"the frames look like RGB(A) (shape {shape}); convert them to grey first, e.g. "
                "with skimage.color.rgb2gray."
            )
        if len(shape) == 2:
            raise ValueError(
                f"got a single frame of shape {shape}; registration needs a sequence (T, H, W) "
                "of at least 2 frames."
            )
        if len(shape) != 3:
            raise ValueError(f"frames must be a (T, H, W) stack, got shape {shape}.")
        if shape[0] < 2:
            raise ValueError(
                f"the sequence has {shape[0]} frame(s); registration needs at least 2 frames "
                "that overlap."
            )
        if min(shape[1:]) < 16:
            raise ValueError(f"frames of {shape[1]}x{shape[2]} pixels are too small to register.")
        self.frames = frames
        self.shape = shape

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def frame_shape(self) -> tuple[int, int]:
        return self.shape[1], self.shape[2]

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """The frames at sorted ``indices`` as one float32 array (T', H, W)."""
        indices = np.asarray(indices, dtype=np.intp)
        reader = getattr(self.frames, "read", None)
        if reader is not None:
            batch = reader(indices)
        elif indices.size and np.array_equal(indices, np.arange(indices[0], indices[-1] + 1)):
            batch = self.frames[int(indices[0]) : int(indices[-1]) + 1]  # a view for arrays
        else:
            batch = self.frames[indices]
        batch = as_grey_float(batch, name="frames", ndims=(3,))
        # Read-only memory maps are copied (a batch is small): torch wants writable arrays.
        return batch if batch.flags.writeable else batch.copy()

    def batches(
        self, indices: Sequence[int] | None = None, batch_frames: int = BATCH_FRAMES
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(indices, frames)`` for consecutive batches of ``indices`` (default all)."""
        indices = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.intp)
        for start in range(0, indices.size, batch_frames):
            chosen = indices[start : start + batch_frames]
            yield chosen, self.read(chosen)

    def fov_mask(self, mask=None) -> np.ndarray:
        """Check a given FoV mask, or estimate one from frames spread over the recording."""
        if mask is None:
            from napari_pclesr.io.fov import estimate_fov

            sample = np.unique(np.linspace(0, len(self) - 1, FOV_SAMPLE_FRAMES).round())
            mask = estimate_fov(self.read(sample.astype(np.intp))).mask
        mask = np.asarray(mask)
        if mask.shape != self.frame_shape:
            raise ValueError(
                f"the FoV mask has shape {mask.shape} but the frames are {self.frame_shape}; give "
                "a mask of the frame shape (or none, to estimate it)."
            )
        if mask.dtype != bool:
            mask = mask != 0
        if mask.mean() < 0.05:
            raise ValueError(
                f"the FoV mask covers only {100 * mask.mean():.1f}% of the frame; give the mask "
                "of the imaging area (True inside)."
            )
        return mask
