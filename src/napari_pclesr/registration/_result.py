"""The result of registering a sequence, and its JSON form."""

from __future__ import annotations

import base64
import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from napari_pclesr._atomic import atomic_path

#: Written into every saved file, so a future reader can tell old files apart.
FORMAT_VERSION = 1


@dataclass(frozen=True)
class FrameQuality:
    """Per-frame measurements, each an array of shape (T,).

    Attributes
    ----------
    ncc : float
        The best normalised cross-correlation of the frame with any frame it was paired with
        (smoothed frames, over their overlap), pairs with its own repeat counting only when
        there is no other.
    peak_ratio : float
        The highest correlation peak over the second-highest, for that best pair; near 1 means
        an ambiguous match (repetitive tissue).
    overlap : float
        The largest share of the FoV the frame shares with a paired frame.
    residual : float
        Root mean square, over the pairs used in the global solve, of the disagreement (pixels)
        between a pair's measured shift and the solved offsets; NaN when no pair was used.
    brightness, contrast : float
        Mean and standard deviation inside the FoV.
    sharpness : float
        Energy of the tissue's structure between the smoothing scale and twice it, over the
        energy of coarser structure; blurred frames score low.
    duplicate : bool
        The frame repeats the previous one (video exports often hold each frame twice).
    """

    ncc: np.ndarray
    peak_ratio: np.ndarray
    overlap: np.ndarray
    residual: np.ndarray
    brightness: np.ndarray
    contrast: np.ndarray
    sharpness: np.ndarray
    duplicate: np.ndarray


@dataclass(frozen=True)
class PairTable:
    """Every measured pair of frames, each field an array of shape (P,) (``offset``: (P, 2)).

    Frame ``second`` at pixel x shows what frame ``first`` shows at x + ``offset``. ``used``
    marks the pairs that entered the global solve; ``residual`` is their disagreement with the
    solved offsets in pixels (NaN for unused pairs); ``failure`` says why a pair was not used
    ("" when it was).
    """

    first: np.ndarray
    second: np.ndarray
    offset: np.ndarray
    ncc: np.ndarray
    overlap: np.ndarray
    peak_ratio: np.ndarray
    used: np.ndarray
    residual: np.ndarray
    failure: np.ndarray

    def __len__(self) -> int:
        return len(self.first)


