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
``sha256``                ``{"state_dict": hex, "normalisation": hex}``: SHA-256 digests of the
                          weights and of the normalisation, checked on load
========================  ==================================================================

Files are written atomically (temporary file in the same folder, then ``os.replace``). Weights
that hold NaN or infinity are never written. :func:`load_checkpoint` recomputes the digests and
refuses a file whose weights or normalisation changed since it was written (a flipped bit on
disk or in a copy); a file without digests (written before they were added) loads with a
:class:`UnverifiedCheckpointWarning`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from napari_pclesr._atomic import atomic_path
from napari_pclesr.data.patches import Normalisation

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "RUN_FILES",
    "CheckpointError",
    "UnverifiedCheckpointWarning",
    "check_run_folder",
    "checkpoint_digests",
    "load_checkpoint",
    "load_model",
    "non_finite_weight",
    "save_checkpoint",
    "validate_checkpoint",
]

FORMAT_NAME = "napari-pclesr-checkpoint"
FORMAT_VERSION = 1
_REQUIRED = ("model", "state_dict", "normalisation", "config", "history", "iteration")
#: The parts of a checkpoint whose SHA-256 is stored under ``"sha256"``.
_DIGESTED = ("state_dict", "normalisation")
#: The files of a training run's output folder.
RUN_FILES = ("best.pt", "last.pt")


class CheckpointError(ValueError):
    """A file is not a usable napari-pclesr checkpoint (corrupted, foreign or too new)."""


class UnverifiedCheckpointWarning(UserWarning):
    """A checkpoint carries no SHA-256 of its weights, so corruption cannot be detected."""


def save_checkpoint(checkpoint: dict, path) -> Path:
    """Write ``checkpoint`` to ``path`` atomically and return the path.

    ``format``, ``format_version``, ``package_version`` and the ``sha256`` digests are filled
    in. The dict must hold only plain values and tensors (anything else could not be loaded
    with ``weights_only=True``).

    Raises
    ------
    ValueError
        If a weight holds NaN or infinity (nothing is written then).
    """
    from napari_pclesr import __version__

    path = Path(path)
    bad = non_finite_weight(checkpoint.get("state_dict", {}))
    if bad is not None:
        raise ValueError(
            f"refusing to write {path}: the weight {bad!r} holds NaN or infinite values (the "
            "training diverged). Lower the learning rate and train again."
        )
    payload = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION}
    payload["package_version"] = __version__
    payload.update({k: v for k, v in checkpoint.items() if k not in payload})
    payload["sha256"] = checkpoint_digests(payload)
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read and check a checkpoint file, including the SHA-256 of its weights.

    ``path`` may also name a shipped network, ``"pretrained:fsrcnn"`` (see
    :mod:`napari_pclesr.pretrained`).

    Raises
    ------
    FileNotFoundError, IsADirectoryError, PermissionError
        If ``path`` does not exist, is a folder, or may not be read.
    CheckpointError
        If the file is truncated or corrupted (its weights or normalisation no longer match
        their SHA-256, or hold NaN or infinity), is not a napari-pclesr checkpoint, or was
        written by a newer format version.
    ValueError
        If ``path`` is ``pretrained:NAME`` and no pretrained network has that name.
    """
    from napari_pclesr import pretrained

    path = Path(pretrained.resolve(path))
    if path.is_dir():
        inside = [name for name in RUN_FILES if (path / name).is_file()]
        hint = f"; it holds {' and '.join(inside)}" if inside else ""
        raise IsADirectoryError(
            errno.EISDIR,
            f"checkpoint {path} is a directory, not a file{hint}. Give the checkpoint file, "
            f"e.g. {path / RUN_FILES[0]}.",
        )
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist.")
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below; open errors are reported apart
    except PermissionError as exc:
        raise PermissionError(
            exc.errno, f"cannot read checkpoint {path}: permission denied; check its permissions."
        ) from exc
    with handle:
        try:
            payload = torch.load(handle, map_location=map_location, weights_only=True)
        except Exception as exc:  # torch raises many types for damaged files; all mean the same
            raise CheckpointError(
                f"{path} cannot be read as a checkpoint (truncated, corrupted, or not a torch "
                f"file): {_load_failure(exc)}. Use another checkpoint "
                "(best.pt or last.pt of the run) or train again."
            ) from exc
    payload = validate_checkpoint(payload, source=str(path))
    _verify_digests(payload, str(path))
    return payload


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


def checkpoint_digests(payload: Mapping) -> dict[str, str]:
    """SHA-256 hex digests of a checkpoint's weights and normalisation.

    A digest covers every tensor's name, dtype, shape and bytes, and every plain value's type
    and ``repr``, in a fixed order, so it changes with any changed bit of the weights.
    """
    digests = {}
    for part in (part for part in _DIGESTED if part in payload):
        hasher = hashlib.sha256()
        _feed(hasher, payload[part])
        digests[part] = hasher.hexdigest()
    return digests


def check_run_folder(out_dir, *, resume=None, overwrite: bool = False) -> list[Path]:
    """Refuse to train into a folder that holds another run, unless asked to replace it.

    Parameters
    ----------
    out_dir : str, os.PathLike or None
        The run's output folder (``None``: the run writes nothing).
    resume : str or os.PathLike, optional
        The checkpoint the run continues from; continuing a run inside ``out_dir`` is allowed.
    overwrite : bool
        Replace the run in ``out_dir``.

    Returns
    -------
    list of Path
        The checkpoint files of the earlier run that this one replaces (empty unless
        ``overwrite`` is set and there are some); the caller removes them once the run is set
        up, so that no file of the earlier run is mistaken for one of the new run.

    Raises
    ------
    FileExistsError
        If ``out_dir`` holds ``best.pt`` or ``last.pt`` of another run and ``overwrite`` is
        False. The message describes that run and says what to do.
    NotADirectoryError
        If ``out_dir`` is a file.
    """
    if out_dir is None:
        return []
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(
            errno.ENOTDIR, f"the output folder {folder} is a file; choose a folder for the run."
        )
    existing = [folder / name for name in RUN_FILES if (folder / name).exists()]
    continuing = resume is not None and Path(resume).resolve().parent == folder.resolve()
    if not existing or continuing:
        return []
    if overwrite:
        return existing
    raise FileExistsError(
        errno.EEXIST,
        f"{folder} already holds a training run ({_describe_run(existing)}). Continue it with "
        f"--resume {folder / RUN_FILES[1]}, choose another output folder, or replace it with "
        "--overwrite (TrainConfig(overwrite=True)).",
    )


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


def _verify_digests(payload: dict, source: str) -> None:
    stored = payload.get("sha256")
    if stored is None:
        warnings.warn(
            f"{source} carries no SHA-256 of its weights (it was written by napari-pclesr "
            f"{payload.get('package_version', '?')}), so corruption cannot be detected; "
            "save_checkpoint(load_checkpoint(path), path) adds it.",
            UnverifiedCheckpointWarning,
            stacklevel=3,
        )
    else:
        actual = checkpoint_digests(payload)
        changed = [part for part in _DIGESTED if stored.get(part) != actual[part]]
        if changed:
            raise CheckpointError(
                f"{source} is corrupted: its {' and '.join(changed)} no longer match the SHA-256 "
                "written with them (the file was damaged on disk or in a copy). Use another "
                "copy or checkpoint (best.pt or last.pt of the run), or train again."
            )
    bad = non_finite_weight(payload["state_dict"])
    if bad is not None:
        raise CheckpointError(
            f"{source} is unusable: its weight {bad!r} holds NaN or infinite values (the "
            "training that wrote it diverged). Train again with a lower learning rate."
        )


def _feed(hasher, value) -> None:
    """Add ``value`` (nested dicts, lists, tensors, plain values) to ``hasher``, unambiguously."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        hasher.update(f"tensor {tensor.dtype} {tuple(tensor.shape)}:".encode())
        hasher.update(_c_order_bytes(tensor))
    elif isinstance(value, Mapping):
        hasher.update(f"dict {len(value)}:".encode())
        for key in sorted(value, key=repr):
            _feed(hasher, key)
            _feed(hasher, value[key])
    elif isinstance(value, list | tuple):
        hasher.update(f"list {len(value)}:".encode())
        for item in value:
            _feed(hasher, item)
    else:
        text = repr(value)
        hasher.update(f"{type(value).__name__} {len(text)}:{text}".encode())


