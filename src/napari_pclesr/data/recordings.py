"""LR recordings without HR: the training data of the unsupervised cycle objective.

:class:`LRRecordings` holds one (T, H, W) stack per recording with its field of view, read from
any file :func:`napari_pclesr.io.read_sequence` opens (Cellvizio ``.mkt``, video exports, TIFF
stacks, folders of frames) or from a folder of such files. It splits like
:class:`~napari_pclesr.data.PairedSequences`: by recording when there are enough of them, and
otherwise (one or two recordings) into contiguous blocks of frames, the earliest for training,
so that the validation frames are the ones farthest from the training frames in time.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_pclesr.data.patches import _as_stack, patch_corners
from napari_pclesr.data.splits import DEFAULT_FRACTIONS, split_sequences

__all__ = ["RECORDING_SUFFIXES", "LRRecordings"]

#: Files of a folder that are each read as one recording.
RECORDING_SUFFIXES = (".mkt", ".mp4", ".mpg", ".mpeg", ".avi", ".tif", ".tiff")


class LRRecordings:
    """LR recordings (no HR), each with its field of view.

    Parameters
    ----------
    lr : sequence of arrays (T, H, W)
        The recordings, in their own units (they are normalised per frame for training).
    fov_masks : sequence of bool arrays (H, W)
    names : sequence of str
    fov_circles : sequence of (row, col, radius) or None, optional
        The circular field of view of each recording where known (used to place a synthetic
        fibre bundle).
    sources : sequence of int, optional
        For each entry, the index of the recording it comes from in the collection that was
        split or subset (its own index by default), so that per-recording settings such as a
        fibre layout follow the frames into every part.
    """

    simulated = False

    def __init__(
        self,
        lr: Sequence,
        fov_masks: Sequence,
        names: Sequence[str],
        fov_circles: Sequence | None = None,
        sources: Sequence[int] | None = None,
    ):
        self._lr = [
            _as_stack(stack, f"recording {name}") for stack, name in zip(lr, names, strict=True)
        ]
        if not self._lr:
            raise ValueError("give at least one LR recording.")
        self.names = tuple(names)
        self._masks = [np.asarray(mask, dtype=bool) for mask in fov_masks]
        if len(self._masks) != len(self._lr):
            raise ValueError(
                f"{len(self._masks)} FoV masks were given for {len(self._lr)} recordings."
            )
        for stack, mask, name in zip(self._lr, self._masks, self.names, strict=True):
            if mask.shape != stack.shape[-2:]:
                raise ValueError(
                    f"the FoV mask of {name} is {mask.shape} but its frames are {stack.shape[-2:]}."
                )
        self._circles = list(fov_circles) if fov_circles is not None else [None] * len(self._lr)
        self.sources = tuple(range(len(self._lr)) if sources is None else (int(i) for i in sources))

    @classmethod
    def open(cls, path, frame_step: int = 1) -> LRRecordings:
        """Read a recording, or every recording in a folder (one per file, sorted by name).

        A folder that holds ``.mkt``, video or TIFF files gives one recording per file; a folder
        of PNG frames is one recording. Every ``frame_step``-th frame is kept.

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        napari_pclesr.io.PclesrFileError
            For an unreadable file (the message names it).
        ValueError
            For a folder without recordings.
        """
        from napari_pclesr.io import read_sequence

        path = Path(path)
        files = [path]
        if path.is_dir():
            files = sorted(
                p
                for p in path.iterdir()
                if p.is_file()
                and p.suffix.lower() in RECORDING_SUFFIXES
                and not p.name.startswith(".")
            )
            if not files:
                files = [path]  # a folder of PNG frames, or nothing read_sequence accepts
        stacks, masks, circles, names = [], [], [], []
        for file in files:
            frames, meta = read_sequence(file)
            stacks.append(np.asarray(frames[::frame_step]))
            masks.append(meta["fov_mask"])
            circles.append(meta.get("fov_circle"))
            names.append(file.stem if file.is_file() else file.name)
        return cls(stacks, masks, names, circles)

    # -- access ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._lr)

    def __repr__(self) -> str:
        frames = sum(len(stack) for stack in self._lr)
        return f"LRRecordings({len(self)} recordings, {frames} frames)"

    def lr(self, index: int, **_simulation_options) -> np.ndarray:
        """The (T, H, W) float32 frames of a recording (simulation options are ignored)."""
        return self._lr[index]

    def hr(self, index: int) -> None:
        """Recordings have no HR."""
        return None

    def fov_mask(self, index: int) -> np.ndarray:
        """The (H, W) field of view of a recording."""
        return self._masks[index]

    def fov_circle(self, index: int):
        """The (row, col, radius) of a recording's circular FoV, or None when unknown."""
        return self._circles[index]

    def lr_shape(self, index: int) -> tuple[int, int]:
        """The (H, W) of a recording's frames."""
        return self._lr[index].shape[-2:]

    def patch_corners(self, index: int, patch_size: int) -> np.ndarray:
        """Corners of the FoV patches of a recording; see :func:`~napari_pclesr.data.patches
        .patch_corners`."""
        return patch_corners(self._masks[index], patch_size)

    def count_patches(self, patch_size: int) -> int:
        """How many patches all the frames yield at this patch size."""
        return sum(
            len(self.patch_corners(i, patch_size)) * len(self._lr[i]) for i in range(len(self))
        )

    def fibre_layout(self, index: int) -> None:
        """Recordings come without a fibre layout."""
        return None

    # -- splits ---------------------------------------------------------------------------------

    def subset(self, indices) -> LRRecordings:
        """The recordings at ``indices``."""
        indices = [int(i) for i in indices]
        return LRRecordings(
            [self._lr[i] for i in indices],
            [self._masks[i] for i in indices],
            [self.names[i] for i in indices],
            [self._circles[i] for i in indices],
            [self.sources[i] for i in indices],
        )

    def split(self, fractions=DEFAULT_FRACTIONS, seed: int = 0):
        """(train, val, test) recordings: by recording when every part with a positive fraction
        can get one, otherwise by contiguous blocks of each recording's frames (train first).

        Raises
        ------
        ValueError
            If a recording has too few frames to give each part one.
        """
        shares = np.asarray(fractions, dtype=np.float64)
        if len(self) >= np.count_nonzero(shares):
            parts = split_sequences(len(self), fractions, seed)
            return tuple(self.subset(part) for part in (parts.train, parts.val, parts.test))
        blocks: list[list] = [[], [], []]
        for index, stack in enumerate(self._lr):
            bounds = _block_bounds(len(stack), shares, self.names[index])
            for part, (start, stop) in enumerate(itertools.pairwise(bounds)):
                if stop > start:
                    blocks[part].append((index, start, stop))
        parts = []
        for part, label in zip(blocks, ("train", "val", "test"), strict=True):
            parts.append(
                LRRecordings(
                    [self._lr[i][start:stop] for i, start, stop in part],
                    [self._masks[i] for i, _, _ in part],
                    [
                        f"{self.names[i]} [{label} frames {start}-{stop - 1}]"
                        for i, start, stop in part
                    ],
                    [self._circles[i] for i, _, _ in part],
                    [self.sources[i] for i, _, _ in part],
                )
                if part
                else None
            )
        return tuple(parts)


def _block_bounds(n_frames: int, shares: np.ndarray, name: str) -> np.ndarray:
    """Frame indices where the train, val and test blocks start (and the end)."""
    needed = int(np.count_nonzero(shares))
    if n_frames < needed:
        raise ValueError(
            f"recording {name} has {n_frames} frame(s), too few to split into {needed} parts; "
            "give more frames (or a smaller frame_step) or more recordings."
        )
    counts = np.floor(shares * n_frames).astype(int)
    counts[(shares > 0) & (counts == 0)] = 1
    counts[0] = n_frames - counts[1:].sum()
    return np.concatenate([[0], np.cumsum(counts)])
