"""``pclesr mosaic``: register a recording, fuse it into mosaics and write HR-hat (seed 000)."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

#: Sequences that ``pclesr train``'s default split (train, validation, test) needs.
TRAINING_SPLIT_SEQUENCES = 3

EPILOG = """\
examples:
  pclesr mosaic recording.mkt --out-mosaic mosaic.tif --out-hrhat hrhat.tif --report report.json
  pclesr mosaic export.mpeg --report report.json --pairs training/ --model affine
  pclesr train --data training/ --out run/      # train on the (LR, HR-hat) pairs

The report (JSON) holds every frame's offset, rejection reason and quality, every measured pair
with its residual, the segments and their mosaics' origins; napari_pclesr.registration
.Registration.load(report) reads it back."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "mosaic",
        help="register a recording, mosaic it and write HR-hat (pseudo ground truth) and pairs",
        description=(
            "Register the frames of a recording (low-pass Fourier cross-correlation, "
            "Lucas-Kanade refinement, robust global least squares), reject dark, blurred and "
            "unmatched frames, fuse each segment into a mosaic and map it back into every kept "
            "frame: HR-hat, a pseudo ground truth for training (seed 000, sec. 3.1)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sequence", type=Path, metavar="SEQ", help="recording or frame folder")
    outputs = parser.add_argument_group("outputs (at least one)")
    outputs.add_argument(
        "--out-mosaic", type=Path, metavar="M.tif", help="mosaic(s), one page per segment"
    )
    outputs.add_argument(
        "--out-hrhat",
        type=Path,
        metavar="H.tif",
        help="HR-hat stack aligned with SEQ (NaN for rejected frames)",
    )
    outputs.add_argument("--report", type=Path, metavar="R.json", help="registration report (JSON)")
    outputs.add_argument(
        "--pairs",
        type=Path,
        metavar="DIR",
        help="write (LR, HR-hat) training pairs of the kept frames to DIR/lr and DIR/hr",
    )
    parser.add_argument(
        "--pairs-name", default=None, help="file-name stem of the pairs (SEQ's stem)"
    )
    parser.add_argument(
        "--clip-frames",
        type=int,
        default=32,
        help="kept frames per training sequence (32); 0 writes whole segments",
    )
    parser.add_argument(
        "--model", choices=("translation", "affine"), default="translation", help="motion model"
    )
    parser.add_argument(
        "--method",
        choices=("mosaic", "fibre"),
        default="mosaic",
        help="fuse resampled frames, or pool fibre samples (needs a fibre layout)",
    )
    parser.add_argument("--layout", type=Path, default=None, help="fibre layout for --method fibre")
    parser.add_argument(
        "--background", type=Path, default=None, help="flat field: SEQ holds raw bundle frames"
    )
    parser.add_argument("--frames", default=None, metavar="A:B", help="use frames A to B-1 only")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--max-shift", type=float, default=None, help="largest motion per frame (px)"
    )
    parser.add_argument(
        "--min-ncc", type=float, default=0.7, help="pair correlation threshold (0.7)"
    )
    parser.add_argument(
        "--min-overlap", type=float, default=0.25, help="pair overlap threshold (0.25)"
    )
    parser.add_argument(
        "--gaps", default="1,2,4", help="frame distances of registered pairs (1,2,4)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out-mosaic, --out-hrhat and --report files of an earlier run",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from napari_pclesr.cli._common import refuse_overwriting_inputs
    from napari_pclesr.cli.io_commands import parse_frame_range
    from napari_pclesr.io import read_sequence, write_image
    from napari_pclesr.io.lazy import LazyFrames
    from napari_pclesr.registration import SegmentWarning, iter_mosaic, write_training_pairs
    from napari_pclesr.registration._register import drain

    outputs = [args.out_mosaic, args.out_hrhat, args.report, args.pairs]
    if all(path is None for path in outputs):
        raise ValueError("nothing to write: give --out-mosaic, --out-hrhat, --report or --pairs.")
    for path in (args.out_mosaic, args.out_hrhat):
        if path is not None and path.suffix.lower() not in (".tif", ".tiff"):
            raise ValueError(f"{path}: mosaics and HR-hat are written as TIFF; use a .tif suffix.")
    refuse_overwriting_inputs(outputs, [args.sequence, args.background, args.layout])
    _refuse_earlier_outputs([args.out_mosaic, args.out_hrhat, args.report], args.overwrite)
    gaps = _parse_gaps(args.gaps)
    frames, meta = read_sequence(args.sequence, background=args.background)
    selection = range(len(frames))
    if args.frames is not None:
        selection = selection[parse_frame_range(args.frames)]
        whole = frames
        frames = LazyFrames(
            lambda wanted: whole[[selection[i] for i in wanted]],
            len(selection),
            whole.shape[1:],
            whole.dtype,
        )
    layout = _layout(args, meta, frames.shape[1:])
    bar = FrameProgressBar(sys.stderr, enabled=not args.no_progress)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SegmentWarning)
        runner = iter_mosaic(
            frames,
            meta["fov_mask"],
            model=args.model,
            method=args.method,
            layout=layout,
            device=args.device,
            max_shift=args.max_shift,
            min_ncc=args.min_ncc,
            min_overlap=args.min_overlap,
            gaps=gaps,
        )
        result = drain(runner, bar.update)
    bar.close()
    for warning in caught:
        print(f"pclesr mosaic: warning: {warning.message}", file=sys.stderr)
    elapsed = time.perf_counter() - start
    registration = result.registration
    summary = registration.summary()
    if args.report is not None:
        report = {
            **registration.to_dict(),
            "input": str(args.sequence),
            "input_frames": [selection.start, selection.stop, selection.step],
            "mosaics": [
                {
                    "segment": mosaic.segment,
                    "origin": mosaic.origin.tolist(),
                    "shape": list(mosaic.image.shape),
                    "frames_fused": int(registration.kept_in(mosaic.segment).size),
                }
                for mosaic in result.mosaics
            ],
            "elapsed_s": elapsed,
        }
        _write_json(args.report, report)
    if not result.mosaics:
        raise ValueError(
            f"every frame of {args.sequence} was rejected ({summary['rejected_by_reason']}); "
            "nothing to fuse. See the report for each frame's reason, or relax --min-ncc / "
            "--min-overlap / --max-shift."
        )
    if args.out_mosaic is not None:
        stack, origins = _mosaic_stack(result.mosaics)
        write_image(
            args.out_mosaic,
            stack,
            pixel_size_um=meta.get("pixel_size_um"),
            extra={"source": str(args.sequence), "segments": origins},
        )
    if args.out_hrhat is not None:
        write_image(
            args.out_hrhat,
            result.hr_hat,
            frame_rate=meta.get("frame_rate"),
            pixel_size_um=meta.get("pixel_size_um"),
            fov_circle=meta.get("fov_circle"),
            extra={"source": str(args.sequence), "hr_hat": True, "model": args.model},
        )
    written = []
    if args.pairs is not None:
        written = write_training_pairs(
            frames,
            result,
            args.pairs,
            args.pairs_name or args.sequence.stem,
            clip_frames=args.clip_frames or None,
        )
        _warn_if_too_few_sequences(args.pairs)
    rate = registration.n_frames / max(elapsed, 1e-9)
    residual = summary["pair_residual_px"].get("rms", float("nan"))
    print(
        f"registered {registration.n_frames} frames in {elapsed:.1f} s ({rate:.1f} frames/s): "
        f"{summary['kept']} kept ({100 * summary['kept_fraction']:.0f}%), "
        f"{sum(1 for size in summary['segment_sizes'] if size > 1)} segment(s) fused, "
        f"pair residual RMS {residual:.2f} px"
        + (f"; {len(written)} training sequence(s) in {args.pairs}" if args.pairs else "")
    )
    return 0


def _refuse_earlier_outputs(paths, overwrite: bool) -> None:
    """Check, before any work, that no output replaces a file unless asked to, and that every
    output's folder exists (a long registration must not end in an unwritable path).
    (``--pairs`` refuses existing files on its own, with no way to overwrite them.)"""
    paths = [path for path in paths if path is not None]
    for path in paths:
        if not path.parent.is_dir():
            raise ValueError(f"cannot write {path}: the folder {path.parent} does not exist.")
    existing = [str(path) for path in paths if path.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; use "
            "--overwrite to replace, or choose another output."
        )


def _warn_if_too_few_sequences(folder: Path) -> None:
    """``pclesr train`` splits by sequence into train, validation and test: it needs 3."""
    count = len(list((folder / "hr").glob("*.tif")))
    if count < TRAINING_SPLIT_SEQUENCES:
        print(
            f"pclesr mosaic: warning: {folder} holds {count} training sequence(s); pclesr train "
            f"splits by sequence and needs at least {TRAINING_SPLIT_SEQUENCES}: add recordings "
            "(--pairs-name) or cut shorter clips (--clip-frames).",
            file=sys.stderr,
        )


def _parse_gaps(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(
            f"--gaps must be comma-separated frame distances like 1,2,4, got {text!r}."
        ) from None


def _layout(args, meta, frame_shape):
    """The fibre layout for ``--method fibre``: --layout, or the one detected in raw frames."""
    if args.method != "fibre":
        return None
    if args.layout is not None:
        from napari_pclesr import FibreLayout

        return FibreLayout.from_file(args.layout, shape=tuple(frame_shape))
    if meta.get("fibre_layout") is not None:
        return meta["fibre_layout"]
    raise ValueError(
        "--method fibre needs the fibre positions: give --layout FILE, or raw bundle frames with "
        "--background; otherwise use --method mosaic."
    )


def _mosaic_stack(mosaics):
    """One mosaic as is, or several padded with 0 to a common size (one page each)."""
    import numpy as np

    origins = [
        {"segment": m.segment, "origin": m.origin.tolist(), "shape": list(m.image.shape)}
        for m in mosaics
    ]
    if len(mosaics) == 1:
        return mosaics[0].image, origins
    height = max(m.image.shape[0] for m in mosaics)
    width = max(m.image.shape[1] for m in mosaics)
    stack = np.zeros((len(mosaics), height, width), np.float32)
    for page, mosaic in enumerate(mosaics):
        stack[page, : mosaic.image.shape[0], : mosaic.image.shape[1]] = mosaic.image
    return stack, origins


def _write_json(path: Path, values: dict) -> None:
    from napari_pclesr._atomic import atomic_path

    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(values, indent=1, allow_nan=False))


