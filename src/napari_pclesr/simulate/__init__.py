"""The fibre-bundle simulator: Voronoi averaging, noise and Delaunay interpolation.

:class:`VoronoiPooling` (the same averaging as a differentiable torch module) and
:class:`FibreSignalReader` (fibre values read back from reconstructed frames) are imported on
first use, so that ``import napari_pclesr`` does not import torch.
"""

from napari_pclesr.simulate.simulator import Simulator, simulate_lr

__all__ = ["FibreSignalReader", "Simulator", "VoronoiPooling", "pool_slots", "simulate_lr"]

_LAZY = {
    "VoronoiPooling": "napari_pclesr.simulate.voronoi",
    "pool_slots": "napari_pclesr.simulate.voronoi",
    "FibreSignalReader": "napari_pclesr.simulate.readout",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
