"""``pclesr infer``: super-resolve a recording, or every recording in a folder, streamed."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

from napari_pclesr.cli._common import EXIT_OK, EXIT_SOME_FAILED, refuse_overwriting_inputs
from napari_pclesr.cli.io_commands import parse_frame_range

TIFF_SUFFIXES = (".tif", ".tiff")
#: Formats (of :func:`napari_pclesr.io.detect_format`) that are recordings in folder mode.
RECORDING_FORMATS = ("mkt", "video", "tiff", "folder")
#: Appended to an input's name to name its output in an output folder.
OUTPUT_SUFFIX = "_sr.tif"

EPILOG = """\
IN and OUT:
  a recording (.mkt, .mpeg/.mpg/.mp4/.avi, .tif) and OUT.tif  one output stack
  a folder of PNG/TIFF frames and OUT.tif                    the frames as one sequence
  a folder and an output folder (OUT without a suffix)       every recording in the folder:
      .mkt, video and TIFF files and sub-folders of frames, each to OUT/<name>_sr.tif
  a recording and an output folder                           OUT/<name>_sr.tif

examples:
  pclesr infer run/best.pt recording.mkt recording_sr.tif
  pclesr infer run/best.pt export.mpeg first_10s.tif --frames 0:240
  pclesr infer run/best.pt recordings/ recordings_sr/
  pclesr infer wiener lr.tif sr_wiener.tif

