"""napari-pclesr: super-resolution for probe-based confocal laser endomicroscopy.

The core library has no Qt or napari import; the napari plugin lives in ``_napari``.
Heavy modules (torch models, training) are imported on first use, so ``import
napari_pclesr`` stays fast.
"""

from importlib.metadata import PackageNotFoundError, version

from napari_pclesr.fibre import FibreLayout
from napari_pclesr.simulate import Simulator, simulate_lr

try:
    __version__ = version("napari-pclesr")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"

__all__ = ["FibreLayout", "Simulator", "__version__", "simulate_lr"]