@dataclass(frozen=True)
class Registration:
    """Where every frame of a sequence lies, which frames to trust, and how well they matched.

    Attributes
    ----------
    offsets : numpy.ndarray, float64, shape (T, 2)
        ``offsets[t] = (dr, dc)``: pixel (r, c) of frame t shows the same tissue point as pixel
        (r + dr, c + dc) of the first frame of its segment (which is at (0, 0)). NaN for frames
        that belong to no segment (dark or blurred ones). With an affine model this is the
        displacement of the frame centre; ``transforms`` holds the full maps.
    rejected : numpy.ndarray of bool, shape (T,)
        Frames left out of mosaics and HR-hat.
    reasons : numpy.ndarray of str, shape (T,)
        Why each rejected frame was rejected ("" for kept frames).
    segments : tuple of numpy.ndarray
        Frame indices of each segment (a group of frames registered together), in time
        order. Scene cuts and probe lift-offs start new segments. A segment of one frame holds
        a frame that matched no other, and that frame is rejected.
    quality : FrameQuality
    pairs : PairTable
    fov_mask : numpy.ndarray of bool, shape (H, W)
        The field of view used.
    transforms : numpy.ndarray, float64, shape (T, 2, 3), or None
        With ``model="affine"``: frame t's pixel p = (r, c) lies at ``A p + b`` in its segment's
        reference frame, with ``transforms[t] = [A | b]``. None for pure translations.
    parameters : dict
        The settings the registration ran with.
    """

    offsets: np.ndarray
    rejected: np.ndarray
    reasons: np.ndarray
    segments: tuple
    quality: FrameQuality
    pairs: PairTable
    fov_mask: np.ndarray
    transforms: np.ndarray | None = None
    parameters: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return len(self.offsets)

    @property
    def frame_shape(self) -> tuple[int, int]:
        return tuple(int(side) for side in self.fov_mask.shape)

    @property
    def kept(self) -> np.ndarray:
        """Indices of the frames that are not rejected."""
        return np.flatnonzero(~self.rejected)

    @property
    def segment_of(self) -> np.ndarray:
        """(T,) segment index of each frame, -1 for frames in none."""
        labels = np.full(self.n_frames, -1, dtype=np.int64)
        for index, members in enumerate(self.segments):
            labels[members] = index
        return labels

    def kept_in(self, segment: int) -> np.ndarray:
        """Indices of the kept frames of a segment."""
        members = np.asarray(self.segments[segment])
        return members[~self.rejected[members]]

    def largest_segment(self) -> int:
        """The segment with the most kept frames (the first such one on a tie)."""
        counts = [len(self.kept_in(index)) for index in range(len(self.segments))]
        if not counts or max(counts) == 0:
            raise ValueError(
                "no frame of the sequence was kept (all were rejected: "
                f"{_reason_summary(self.reasons[self.rejected])}); nothing can be fused."
            )
        return int(np.argmax(counts))

    def frame_maps(self) -> np.ndarray:
        """(T, 2, 3) affine map of every frame into its segment's reference (NaN where none)."""
        if self.transforms is not None:
            return self.transforms
        maps = np.zeros((self.n_frames, 2, 3))
        maps[:, 0, 0] = maps[:, 1, 1] = 1.0
        maps[:, :, 2] = self.offsets
        return maps

    def summary(self) -> dict:
        """Counts and residual statistics, as a JSON-friendly dict."""
        used = self.pairs.used
        residual = self.pairs.residual[used]
        return {
            "frames": self.n_frames,
            "kept": int((~self.rejected).sum()),
            "kept_fraction": float((~self.rejected).mean()),
            "rejected_by_reason": _reason_counts(self.reasons[self.rejected]),
            "segments": len(self.segments),
            "segment_sizes": [len(self.kept_in(i)) for i in range(len(self.segments))],
            "duplicates": int(self.quality.duplicate.sum()),
            "pairs": len(self.pairs),
            "pairs_used": int(used.sum()),
            "pair_residual_px": _percentiles(residual),
        }

    # -- JSON -----------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """A JSON-friendly dict (NaN becomes None); :meth:`from_dict` restores it."""
        return {
            "format": "napari-pclesr registration",
            "version": FORMAT_VERSION,
            "frame_shape": list(self.frame_shape),
            "offsets": _to_json(self.offsets),
            "rejected": self.rejected.tolist(),
            "reasons": [str(reason) for reason in self.reasons],
            "segments": [np.asarray(members).tolist() for members in self.segments],
            "quality": {
                name.name: _to_json(getattr(self.quality, name.name))
                for name in fields(FrameQuality)
            },
            "pairs": {
                name.name: _to_json(getattr(self.pairs, name.name)) for name in fields(PairTable)
            },
            "fov_mask": base64.b64encode(np.packbits(self.fov_mask.ravel()).tobytes()).decode(),
            "transforms": None if self.transforms is None else _to_json(self.transforms),
            "parameters": self.parameters,
            "summary": self.summary(),
        }

    @classmethod
    def from_dict(cls, values: dict) -> Registration:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` for anything else."""
        if not isinstance(values, dict) or values.get("format") != "napari-pclesr registration":
            raise ValueError("this is not a napari-pclesr registration (no 'format' key).")
        if values.get("version", 0) > FORMAT_VERSION:
            raise ValueError(
                f"the registration was saved by a newer napari-pclesr (format version "
                f"{values['version']}); update napari-pclesr to read it."
            )
        try:
            height, width = (int(side) for side in values["frame_shape"])
            bits = np.frombuffer(base64.b64decode(values["fov_mask"]), dtype=np.uint8)
            mask = np.unpackbits(bits)[: height * width].reshape(height, width).astype(bool)
            quality = FrameQuality(
                **{
                    name.name: _from_json(
                        values["quality"][name.name], bool if name.name == "duplicate" else float
                    )
                    for name in fields(FrameQuality)
                }
            )
            pairs = PairTable(
                **{name.name: _pair_field(values["pairs"], name.name) for name in fields(PairTable)}
            )
            transforms = values.get("transforms")
            registration = cls(
                offsets=_from_json(values["offsets"], float).reshape(-1, 2),
                rejected=np.asarray(values["rejected"], dtype=bool),
                reasons=np.asarray(values["reasons"], dtype=str),
                segments=tuple(
                    np.asarray(members, dtype=np.int64) for members in values["segments"]
                ),
                quality=quality,
                pairs=pairs,
                fov_mask=mask,
                transforms=None
                if transforms is None
                else _from_json(transforms, float).reshape(-1, 2, 3),
                parameters=dict(values.get("parameters", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"the registration data are incomplete or damaged: {exc!r}.") from None
        n_frames = len(registration.offsets)
        if len(registration.rejected) != n_frames or len(registration.reasons) != n_frames:
            raise ValueError(
                "the registration data are inconsistent: per-frame lists differ in length."
            )
        return registration

    def save(self, path: str | os.PathLike) -> Path:
        """Write the registration as JSON (atomically); returns the path."""
        path = Path(path)
        with atomic_path(path) as temporary:
            temporary.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Registration:
        """Read a registration written by :meth:`save`."""
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{path} is not valid JSON ({exc}); is it a registration file?"
            ) from None
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not a text file; is it a registration file?") from None
        try:
            return cls.from_dict(values)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None


def _to_json(array: np.ndarray):
    """Nested lists with None for NaN (JSON has no NaN)."""
    array = np.asarray(array)
    if array.dtype.kind == "f":
        return (
            [_to_json(row) for row in array]
            if array.ndim > 1
            else [None if not math.isfinite(value) else float(value) for value in array.tolist()]
        )
    return array.tolist()


def _from_json(values, dtype) -> np.ndarray:
    if dtype is float:
        return np.array(values, dtype=object).astype(np.float64) if values else np.empty(0)
    return np.asarray(values, dtype=dtype)


def _pair_field(values: dict, name: str) -> np.ndarray:
    data = values[name]
    if name in ("first", "second"):
        return np.asarray(data, dtype=np.int64)
    if name == "used":
        return np.asarray(data, dtype=bool)
    if name == "failure":
        return np.asarray(data, dtype=str)
    array = _from_json(data, float)
    return array.reshape(-1, 2) if name == "offset" else array


def _percentiles(values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"count": 0}
    return {
        "count": int(values.size),
        "rms": float(np.sqrt(np.mean(values**2))),
        "median": float(np.median(values)),
        "p90": float(np.percentile(values, 90)),
        "max": float(values.max()),
    }


def _reason_counts(reasons) -> dict:
    """Counts by kind of reason (the text before the first colon)."""
    counts: dict[str, int] = {}
    for reason in reasons:
        kind = str(reason).split(":")[0]
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def _reason_summary(reasons) -> str:
    counts = _reason_counts(reasons)
    return ", ".join(f"{count} {kind}" for kind, count in counts.items()) or "none"
