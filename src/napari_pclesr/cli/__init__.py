"""The ``pclesr`` command line.

Each sub-command lives in its own module with a ``register(subparsers)`` function that adds
its parser and sets ``handler``. Heavy imports happen inside the handlers, so ``pclesr --help``
is fast.

Errors a user can cause (bad files or settings, missing permissions, a full disk, too little
memory, an interrupted run) end with a one-line message that names the file and the cause, and
an exit status of :mod:`napari_pclesr.cli._common`; ``--debug`` adds the traceback. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import signal
import sys
import threading
import traceback

from napari_pclesr import __version__
from napari_pclesr.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STATUSES,
    EXIT_TERMINATED,
)

COMMAND_MODULES = (
    "simulate",
    "demo",
    "metrics",
    "io_commands",
    "train",
    "infer",
    "models",
    "export",
    "mosaic",
)

# What to change when a command runs out of memory.
_MEMORY_ADVICE = {
    "train": "use a smaller --batch-size or --patch-size, or a device with more memory",
    "infer": "use --tile (e.g. 256) or a smaller --batch-size, or a device with more memory",
    "demo": "use a smaller --batch-size or --size",
}


class Terminated(BaseException):
    """SIGTERM arrived: unwind (removing temporary files) and exit with ``EXIT_TERMINATED``.

    A ``BaseException``, like ``KeyboardInterrupt``, so that ``except Exception`` clauses on
    the way do not swallow it.
    """


def build_parser() -> argparse.ArgumentParser:
    statuses = "\n".join(f"  {code:<4}{meaning}" for code, meaning in EXIT_STATUSES.items())
    parser = argparse.ArgumentParser(
        prog="pclesr",
        description="Super-resolution for probe-based confocal laser endomicroscopy (pCLE).",
        epilog=f"exit statuses:\n{statuses}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"napari-pclesr {__version__}")
    debug_help = "print the traceback of an error (for bug reports)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"napari_pclesr.cli.{name}").register(subparsers)
    for subparser in subparsers.choices.values():
        # Also after the command; SUPPRESS keeps a `pclesr --debug COMMAND` from being reset.
        subparser.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``pclesr``; returns the exit status (see :data:`~._common.EXIT_STATUSES`)."""
    args = build_parser().parse_args(argv)
    prefix = f"pclesr {args.command}"
    with _terminate_on_sigterm():
        try:
            return args.handler(args) or EXIT_OK
        except KeyboardInterrupt:
            return _fail(f"{prefix}: interrupted", EXIT_INTERRUPTED, args.debug)
        except Terminated:
            return _fail(f"{prefix}: terminated (SIGTERM)", EXIT_TERMINATED, args.debug)
        except Exception as exc:
            message = describe_error(exc, args.command)
            if message is None:
                raise  # a bug: keep the traceback
            return _fail(f"{prefix}: error: {message}", EXIT_BAD_INPUT, args.debug)


def describe_error(exc: BaseException, command: str = "") -> str | None:
    """The one-line message for an error a user can cause, or None for anything else (a bug).

    User errors are ``ValueError`` (bad values or files: our messages say what to do),
    ``OSError`` (files, permissions, disk, network; the file is named) and running out of
    memory (``MemoryError``, torch's out-of-memory ``RuntimeError``).
    """
    if _is_out_of_memory(exc):
        return _describe_out_of_memory(exc, command)
    if isinstance(exc, OSError):
        return _describe_os_error(exc)
    if isinstance(exc, ValueError):
        return str(exc)
    return None


def _describe_os_error(exc: OSError) -> str:
    names = [os.fspath(name) for name in (exc.filename, exc.filename2) if name is not None]
    if exc.strerror is None or not names:
        # Ours (PclesrFileError, atomic writes) name the file in the message already.
        return exc.strerror or str(exc)
    from napari_pclesr._atomic import os_error_cause

    return f"{' -> '.join(map(str, names))}: {os_error_cause(exc)}"


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def _describe_out_of_memory(exc: BaseException, command: str) -> str:
    wanted = re.search(r"allocate (\d+) bytes", str(exc))
    if wanted:
        size = f": it needed {int(wanted.group(1)) / 2**30:.1f} GiB more"
    else:
        wanted = re.search(r"allocate ([\d.]+ [KMGT]iB)", str(exc))
        size = f": it needed {wanted.group(1)} more" if wanted else ""
    advice = _MEMORY_ADVICE.get(command, "use smaller inputs or a machine with more memory")
    return f"out of memory{size}; {advice}."


def _fail(message: str, status: int, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(message, file=sys.stderr)
    return status


class _terminate_on_sigterm:
    """Turn SIGTERM into :class:`Terminated` while a command runs (main thread only)."""

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise Terminated

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False