class FrameProgressBar:
    """A one-line progress bar for the stages of ``pclesr mosaic``, redrawn at most 10 times a
    second."""

    width = 30

    def __init__(self, stream, enabled: bool = True):
        from napari_pclesr.cli.train import format_seconds

        self.stream = stream
        self.enabled = enabled
        self._format_seconds = format_seconds
        self._stage = None
        # A stage starts when the previous one's last event came (or the bar was made).
        self._stage_start = self._last_event = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False

    def update(self, event) -> None:
        now = time.monotonic()
        if event.stage != self._stage:
            if self._drawn:
                self.stream.write("\n")
            self._stage, self._stage_start = event.stage, self._last_event
        self._last_event = now
        final = event.done >= event.total
        if not self.enabled or (now - self._last_draw < 0.1 and not final):
            return
        self._last_draw = now
        elapsed = now - self._stage_start
        rate = event.done / elapsed if elapsed > 0 else 0.0
        eta = (event.total - event.done) / rate if rate > 0 else 0.0
        filled = round(self.width * event.done / max(event.total, 1))
        self.stream.write(
            f"\r{event.stage:<9}[{'#' * filled}{'.' * (self.width - filled)}] "
            f"{event.done}/{event.total} frames {rate:.1f}/s ETA {self._format_seconds(eta)}"
        )
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
