"""Atomic file writes: a result is either complete on disk or absent, never half-written."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path`` in one step.

    The temporary name keeps the target's suffix, so writers that choose a format by suffix
    (``np.save``, ``tifffile``) behave as for the target. If the block raises, the temporary
    file is removed and any existing ``path`` is left untouched.

    Examples
    --------
    >>> with atomic_path("out.npy") as tmp:  # doctest: +SKIP
    ...     np.save(tmp, array)
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the folder {path.parent} does not exist.")
    handle, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
