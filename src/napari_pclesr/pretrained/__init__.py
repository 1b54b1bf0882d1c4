"""Pretrained networks shipped in the package, named ``pretrained:NAME`` wherever a checkpoint is
accepted (``pclesr infer``, :func:`napari_pclesr.infer.super_resolve`, the inference dock).

The weights are ordinary napari-pclesr checkpoints (``NAME.pt`` beside this file), trained by the
commands in their model cards (``docs/models.md``); nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PREFIX", "available", "checkpoint_path", "resolve"]

PREFIX = "pretrained:"
_FOLDER = Path(__file__).parent


def available() -> list[str]:
    """Names of the pretrained networks, sorted (``pretrained:NAME`` loads one)."""
    return sorted(p.stem for p in _FOLDER.glob("*.pt"))


def checkpoint_path(name: str) -> Path:
    """The checkpoint file of the pretrained network ``name`` (with or without the prefix).

    Raises
    ------
    ValueError
        If no pretrained network has that name; the message lists those that exist.
    """
    name = name.removeprefix(PREFIX)
    path = _FOLDER / f"{name}.pt"
    if not path.is_file():
        names = ", ".join(PREFIX + n for n in available()) or "none are installed"
        raise ValueError(
            f"no pretrained network is called {name!r}; the pretrained ones are {names}."
        )
    return path


def resolve(source):
    """``source`` with a ``pretrained:NAME`` string replaced by its checkpoint path."""
    if isinstance(source, str | os.PathLike) and str(source).startswith(PREFIX):
        return checkpoint_path(str(source))
    return source
