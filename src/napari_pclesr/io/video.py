"""Video exports (MPEG, MP4, AVI) read lazily through the ffmpeg binary of imageio-ffmpeg.

ffmpeg converts every frame to 8-bit grey (``pix_fmt=gray``: the luma of YUV video, BT.601
weights for RGB video). Frames are decoded on demand: moving forward reuses the running
decoder; a jump starts a new one with an accurate seek (a fast seek to a few seconds before
the frame, then decoding up to it), so random access is exact for MPEG-1/2 too. A small cache
keeps recent frames, so napari can scrub and play without holding the whole video.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np

from napari_pclesr.io.errors import CorruptFileError, EmptyFileError
from napari_pclesr.io.lazy import LazyFrames

VIDEO_SUFFIXES = (".mp4", ".mpg", ".mpeg", ".avi")
#: A jump of more than this many frames forward restarts the decoder with a seek.
MAX_FRAMES_SKIPPED = 48
#: The fast (keyframe) part of a seek stops this many seconds before the wanted frame; the
#: rest is decoded, which makes the seek frame-accurate even where keyframe seeking is not.
SEEK_MARGIN_S = 3.0
_GREY_PIXEL_FORMATS = ("gray", "gray10le", "gray12le", "gray16le", "y8", "y16")


class VideoFrames(LazyFrames):
    """Lazy (T, H, W) uint8 grey frames of a video file.

    Parameters
    ----------
    path : str or os.PathLike
        The video.
    n_frames : int
        Number of frames (from :func:`count_video_frames`).
    frame_shape : tuple of int
        (H, W).
    frame_rate : float
        Frames per second, used to turn frame indices into seek times.
    """

    def __init__(self, path, n_frames: int, frame_shape: tuple[int, int], frame_rate: float):
        super().__init__(self._decode, n_frames, frame_shape, np.uint8)
        self.path = Path(path)
        self.frame_rate = float(frame_rate)
        self._decoder = None
        self._next_index = 0

    def _decode(self, indices) -> np.ndarray:
        return np.stack([self._decode_one(int(index)) for index in indices])

    def _decode_one(self, index: int) -> np.ndarray:
        if (
            self._decoder is None
            or index < self._next_index
            or index > self._next_index + MAX_FRAMES_SKIPPED
        ):
            self._start(index)
        frame_bytes = self.shape[1] * self.shape[2]
        while True:
            try:
                data = next(self._decoder)
            except (StopIteration, RuntimeError, OSError) as exc:
                self.close()
                reason = ffmpeg_reason(str(exc)) if str(exc) else "the stream ends early"
                raise CorruptFileError(
                    self.path,
                    f"frame {index} of {self.shape[0]} cannot be decoded ({reason}); the "
                    "video is damaged or shorter than its container says.",
                ) from exc
            if len(data) != frame_bytes:
                self.close()
                raise CorruptFileError(
                    self.path, f"frame {index} has {len(data)} bytes, expected {frame_bytes}."
                )
            self._next_index += 1
            if self._next_index - 1 == index:
                return np.frombuffer(data, np.uint8).reshape(self.shape[1:]).copy()

    def _start(self, index: int) -> None:
        import imageio_ffmpeg

        self.close()
        input_params, output_params = [], []
        if index > 0:
            start = index / self.frame_rate
            fast = max(0.0, start - SEEK_MARGIN_S)
            input_params = ["-ss", f"{fast:.6f}"]
            output_params = ["-ss", f"{start - fast:.6f}"]
        self._decoder = imageio_ffmpeg.read_frames(
            str(self.path),
            pix_fmt="gray",
            bpp=1,
            input_params=input_params,
            output_params=output_params,
        )
        next(self._decoder)  # the first item is ffmpeg's metadata
        self._next_index = index

    def close(self) -> None:
        """Stop the running ffmpeg decoder, if any (it restarts on the next read)."""
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None

    def __del__(self):
        self.close()


def count_video_frames(path: str | os.PathLike) -> int:
    """Count the frames of a video's first video stream by demuxing it (no decoding).

    Raises
    ------
    CorruptFileError
        If ffmpeg cannot read the file or finds no video frame.
    """
    import imageio_ffmpeg

    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-i", os.fspath(path)]
    command += ["-map", "0:v:0", "-c", "copy", "-f", "null", "-"]
    result = subprocess.run(command, capture_output=True, timeout=600, check=False)
    log = result.stderr.decode(errors="replace")
    counts = re.findall(r"frame=\s*(\d+)", log)
    if result.returncode != 0 or not counts or int(counts[-1]) == 0:
        raise CorruptFileError(
            path, f"ffmpeg finds no readable video stream ({ffmpeg_reason(log)})."
        )
    return int(counts[-1])


def ffmpeg_reason(log: str) -> str:
    """The cause in an ffmpeg error log: its last line, without the version banner, the
    configuration or the ``[demuxer @ 0x…]`` prefix."""
    lines = [
        line.strip()
        for line in log.splitlines()
        if line.strip() and not line.startswith((" ", "\t", "ffmpeg version", "==="))
    ]
    if not lines:
        return "no error message"
    return re.sub(r"^\[[^]]*\]\s*", "", lines[-1]).rstrip(".")


def read_video(path: str | os.PathLike) -> tuple[VideoFrames, dict]:
    """Open a video as lazy grey frames.

    Parameters
    ----------
    path : str or os.PathLike
        ``.mp4``, ``.mpg``, ``.mpeg`` or ``.avi`` (anything the bundled ffmpeg decodes).

    Returns
    -------
    frames : VideoFrames
        (T, H, W) uint8 grey, decoded on demand.
    meta : dict
        ``frame_rate`` (the container's), ``pixel_size_um`` None, ``format`` (``"video"``),
        ``raw`` (ffmpeg's metadata: codec, source pixel format, duration, …) and
        ``converted_to_grey`` (True unless the video is already grey).

    Raises
    ------
    EmptyFileError, CorruptFileError
        For a zero-byte file and one that ffmpeg cannot decode.
    """
    import imageio_ffmpeg

    path = Path(path)
    if path.stat().st_size == 0:
        raise EmptyFileError(path, "the file is empty (0 bytes); it holds no video.")
    probe = imageio_ffmpeg.read_frames(str(path), pix_fmt="gray", bpp=1)
    try:
        info = next(probe)
    except (OSError, RuntimeError, StopIteration) as exc:
        raise CorruptFileError(
            path, f"ffmpeg cannot open it as a video ({ffmpeg_reason(str(exc))})."
        ) from exc
    finally:
        probe.close()
    n_frames = count_video_frames(path)
    width, height = info["size"]
    frame_rate = float(info.get("fps") or 0) or None
    frames = VideoFrames(path, n_frames, (height, width), frame_rate or 1.0)
    source_format = str(info.get("pix_fmt", "")).split("(")[0].strip()
    meta = {
        "frame_rate": frame_rate,
        "pixel_size_um": None,
        "format": "video",
        "raw": {key: value for key, value in info.items() if key != "ffmpeg_version"},
        "converted_to_grey": source_format not in _GREY_PIXEL_FORMATS,
    }
    return frames, meta
