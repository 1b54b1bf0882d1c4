"""Reader speed and memory: a generated 2 GB ``.mkt``, a video export and the sample data.

Run: ``.venv/bin/python benchmarks/bench_io.py [--gigabytes 2] [--video-frames 240]``.

Targets (issue 3): opening a 2 GB ``.mkt`` takes < 1 s and touching one frame costs memory of
the order of one frame; sample data is generated in < 2 s. Side by side in the same run:

* ``.mkt`` sequential decode against the classic reader (``np.fromfile`` at
  ``16 + k·(size + 32)`` per frame, as the public readers do), both to float32;
* video decode against imageio's ffmpeg reader (RGB frames, then grey), the usual way.

Each measurement that needs a fresh process (open time, peak RSS) runs in one, so the page
cache and earlier allocations of this script do not hide the cost.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _timing import print_table

from napari_pclesr.io import read_sequence, write_mkt

FRAME_SHAPE = (580, 576)  # the most common Cellvizio frame
VIDEO_SHAPE = (576, 592)  # Cellvizio MPEG exports

_OPEN_SCRIPT = """
import json, resource, sys, time
import numpy as np

def rss_mb():
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * resource.getpagesize() / 2**20

from napari_pclesr.io import read_sequence
before = rss_mb()
start = time.perf_counter()
frames, meta = read_sequence(sys.argv[1])
open_s = time.perf_counter() - start
opened = rss_mb()
start = time.perf_counter()
frame = np.asarray(frames[len(frames) // 2], dtype=np.float32)
touch_s = time.perf_counter() - start
touched = rss_mb()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"frames": len(frames), "open_s": open_s, "touch_s": touch_s,
                  "open_mb": opened - before, "touch_mb": touched - opened, "peak_mb": peak,
                  "baseline_mb": before}))
"""


def make_mkt(path: Path, gigabytes: float) -> int:
    frame_bytes = 2 * FRAME_SHAPE[0] * FRAME_SHAPE[1]
    n_frames = int(gigabytes * 2**30 // (frame_bytes + 32))
    rng = np.random.default_rng(0)
    pool = rng.integers(-200, 4000, (8, *FRAME_SHAPE)).astype(np.int16)
    write_mkt(path, (pool[k % 8] for k in range(n_frames)), frame_rate=12, metadata={"fovx": 240})
    return n_frames


def drop_page_cache_hint(path: Path) -> None:
    """Ask the kernel to forget the file's cached pages, so the open is measured cold-ish."""
    import os

    with open(path, "rb") as stream:
        os.posix_fadvise(stream.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def open_in_fresh_process(path: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_OPEN_SCRIPT), str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def mkt_decode_rates(path: Path, n_frames: int, limit: int) -> tuple[float, float]:
    """Frames/s of our reader and of the classic per-frame np.fromfile reader (to float32).

    Both read the same frames from the page cache (a first pass loads them), and each is
    timed in a fresh process, so neither profits from the other's mappings.
    """
    count = min(n_frames, limit)
    frame_bytes = 2 * FRAME_SHAPE[0] * FRAME_SHAPE[1]
    setup_ours = "from napari_pclesr.io import read_sequence\nframes, _ = read_sequence(path)"
    loop_ours = f"for index in range({count}): np.asarray(frames[index], dtype=np.float32)"
    loop_classic = (
        f"for index in range({count}): np.fromfile(path, np.int16, {frame_bytes // 2}, "
        f"offset=16 + index * {frame_bytes + 32}).reshape({FRAME_SHAPE}).astype(np.float32)"
    )
    rates = []
    # The first run only fills the page cache; the classic reader then runs again.
    for setup, loop in (("", loop_classic), (setup_ours, loop_ours), ("", loop_classic)):
        code = "\n".join(
            [
                "import sys, time, numpy as np",
                "path = sys.argv[1]",
                setup,
                "start = time.perf_counter()",
                loop,
                "print(time.perf_counter() - start)",
            ]
        )
        result = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
        )
        rates.append(count / float(result.stdout.split()[-1]))
    return rates[1], rates[2]


def make_video(path: Path, n_frames: int) -> None:
    import imageio_ffmpeg

    from napari_pclesr.data import phantom_sequence
    from napari_pclesr.io.fov import circle_mask

    sequence = phantom_sequence(n_frames=min(n_frames, 24), shape=VIDEO_SHAPE, seed=1)
    disc = circle_mask(VIDEO_SHAPE, (288, 296, 285))
    writer = imageio_ffmpeg.write_frames(
        str(path), VIDEO_SHAPE[::-1], fps=24, codec="mpeg2video", quality=5, macro_block_size=16
    )
    writer.send(None)
    for index in range(n_frames):
        grey = (sequence.frames[index % len(sequence.frames)] * disc * 255).astype(np.uint8)
        grey[10:40, 5:90] = 255  # a burnt-in logo
        writer.send(np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=-1)))
    writer.close()


