"""A quick check, before any data are loaded, that one training step can fit in memory.

A training step keeps every layer's output for the backward pass, so its memory grows with
the batch size times the activations of one patch. These are counted by running the network
once on one patch on PyTorch's ``meta`` device (shapes only: no memory, no arithmetic). The
count is a lower bound of a step's needs; a batch whose lower bound exceeds the free memory
can never fit, and is refused at once instead of failing many seconds later.
"""

from __future__ import annotations

import contextlib
import os

import torch

__all__ = ["available_memory", "check_batch_fits", "step_bytes_per_patch"]


def check_batch_fits(config, device: torch.device, model: torch.nn.Module | None = None) -> None:
    """Raise ``ValueError`` if ``config.batch_size`` patches cannot fit in ``device``'s memory.

    Parameters
    ----------
    config : TrainConfig
    device : torch.device
    model : torch.nn.Module, optional
        The network to train (else the registry network ``config.model``).
    """
    free = available_memory(device)
    per_patch = step_bytes_per_patch(config, device, model)
    if free is None or per_patch is None or config.batch_size * per_patch <= free:
        return
    # A step needs more than the lower bound (gradients, workspace): suggest half of it.
    largest = max(1, free // (2 * per_patch))
    name = config.model or type(model).__name__
    raise ValueError(
        f"batch size {config.batch_size} does not fit in memory: one training step of {name} "
        f"on {config.patch_size}x{config.patch_size} patches needs at least "
        f"{_gib(config.batch_size * per_patch)} ({_gib(per_patch)} per patch), but "
        f"{device} has {_gib(free)} free. Use a batch size of at most {largest:,}, smaller "
        "patches, or a device with more memory."
    )


def step_bytes_per_patch(
    config, device: torch.device, model: torch.nn.Module | None = None
) -> int | None:
    """A lower bound of the memory one training patch takes in a step, in bytes.

    The sum of the outputs of the network's layers (kept for the backward pass; in-place
    layers share their input's memory), plus the LR and HR patch, its augmented copy and the
    prediction's gradient. ``None`` when the network cannot run on the ``meta`` device.
    """
    from napari_pclesr.devices import autocast_dtype

    amp = autocast_dtype(device) if config.amp else None
    element = 2 if amp in (torch.float16, torch.bfloat16) else 4
    outputs = _layer_output_elements(config, model)
    if outputs is None:
        return None
    lr_pixels = config.patch_size**2
    hr_pixels = lr_pixels * config.scale**2
    return outputs * element + 4 * (2 * lr_pixels + 3 * hr_pixels)


def available_memory(device: torch.device) -> int | None:
    """Free memory of ``device`` in bytes (for the CPU: available RAM); None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    with contextlib.suppress(ImportError):
        import psutil

        return int(psutil.virtual_memory().available)
    try:
        with open("/proc/meminfo", encoding="ascii") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    pages = os.sysconf("SC_AVPHYS_PAGES") if hasattr(os, "sysconf") else None
    return None if pages is None else pages * os.sysconf("SC_PAGE_SIZE")


def _layer_output_elements(config, model: torch.nn.Module | None) -> int | None:
    """Elements of all layer outputs for one patch, counted on the meta device."""
    from napari_pclesr import models

    if model is None:
        if config.model is None:
            return None
        with torch.device("meta"):
            model = models.create(config.model, scale=config.scale, **config.hparams)
    else:
        try:
            model = _meta_copy(model)
        except Exception:  # a module that cannot be copied: no estimate
            return None
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if not getattr(module, "inplace", False):
            outputs = output if isinstance(output, tuple | list) else (output,)
            total += sum(item.numel() for item in outputs if torch.is_tensor(item))

    leaves = [module for module in model.modules() if not any(module.children())]
    handles = [module.register_forward_hook(count) for module in leaves]
    try:
        with torch.no_grad():
            model(torch.empty(1, 1, config.patch_size, config.patch_size, device="meta"))
    except Exception:  # an operation without a meta kernel: no estimate
        return None
    finally:
        for handle in handles:
            handle.remove()
    return total


def _meta_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` with its parameters and buffers on the meta device (no memory)."""
    import copy

    memo = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        meta = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = (
            torch.nn.Parameter(meta) if isinstance(tensor, torch.nn.Parameter) else meta
        )
    return copy.deepcopy(model, memo)


def _gib(n_bytes: float) -> str:
    if n_bytes >= 2**30:
        return f"{n_bytes / 2**30:,.1f} GiB"
    return f"{n_bytes / 2**20:,.1f} MiB"