def _c_order_bytes(tensor: torch.Tensor):
    """The bytes of ``tensor``'s values in C order, whatever its memory layout.

    NumPy makes the C-order copy of a strided (e.g. channels-last) tensor; torch's own
    ``contiguous()`` is 20-30 times slower on a CPU shared with other work.
    """
    try:
        array = tensor.numpy()
    except TypeError:  # a dtype NumPy lacks (bfloat16): reinterpret the C-order copy
        return tensor.contiguous().reshape(-1).view(torch.uint8).numpy()
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def non_finite_weight(weights: Mapping) -> str | None:
    """The name of the first floating-point tensor of ``weights`` holding NaN or infinity.

    ``None`` when all are finite. CPU tensors are checked with NumPy (torch's own check is many
    times slower on a busy CPU); tensors on an accelerator are checked there, with one
    synchronisation for all of them.
    """
    on_device = {}
    for name, tensor in weights.items():
        if not (torch.is_tensor(tensor) and tensor.is_floating_point()):
            continue
        tensor = tensor.detach()
        if tensor.device.type != "cpu":
            on_device[name] = torch.isfinite(tensor).all()
            continue
        try:
            finite = bool(np.isfinite(tensor.numpy()).all())
        except TypeError:  # a dtype NumPy lacks (bfloat16)
            finite = bool(torch.isfinite(tensor).all())
        if not finite:
            return name
    if on_device:
        flags = torch.stack(list(on_device.values())).cpu().tolist()
        bad = [name for name, finite in zip(on_device, flags, strict=True) if not finite]
        return bad[0] if bad else None
    return None


def _describe_run(files: list[Path]) -> str:
    """``"best.pt at iteration 40 (val loss 0.48), last.pt at iteration 50"``, as far as known."""
    parts = []
    for path in files:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            best = payload.get("resume", {}).get("best_val_loss")
            loss = f" (best val loss {best:.4g})" if isinstance(best, float) else ""
            parts.append(f"{path.name} at iteration {int(payload['iteration'])}{loss}")
        except Exception:  # unreadable or foreign: it still is a file we would replace
            parts.append(path.name)
    return ", ".join(parts)


def _load_failure(exc: BaseException) -> str:
    """Why ``torch.load`` failed, without its advice to retry with ``weights_only=False``,
    which would run whatever code a damaged or foreign file holds."""
    if isinstance(exc, pickle.UnpicklingError):
        return "UnpicklingError: it holds something other than tensors and plain values"
    return f"{type(exc).__name__}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no details"