def video_decode_rates(path: Path) -> dict[str, float]:
    import imageio.v2 as imageio

    start = time.perf_counter()
    frames, _ = read_sequence(path)
    open_s = time.perf_counter() - start
    start = time.perf_counter()
    for frame in frames:
        frame.astype(np.float32)
    ours = len(frames) / (time.perf_counter() - start)
    start = time.perf_counter()
    for index in np.random.default_rng(0).permutation(len(frames))[:10]:
        frames._cache.clear()
        frames[int(index)]
    seek_s = (time.perf_counter() - start) / 10
    frames.close()

    start = time.perf_counter()
    count = 0
    with imageio.get_reader(path, "ffmpeg") as reader:
        for rgb in reader:
            rgb.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
            count += 1
    reference = count / (time.perf_counter() - start)
    return {"open_s": open_s, "ours": ours, "reference": reference, "seek_s": seek_s}


def sample_data_seconds() -> dict[str, float]:
    code = textwrap.dedent(
        """
        import json, time
        start = time.perf_counter()
        from napari_pclesr._napari import _sample_data
        imported = time.perf_counter()
        _sample_data.phantom_sample()
        phantom = time.perf_counter()
        _sample_data.sequence_sample()
        done = time.perf_counter()
        print(json.dumps({"import": imported - start, "phantom": phantom - imported,
                          "sequence": done - phantom}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=2.0, help="size of the .mkt file")
    parser.add_argument("--decode-frames", type=int, default=600, help="frames to decode")
    parser.add_argument("--video-frames", type=int, default=240, help="frames of the video")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        mkt = folder / "big.mkt"
        start = time.perf_counter()
        n_frames = make_mkt(mkt, args.gigabytes)
        size_gb = mkt.stat().st_size / 2**30
        print(
            f"wrote {mkt.name}: {n_frames} frames of {FRAME_SHAPE}, {size_gb:.2f} GiB "
            f"in {time.perf_counter() - start:.1f} s"
        )
        drop_page_cache_hint(mkt)
        cold = open_in_fresh_process(mkt)
        warm = open_in_fresh_process(mkt)
        frame_mb = 2 * FRAME_SHAPE[0] * FRAME_SHAPE[1] / 2**20
        print_table(
            f"Opening a {size_gb:.2f} GiB .mkt (fresh process; one frame = {frame_mb:.2f} MiB)",
            (
                "cache",
                "open s",
                "RSS before MiB",
                "+RSS by open MiB",
                "touch 1 frame s",
                "+RSS by it MiB",
                "peak RSS MiB",
                "target",
            ),
            [
                (
                    name,
                    run["open_s"],
                    run["baseline_mb"],
                    run["open_mb"],
                    run["touch_s"],
                    run["touch_mb"],
                    run["peak_mb"],
                    "open < 1 s, touch ~ 1 frame",
                )
                for name, run in (("cold", cold), ("warm", warm))
            ],
        )
        ours, classic = mkt_decode_rates(mkt, n_frames, args.decode_frames)
        rows = [("napari-pclesr (memory map)", ours), ("np.fromfile per frame", classic)]

        video = folder / "export.mpeg"
        make_video(video, args.video_frames)
        rates = video_decode_rates(video)
        rows += [
            ("napari-pclesr video (ffmpeg gray)", rates["ours"]),
            ("imageio ffmpeg RGB -> grey", rates["reference"]),
        ]
        print_table("Sequential decode to float32 (frames/s)", ("reader", "frames/s"), rows)
        print(
            f"video: {args.video_frames} frames {VIDEO_SHAPE}, opened in "
            f"{rates['open_s']:.2f} s (incl. frame count and FoV), random seek "
            f"{1000 * rates['seek_s']:.0f} ms per frame"
        )

    samples = sample_data_seconds()
    print_table(
        "napari sample data (fresh process, seconds)",
        ("sample", "seconds", "target"),
        [
            ("import", samples["import"], ""),
            ("phantom (HR + 30k layout + LR)", samples["phantom"], "< 2"),
            ("sequence (HR + LR)", samples["sequence"], "< 2"),
        ],
    )


if __name__ == "__main__":
    main()
