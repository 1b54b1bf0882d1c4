"""What the `pclesr` sub-commands share: exit statuses, a guard against overwriting inputs."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_SOME_FAILED",
    "EXIT_STATUSES",
    "EXIT_STOPPED",
    "EXIT_TERMINATED",
    "refuse_overwriting_inputs",
]

#: Everything worked.
EXIT_OK = 0
#: A batch command finished, but some of its files failed (each is reported).
EXIT_SOME_FAILED = 1
#: Bad input or settings: nothing useful was done (the message says why and what to do).
EXIT_BAD_INPUT = 2
#: A training run was stopped on request (Ctrl-C or SIGTERM) after saving ``last.pt``.
EXIT_STOPPED = 3
#: Aborted by Ctrl-C (for ``train``: a second one), without saving (128 + SIGINT).
EXIT_INTERRUPTED = 130
#: Ended by SIGTERM outside training, its temporary files removed (128 + SIGTERM).
EXIT_TERMINATED = 143

#: Every exit status with its meaning, for ``pclesr --help`` and the docs.
EXIT_STATUSES = {
    EXIT_OK: "success",
    EXIT_SOME_FAILED: "some files of a batch failed (each one is reported)",
    EXIT_BAD_INPUT: "bad input, settings or environment, or out of memory (one-line message)",
    EXIT_STOPPED: "training stopped on request (Ctrl-C or SIGTERM) after saving last.pt",
    EXIT_INTERRUPTED: "aborted by Ctrl-C (in training: the second one), nothing saved",
    EXIT_TERMINATED: "ended by SIGTERM outside training; no partial file is left",
}


def refuse_overwriting_inputs(outputs: Iterable, inputs: Iterable) -> None:
    """Raise ``ValueError`` if any output path is one of the input paths (or inside an input
    folder).

    Paths are compared after resolving symbolic links and ``..``, and by inode where both
    exist, so ``./a.tif``, ``a.tif`` and a hard link to it are all the same file.

    Parameters
    ----------
    outputs, inputs : iterable of str or os.PathLike (``None`` entries are ignored)
    """
    resolved_inputs = [(Path(p), Path(p).resolve()) for p in inputs if p is not None]
    for output in outputs:
        if output is None:
            continue
        target = Path(output).resolve()
        for given, source in resolved_inputs:
            same = target == source or _same_file(target, source)
            if same or (source.is_dir() and source in target.parents):
                where = "is" if same else "lies inside"
                raise ValueError(
                    f"refusing to write {output}: it {where} the input {given}, which would be "
                    "lost. Choose another output path."
                )


def _same_file(first: Path, second: Path) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them does not exist yet
        return False
