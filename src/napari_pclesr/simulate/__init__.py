"""The fibre-bundle simulator: Voronoi averaging, noise and Delaunay interpolation."""

from napari_pclesr.simulate.simulator import Simulator, simulate_lr

__all__ = ["Simulator", "simulate_lr"]
