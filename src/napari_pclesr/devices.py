"""Choice of the torch device and of the mixed-precision type.

``"auto"`` picks CUDA, then Apple MPS, then the CPU. Asking for a device that this machine does
not have is an error that says what is available, rather than a silent fall-back.
"""

from __future__ import annotations

import torch

__all__ = ["autocast_dtype", "available_devices", "select_device"]


def available_devices() -> list[str]:
    """Names of the devices torch can use here, e.g. ``["cpu", "cuda:0", "cuda:1"]``."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if _mps_available():
        names.append("mps")
    return names


def select_device(device: str | torch.device = "auto") -> torch.device:
    """Return the torch device to compute on.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` (CUDA if available, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``
        or ``"mps"``.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        If the name is not a device name, or the device is not available on this machine.
    """
    if isinstance(device, torch.device):
        request = str(device)
    elif isinstance(device, str):
        request = device.strip().lower()
    else:
        raise ValueError(f"device must be a string such as 'auto' or 'cuda:0', got {device!r}.")
    if request == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(request)
    except RuntimeError:
        raise ValueError(
            f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'."
        ) from None
    available = ", ".join(available_devices())
    if chosen.type == "cpu":
        return chosen
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r} was requested but CUDA is not available (no NVIDIA GPU, or "
                f"torch {torch.__version__} was built without CUDA). Available: {available}. "
                "Use device='auto' or 'cpu'."
            )
        index = chosen.index if chosen.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r} does not exist: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s). Available: {available}."
            )
        return torch.device("cuda", index)
    if chosen.type == "mps":
        if not _mps_available():
            raise ValueError(
                f"device {device!r} was requested but Apple MPS is not available here. "
                f"Available: {available}. Use device='auto' or 'cpu'."
            )
        return chosen
    raise ValueError(
        f"device type {chosen.type!r} is not supported; use 'auto', 'cpu', 'cuda', 'cuda:N' or "
        f"'mps'. Available: {available}."
    )


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The reduced-precision type for automatic mixed precision on ``device``, or ``None``.

    CUDA gets bfloat16 where the GPU supports it (Ampere and newer) and float16 otherwise;
    float16 needs a gradient scaler in training. The CPU and MPS get ``None``: mixed precision
    is not used there, because it is slower or less reliable than float32 on them.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    with torch.cuda.device(device):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
