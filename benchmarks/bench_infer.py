"""Streaming inference on a long recording: ``pclesr infer`` against load-everything-first.

Run: ``.venv/bin/python benchmarks/bench_infer.py [--frames 2000] [--device cpu]``.

Target (issue 8): ``pclesr infer`` super-resolves a long recording in memory that does not
grow with its length. A synthetic ``.mkt`` of ``--frames`` frames of 576 × 576 (default 2,000,
1.3 GB) is super-resolved with FSRCNN (default size, ×1, random weights: speed does not
depend on them) two ways, each in a fresh process whose peak resident memory is measured:

* ``pclesr infer``: frames read, super-resolved and written to the TIFF a batch at a time;
* the reference: ``np.asarray`` of the whole recording, then ``super_resolve`` on the array,
  then ``write_image`` of the whole result (what ``pclesr infer`` did before streaming).

Both print frames/s over the whole command (start-up, reading, inference, writing).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _timing import print_table

FRAME_SHAPE = (576, 576)

REFERENCE_SCRIPT = """
import sys
import numpy as np
from napari_pclesr.infer import super_resolve
from napari_pclesr.io import read_sequence, write_image

checkpoint, source, output, device, batch = sys.argv[1:6]
frames, meta = read_sequence(source)
stack = np.asarray(frames)
result = super_resolve(stack, checkpoint, device=device, batch_size=int(batch),
                       fov_mask=meta["fov_mask"])
write_image(output, result, frame_rate=meta["frame_rate"])
"""


def make_recording(path: Path, n_frames: int) -> None:
    """A disc of smooth tissue-like texture, drifting, from a pool of 8 frames (fast to make)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(0)
    rows, cols = np.ogrid[: FRAME_SHAPE[0], : FRAME_SHAPE[1]]
    inside = (rows - 287.5) ** 2 + (cols - 287.5) ** 2 <= 280**2
    pool = [
        (ndi.gaussian_filter(rng.random(FRAME_SHAPE), 3) * 4000 * inside).astype(np.int16)
        for _ in range(8)
    ]
    frames = (pool[k % 8] for k in range(n_frames))
    from napari_pclesr.io import write_mkt

    write_mkt(path, frames, frame_rate=12.0, metadata={"fovx": 240})


def make_checkpoint(path: Path) -> Path:
    import torch

    from napari_pclesr import models
    from napari_pclesr.data.patches import Normalisation
    from napari_pclesr.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    net = models.create("fsrcnn", scale=1)
    return save_checkpoint(
        {
            "model": {"name": "fsrcnn", "hparams": net.hparams, "scale": 1},
            "state_dict": net.state_dict(),
            "normalisation": Normalisation().to_dict(),
            "config": {},
            "history": {},
            "iteration": 0,
        },
        path,
    )


def run_measured(command: list[str]) -> tuple[float, float]:
    """Wall-clock seconds and peak resident memory (MB) of a command in a child process."""
    start = time.perf_counter()
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed")
    return seconds, usage.ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000, help="frames of 576x576 (2000)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ... (cpu)")
    parser.add_argument("--batch-size", type=int, default=8, help="frames per pass (8)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_infer_") as tmp:
        tmp = Path(tmp)
        source = tmp / "recording.mkt"
        make_recording(source, args.frames)
        checkpoint = make_checkpoint(tmp / "fsrcnn.pt")
        size_gb = source.stat().st_size / 1e9
        print(f"{args.frames} frames of {FRAME_SHAPE[0]}x{FRAME_SHAPE[1]} int16 ({size_gb:.2f} GB)")
        batch = str(args.batch_size)
        infer = [sys.executable, "-m", "napari_pclesr.cli", "infer", str(checkpoint)]
        streamed = run_measured(
            [
                *infer,
                str(source),
                str(tmp / "a.tif"),
                "--device",
                args.device,
                "--batch-size",
                batch,
            ]
        )
        (tmp / "a.tif").unlink()
        script = [sys.executable, "-c", REFERENCE_SCRIPT, str(checkpoint)]
        reference = run_measured([*script, str(source), str(tmp / "b.tif"), args.device, batch])
    rows = [
        (
            "pclesr infer (streamed)",
            args.frames,
            streamed[0],
            args.frames / streamed[0],
            streamed[1],
        ),
        (
            "np.asarray, then infer",
            args.frames,
            reference[0],
            args.frames / reference[0],
            reference[1],
        ),
    ]
    header = ("method", "frames", "seconds", "frames/s", "peak RSS MB")
    print_table(f"FSRCNN x1 on {args.device}, batch {args.batch_size}", header, rows)


if __name__ == "__main__":
    main()
