"""Atomic file writes: a result is either complete on disk or absent, never half-written.

A write goes to a temporary file beside the target, named ``.STEM.PID.HOST.TOKEN.SUFFIX``, which
is renamed onto the target in one step. A process killed mid-write (``kill -9``, power loss)
leaves its temporary file behind; the next write of the same target removes it, but only once
the process named in it is gone, so a concurrent writer's file is never touched.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "os_error_cause", "remove_stale_temporaries"]

# A write that fails while less than this is free on the target's file system ran out of space.
_FULL_DISK_BYTES = 2**20


@contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path`` in one step.

    The temporary name keeps the target's suffix, so writers that choose a format by suffix
    (``np.save``, ``tifffile``) behave as for the target. The file gets the mode a plain
    ``open()`` would give (``0o666`` less the umask). If the block raises, the temporary
    file is removed and any existing ``path`` is left untouched. Temporary files of earlier
    writes of ``path`` whose process has died are removed first.

    Raises
    ------
    FileNotFoundError
        If the folder of ``path`` does not exist.
    OSError
        If writing fails for a reason of the file system (no space left, permission denied,
        file too large, ...): the message names ``path`` and the cause.

    Examples
    --------
    >>> with atomic_path("out.npy") as tmp:  # doctest: +SKIP
    ...     np.save(tmp, array)
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the folder {path.parent} does not exist.")
    remove_stale_temporaries(path)
    temporary = _create_temporary(path)
    try:
        try:
            yield temporary
            os.replace(temporary, path)
        except Exception as exc:
            explained = _write_error(exc, path, temporary)
            if explained is None:
                raise
            raise explained from exc
    finally:
        temporary.unlink(missing_ok=True)


def remove_stale_temporaries(path) -> list[Path]:
    """Remove the temporary files that killed writes of ``path`` left behind; return them.

    Only files written by this host whose process no longer exists are removed: a temporary
    file of a live writer (another process, or another thread of this one) stays.
    """
    path = Path(path)
    pattern = re.compile(
        rf"\.{re.escape(path.stem)}\.(?P<pid>\d+)\.(?P<host>[A-Za-z0-9-]+)\.[0-9a-f]{{8}}"
        rf"{re.escape(path.suffix)}"
    )
    removed = []
    try:
        candidates = list(path.parent.glob(f".{_glob_escape(path.stem)}.*"))
    except OSError:
        return removed
    for candidate in candidates:
        match = pattern.fullmatch(candidate.name)
        if match is None or match["host"] != _host_tag():
            continue
        if not _process_exists(int(match["pid"])):
            try:
                candidate.unlink()
            except OSError:
                continue  # gone already, or not ours to remove: harmless either way
            removed.append(candidate)
    return removed


def _glob_escape(text: str) -> str:
    """``text`` with the glob wildcards ``*``, ``?`` and ``[`` taken literally."""
    return re.sub(r"([*?[])", r"[\1]", text)


def _create_temporary(path: Path) -> Path:
    """Create an empty temporary file for ``path``; its mode follows the umask."""
    while True:
        name = f".{path.stem}.{os.getpid()}.{_host_tag()}.{secrets.token_hex(4)}{path.suffix}"
        temporary = path.with_name(name)
        try:
            # Mode 0o666 and the kernel applies the umask, as for open(path, "w").
            handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"cannot write {path}: {os_error_cause(exc)} (in the folder {path.parent}).",
            ) from exc
        os.close(handle)
        return temporary


def _write_error(exc: Exception, path: Path, temporary: Path) -> OSError | None:
    """An ``OSError`` naming ``path`` and the cause, when ``exc`` is a failed write; else None.

    Writers report a failed write in different ways: an ``OSError`` with an errno, one without
    (tifffile), or a ``RuntimeError`` raised while handling the ``OSError`` (torch). Errors
    about other files (e.g. reading an input inside the block) are left alone.
    """
    if not isinstance(exc, OSError | RuntimeError):
        return None  # bad values, not a failed write
    for error in _chain(exc):
        names = (None, str(temporary), str(path))
        if isinstance(error, OSError) and error.errno is not None and error.filename in names:
            return OSError(error.errno, f"cannot write {path}: {os_error_cause(error)}.")
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return None
    if free < _FULL_DISK_BYTES:
        return OSError(
            errno.ENOSPC,
            f"cannot write {path}: no space left on the device ({free:,} bytes free); free some "
            "space or write to another disk. Nothing was written over an existing file.",
        )
    return None


def _chain(exc: BaseException, depth: int = 5) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling, innermost last."""
    while exc is not None and depth > 0:
        yield exc
        exc = exc.__cause__ or exc.__context__
        depth -= 1


def os_error_cause(exc: OSError) -> str:
    """The cause of an OS error in words, with advice for the common ones."""
    advice = {
        errno.ENOSPC: "no space left on the device; free some space or write to another disk",
        errno.EACCES: "permission denied; check the permissions of the file and its folder",
        errno.EPERM: "operation not permitted; check the permissions of the file and its folder",
        errno.EROFS: "the file system is read-only; write to another folder",
        errno.EFBIG: "the file is too large for this file system or the file-size limit",
        errno.EISDIR: "it is a folder; give a file name",
    }
    return advice.get(exc.errno, (exc.strerror or str(exc)).lower())


def _host_tag() -> str:
    """This machine's name, reduced to letters, digits and hyphens (at most 32)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"


def _process_exists(pid: int) -> bool:
    if os.name != "posix":
        return True  # no safe liveness test (os.kill(pid, 0) would signal it): keep the file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists but belongs to someone else
    return True
