"""Pieces shared by the docks: grey-layer checks, FoV masks, devices, status, workers."""

from __future__ import annotations

import numpy as np
from magicgui.widgets import Container, Label

FOV_MASK_KEY = "fov_mask"


def device_choices() -> list[tuple[str, str]]:
    """(label, value) pairs for a device combo box: ``auto`` first, then every device here.

    CUDA devices are labelled with the GPU's name, and ``auto`` with the device it picks, so
    the user sees at once whether a GPU will be used.
    """
    import torch

    from napari_pclesr.devices import available_devices, select_device

    def label(name: str) -> str:
        if name.startswith("cuda"):
            return f"{name} ({torch.cuda.get_device_name(torch.device(name))})"
        return name

    return [(f"auto: {label(str(select_device('auto')))}", "auto")] + [
        (label(name), name) for name in available_devices()
    ]


def image_frames(layer, role: str) -> np.ndarray:
    """The data of a grey image layer as an array (H, W) or (T, H, W).

    Raises
    ------
    ValueError
        With a message for the user when no layer is chosen, or the layer is RGB, empty or
        has another number of dimensions.
    """
    if layer is None:
        raise ValueError(f"Pick the {role} image layer first (open an image or a sample).")
    if getattr(layer, "rgb", False):
        raise ValueError(
            f"Layer '{layer.name}' is RGB; the {role} image must be grey (convert it with "
            "Layers > Split RGB, or skimage.color.rgb2gray)."
        )
    data = layer.data
    shape = tuple(data.shape)
    if len(shape) not in (2, 3) or 0 in shape:
        raise ValueError(
            f"Layer '{layer.name}' has shape {shape}; the {role} image must be a frame (H, W) "
            "or a stack (T, H, W) with at least one pixel."
        )
    return data


def layer_fov_mask(layer, frame_shape) -> np.ndarray | None:
    """The layer's ``metadata["fov_mask"]`` if it is a boolean mask of the frame shape."""
    mask = layer.metadata.get(FOV_MASK_KEY)
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != tuple(frame_shape):
        return None
    return mask


class WorkerDock(Container):
    """A dock that runs one background worker at a time and survives being closed mid-run.

    When napari deletes the dock's Qt widget (the dock is closed, or the viewer), the running
    job is asked to end (:meth:`_abandon`) and the worker's later signals are ignored, as
    they would otherwise touch deleted widgets.
    """

    def __init__(self, widgets):
        super().__init__(widgets=widgets)
        self.worker = None
        self.closed = False
        self.native.destroyed.connect(self._on_destroyed)

    def _connect(self, signal, handler) -> None:
        """Connect a worker signal to ``handler`` for as long as the dock exists."""
        signal.connect(lambda *args: None if self.closed else handler(*args))

    def _on_destroyed(self, _object=None) -> None:
        self.closed = True
        if self.worker is not None:
            self._abandon()

    def _abandon(self) -> None:
        """End the running job without touching the (deleted) widgets."""
        raise NotImplementedError


def report(status_label: Label, message: str, error: bool = False) -> None:
    """Show ``message`` in a dock's status line, and as a napari warning if it is an error."""
    status_label.value = message
    if error:
        from napari.utils.notifications import show_warning

        show_warning(message)
