"""Exception and warning types of :mod:`napari_pclesr.io`.

Every reader raises only these types for bad files (besides ``FileNotFoundError`` and
``PermissionError`` from the operating system), so callers can catch
:class:`PclesrFileError` to handle all of them. Each message names the file and the problem.
"""

from __future__ import annotations

import os


class PclesrFileError(OSError):
    """Base class: a file could not be read or written as asked.

    Parameters
    ----------
    path : str or os.PathLike
        The file concerned; it is kept as ``filename`` and put at the start of the message.
    problem : str
        What is wrong and, where possible, what to do.
    """

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        return type(self), (self.path, self.problem)


class EmptyFileError(PclesrFileError):
    """The file has zero bytes."""


class UnsupportedFormatError(PclesrFileError):
    """The file's type is not one that :mod:`napari_pclesr.io` reads or writes."""


class CorruptFileError(PclesrFileError):
    """The file claims a supported format but its content is damaged or inconsistent."""


class MktFormatError(CorruptFileError):
    """A Cellvizio ``.mkt`` file breaks the chunk layout (wrong magic, bad chunk, no frame)."""


class FrameSizeError(MktFormatError):
    """An ``.mkt`` frame size fits none of the known frame widths (576 or 512 pixels)."""


class InconsistentFramesError(PclesrFileError):
    """The frames of a folder (or stack) do not share one size."""


class LayoutFileError(PclesrFileError, ValueError):
    """A fibre-layout file holds bad values (NaN, missing columns, wrong shape).

    It is both an ``OSError`` (a bad file) and a ``ValueError`` (bad values), so code that
    catches either keeps working.
    """


class DamagedFileWarning(UserWarning):
    """A file is truncated or partly damaged; what could be read was opened.

    A truncated recording (the last frame partial) opens with its complete frames.
    """
