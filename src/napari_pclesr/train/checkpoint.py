"""Checkpoints: one ``torch.save`` file holding a model and everything needed to use or resume it.

A checkpoint is a dict of plain Python values and tensors only, so it loads with
``torch.load(..., weights_only=True)`` (no arbitrary code runs on load):

========================  ==================================================================
``format``                ``"napari-pclesr-checkpoint"``
``format_version``        int; a file from a newer version is refused with a clear error
``package_version``       the napari-pclesr version that wrote it
``kind``                  ``"best"`` or ``"last"``
``iteration``             iterations done
``model``                 ``{"name", "hparams", "scale"}`` (name None: a custom module)
``state_dict``            the network weights
``normalisation``         training-set LR/HR mean and std (see ``data.patches``)
``config``                the full :class:`~napari_pclesr.train.TrainConfig` as a dict
``history``               the loss curve (:class:`~napari_pclesr.train.TrainingHistory`)
``split``                 names of the train/val/test sequences
``resume``                optimiser, schedule, gradient scaler, early-stopping counters and
                          per-process random states and batch order
========================  ==================================================================

Files are written atomically (temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from napari_pclesr._atomic import atomic_path
from napari_pclesr.data.patches import Normalisation

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CheckpointError",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
    "validate_checkpoint",
]

FORMAT_NAME = "napari-pclesr-checkpoint"
FORMAT_VERSION = 1
_REQUIRED = ("model", "state_dict", "normalisation", "config", "history", "iteration")


class CheckpointError(ValueError):
    """A file is not a usable napari-pclesr checkpoint (corrupted, foreign or too new)."""


def save_checkpoint(checkpoint: dict, path) -> Path:
    """Write ``checkpoint`` to ``path`` atomically and return the path.

    ``format``, ``format_version`` and ``package_version`` are filled in. The dict must hold
    only plain values and tensors (anything else could not be loaded with
    ``weights_only=True``).
    """
    from napari_pclesr import __version__

    payload = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION}
    payload["package_version"] = __version__
    payload.update({k: v for k, v in checkpoint.items() if k not in payload})
    path = Path(path)
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read and check a checkpoint file.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    CheckpointError
        If the file is truncated or corrupted, is not a napari-pclesr checkpoint, or was
        written by a newer format version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for damaged files; all mean the same here
        raise CheckpointError(
            f"{path} cannot be read as a checkpoint (truncated, corrupted, or not a torch file): "
            f"{type(exc).__name__}: {_first_line(exc)}. Use another checkpoint (best.pt or "
            "last.pt of the run) or train again."
        ) from exc
    return validate_checkpoint(payload, source=str(path))


def validate_checkpoint(payload, source: str = "checkpoint") -> dict:
    """Check that ``payload`` is a checkpoint dict this version can read; return it."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{source} is not a napari-pclesr checkpoint (it has no "
            f"'format': '{FORMAT_NAME}' entry); give a best.pt/last.pt written by pclesr train."
        )
    version = payload.get("format_version")
    if not isinstance(version, int):
        raise CheckpointError(f"{source} has no valid format_version; the file is damaged.")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{source} was written by napari-pclesr {payload.get('package_version', '?')} in "
            f"checkpoint format {version}, but this napari-pclesr reads format "
            f"{FORMAT_VERSION} and older; upgrade napari-pclesr to load it."
        )
    missing = [key for key in _REQUIRED if key not in payload]
    if missing:
        raise CheckpointError(
            f"{source} lacks {', '.join(missing)}; the checkpoint is incomplete or damaged."
        )
    return payload


def load_model(checkpoint, device="cpu", *, model=None):
    """Rebuild the network of a checkpoint and load its weights.

    Parameters
    ----------
    checkpoint : str, os.PathLike or dict
        A checkpoint file or a loaded checkpoint dict.
    device : str or torch.device
        Where to put the network (``"auto"`` allowed).
    model : torch.nn.Module, optional
        Load the weights into this module instead of building one from the registry; needed
        for checkpoints of custom modules (model name None).

    Returns
    -------
    model : torch.nn.Module
        In eval mode, on ``device``.
    normalisation : Normalisation
        The training-set statistics to apply at inference.

    Raises
    ------
    CheckpointError
        If the weights do not fit the network, or the network cannot be rebuilt.
    """
    from napari_pclesr.devices import select_device

    if isinstance(checkpoint, dict):
        payload = validate_checkpoint(checkpoint)
        source = "the checkpoint"
    else:
        payload = load_checkpoint(checkpoint)
        source = str(checkpoint)
    spec = payload["model"]
    if model is None:
        if spec.get("name") is None:
            raise CheckpointError(
                f"{source} holds the weights of a custom network (no registry name); build the "
                "network and pass it as load_model(..., model=network)."
            )
        from napari_pclesr import models

        hparams = dict(spec.get("hparams") or {})
        scale = hparams.pop("scale", spec.get("scale", 1))
        try:
            model = models.create(spec["name"], scale=scale, **hparams)
        except ValueError as exc:
            raise CheckpointError(
                f"{source}: cannot rebuild model {spec['name']!r}: {exc}"
            ) from exc
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        details = " ".join(line.strip() for line in str(exc).splitlines()[:3])
        raise CheckpointError(f"{source}: the weights do not fit the network: {details}") from exc
    model.to(select_device(device)).eval()
    return model, Normalisation.from_dict(payload["normalisation"])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no details"