exit status: 0 all written, 1 some recordings of a folder failed (each is reported),
2 bad input or settings (nothing written), 130 Ctrl-C, 143 SIGTERM (no partial file left)."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "infer",
        help="super-resolve a recording or a folder of recordings with a checkpoint or baseline",
        description=(
            "Super-resolve a recording with a checkpoint (best.pt) or a baseline name, and "
            "write a float32 TIFF in the input's intensity range, streamed: frames are read, "
            "super-resolved and written a batch at a time, so memory does not grow with the "
            "length of the recording. Pixels outside the field of view (as estimated by the "
            "reader) are 0. No input is ever written over; an existing output is replaced "
            "only with --overwrite."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", metavar="CHECKPOINT_OR_BASELINE")
    parser.add_argument(
        "input", type=Path, metavar="IN", help="recording file, frame folder or folder"
    )
    parser.add_argument("output", type=Path, metavar="OUT", help="output .tif or folder")
    parser.add_argument("--tile", type=int, default=None, help="tile size (default: whole frames)")
    parser.add_argument(
        "--overlap",
        type=int,
        default=None,
        help="tile halo in pixels (default: the network's receptive-field radius, exact)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=8, help="frames or tiles per pass, at most (8)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument(
        "--half",
        dest="half",
        action="store_true",
        default=None,
        help="mixed precision (default on CUDA only)",
    )
    precision.add_argument(
        "--no-half", dest="half", action="store_false", help="full float32 precision"
    )
    parser.add_argument("--compile", action="store_true", help="use torch.compile")
    parser.add_argument(
        "--scale", type=int, default=None, help="upscaling factor of a baseline (default 1)"
    )
    parser.add_argument(
        "--frames",
        type=parse_frame_range,
        default=None,
        metavar="A:B",
        help="only frames A to B-1 of each recording (slice syntax: 10:, :50, 0:100:2)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace outputs that already exist"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from napari_pclesr.infer import SuperResolver, super_resolve_recording

    output_folder = args.output.is_dir() or args.output.suffix == ""
    folder_mode = args.input.is_dir() and output_folder
    if folder_mode:
        jobs, ignored = folder_jobs(args.input, args.output)
    else:
        jobs, ignored = [(args.input, single_output(args.input, args.output))], []
    checkpoint = Path(args.source)
    refuse_overwriting_inputs(
        [output for _, output in jobs],
        [args.input, checkpoint if checkpoint.exists() else None],
    )
    existing = [output for _, output in jobs if output.exists()]
    if existing and not args.overwrite:
        names = ", ".join(str(path) for path in existing[:3])
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise FileExistsError(
            f"{names}{more} already exist{'s' if len(existing) == 1 else ''}; use --overwrite "
            "to replace, or choose another output."
        )
    with _warnings_as_lines():
        resolver = SuperResolver(
            args.source,
            device=args.device,
            tile=args.tile,
            overlap=args.overlap,
            batch_size=args.batch_size,
            half=args.half,
            compile=args.compile,
            scale=args.scale,
        )
        if output_folder:
            args.output.mkdir(parents=True, exist_ok=True)
            for note in ignored:
                print(f"pclesr infer: {note}", file=sys.stderr)
        failed = []
        for source, output in jobs:
            bar = ProgressLine(sys.stderr, source.name)
            try:
                result = super_resolve_recording(
                    source,
                    output,
                    resolver,
                    frames=args.frames,
                    overwrite=args.overwrite,
                    progress=bar,
                )
            except (ValueError, OSError) as exc:
                bar.clear()
                if not folder_mode:
                    raise
                # Our errors start with the file's name; others get it.
                message = str(exc) if str(exc).startswith(str(source)) else f"{source}: {exc}"
                print(f"pclesr infer: skipped {message}", file=sys.stderr)
                failed.append(source)
                continue
            bar.clear()
            print(
                f"{source} -> {output}: {result.n_frames} frame(s) "
                f"{result.frame_shape[0]}x{result.frame_shape[1]} -> "
                f"{result.output_shape[0]}x{result.output_shape[1]} in {result.elapsed_s:.1f} s "
                f"({result.frames_per_s:.1f} frames/s)"
            )
    if folder_mode:
        done = len(jobs) - len(failed)
        failures = f"; {len(failed)} failed: {', '.join(p.name for p in failed)}" if failed else ""
        print(f"{done} of {len(jobs)} recording(s) super-resolved into {args.output}{failures}")
    return EXIT_SOME_FAILED if failed else EXIT_OK


def single_output(source: Path, output: Path) -> Path:
    """The output file for one input: ``output`` itself, or ``output/<name>_sr.tif`` when
    ``output`` is a folder (one that exists, or a path without a suffix)."""
    from napari_pclesr.io import detect_format

    if output.is_dir() or output.suffix == "":
        return output / (source.stem + OUTPUT_SUFFIX)
    if output.suffix.lower() not in TIFF_SUFFIXES:
        raise ValueError(f"the output must be a .tif file or a folder, got {output}.")
    if source.is_dir() and detect_format(source) != "folder":
        raise ValueError(
            f"{source} holds no PNG/TIFF frames to read as one sequence; to super-resolve "
            f"each recording in it, give an output folder instead of {output}."
        )
    return output


def folder_jobs(folder: Path, out_dir: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """The (recording, output) pairs of a folder of recordings, and notes on what is left out.

    Recordings are the ``.mkt``, video and TIFF files directly in ``folder`` and its
    sub-folders of frames. Each goes to ``out_dir/<stem>_sr.tif``; inputs that share a stem
    keep their suffix in the name (``a_mkt_sr.tif``, ``a_tif_sr.tif``).
    """
    from napari_pclesr.io import detect_format
    from napari_pclesr.io.folder import natural_key

    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"the output {out_dir} is a file, not a folder.")
    entries = sorted(
        (entry for entry in folder.iterdir() if not entry.name.startswith(".")),
        key=lambda entry: natural_key(entry.name),
    )
    recordings = [entry for entry in entries if detect_format(entry) in RECORDING_FORMATS]
    if not recordings:
        hint = ""
        if detect_format(folder) == "folder":
            hint = " It holds frame files: to super-resolve them as one sequence, give an OUT.tif."
        raise ValueError(f"{folder} holds no recording (.mkt, video, TIFF or frame folder).{hint}")
    stems = [entry.stem for entry in recordings]
    jobs = []
    for entry in recordings:
        stem = entry.stem
        if stems.count(stem) > 1:
            stem = f"{stem}_{entry.suffix.lstrip('.').lower() or 'frames'}"
        jobs.append((entry, out_dir / (stem + OUTPUT_SUFFIX)))
    notes = []
    frames = [entry for entry in entries if entry.suffix.lower() == ".png"]
    if frames:
        notes.append(
            f"left out {len(frames)} PNG frame(s) in {folder}; a folder of frames is one "
            "recording when it is given with an OUT.tif (or as a sub-folder)."
        )
    other = [entry.name for entry in entries if entry not in recordings and entry not in frames]
    if other:
        notes.append(f"left out {len(other)} entries that are not recordings: {', '.join(other)}")
    return jobs, notes


class ProgressLine:
    """A progress bar on one line: frames done, frames/s and ETA.

    On a terminal it is redrawn in place at most 10 times a second; elsewhere (a log file)
    a line is printed at most every 10 seconds.
    """

    width = 24

    def __init__(self, stream, label: str):
        self.stream = stream
        self.label = label
        self.interactive = bool(getattr(stream, "isatty", lambda: False)())
        # A log gets its first line after 10 s: short runs need only the summary.
        self._last_draw = 0.0 if self.interactive else time.monotonic()
        self._shown = 0

    def __call__(self, progress) -> None:
        from napari_pclesr.cli.train import format_seconds

        now = time.monotonic()
        if now - self._last_draw < (0.1 if self.interactive else 10.0):
            return
        self._last_draw = now
        filled = round(self.width * progress.done / progress.total)
        eta = format_seconds(progress.eta_s) if progress.done < progress.total else "done"
        line = (
            f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
            f"{progress.done}/{progress.total} frames {progress.frames_per_s:.1f} frames/s "
            f"ETA {eta}"
        )
        if self.interactive:
            self.stream.write("\r" + line.ljust(self._shown))
            self._shown = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """Remove the bar from the terminal (the summary line takes its place)."""
        if self.interactive and self._shown:
            self.stream.write("\r" + " " * self._shown + "\r")
            self.stream.flush()
            self._shown = 0


@contextmanager
def _warnings_as_lines():
    """Show warnings as ``pclesr infer: warning: ...`` lines, without source locations."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"pclesr infer: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield
