"""Fibre layouts: positions of the fibres of a bundle, synthetic bundles and core detection."""

from napari_pclesr.fibre.layout import FibreLayout
from napari_pclesr.fibre.synthetic import fibre_count_for

__all__ = ["FibreLayout", "fibre_count_for"]
