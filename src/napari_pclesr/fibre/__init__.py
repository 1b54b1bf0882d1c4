"""Fibre layouts: positions of the fibres of a bundle, synthetic bundles and core detection."""

from napari_pclesr.fibre.layout import FibreLayout

__all__ = ["FibreLayout"]
