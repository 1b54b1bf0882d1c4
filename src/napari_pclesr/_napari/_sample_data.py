"""napari sample data, generated on the fly and offline.

* ``phantom``: a 576×576 tissue phantom ("HR (phantom)"), the simulated LR image
  ("LR (simulated)", seed 000's noise, σ_mult = 0.05, σ_add = 0.01) and the 30,000-fibre
  synthetic layout ("fibre layout", hidden).
* ``sequence``: a phantom sequence with smooth probe motion: the true HR frames (with their
  offsets in the canvas) and the simulated LR frames, plus the layout.

Making them takes a few seconds (the phantom, the simulator's set-up). Opened from the
viewer's menu, the HR layer appears at once, black, and is filled from a worker thread, the
other layers following, so the viewer never freezes; from a script everything comes at once.
"""

from __future__ import annotations

import functools

import numpy as np

from napari_pclesr._napari._background import layers_now_or_later
from napari_pclesr._napari._reader import ROLE_KEY, layout_layer

SHAPE = (576, 576)
N_FIBRES = 30000
SEQUENCE_FRAMES = 12
SEED = 0
NOISE = {"sigma_mult": 0.05, "sigma_add": 0.01, "seed": SEED}
LAYOUT_NAME = "fibre layout"


@functools.cache
def _layout():
    from napari_pclesr.fibre import FibreLayout

    return FibreLayout.synthetic(SHAPE, N_FIBRES, seed=SEED)


@functools.cache
def _simulator():
    # Both samples share one layout and simulator; the second sample then costs far less.
    from napari_pclesr.simulate import Simulator

    return Simulator(_layout())


def _image(data, name: str, role: str, metadata: dict) -> tuple:
    attributes = {"name": name, "contrast_limits": [0.0, 1.0], "colormap": "gray"}
    return (data, {**attributes, "metadata": {**metadata, ROLE_KEY: role}}, "image")


def _lr_metadata(simulator, source: str, **extra) -> dict:
    # "simulated_from" lets the simulator dock update this layer when its noise is tuned.
    return {
        "fibre_layout": simulator.layout,
        "fov_mask": simulator.fov_mask,
        "simulator": {**NOISE, "n_fibres": simulator.layout.n_fibres, "signal": "voronoi"},
        "simulated_from": source,
        **extra,
    }


def phantom_layers() -> list[tuple]:
    """The phantom HR frame, its simulated LR frame and the fibre layout, as layer tuples."""
    from napari_pclesr.data import phantom

    simulator = _simulator()
    hr = phantom(SHAPE, seed=SEED)
    lr = simulator.simulate(hr, **NOISE)
    return [
        _image(hr, "HR (phantom)", "hr", {"fov_mask": simulator.fov_mask}),
        _image(lr, "LR (simulated)", "lr", _lr_metadata(simulator, "HR (phantom)")),
        _layout_layer(),
    ]


def sequence_layers() -> list[tuple]:
    """The phantom sequence's true HR frames, simulated LR frames and fibre layout."""
    from napari_pclesr.data import phantom_sequence

    simulator = _simulator()
    sequence = phantom_sequence(n_frames=SEQUENCE_FRAMES, shape=SHAPE, seed=SEED)
    lr = simulator.simulate(sequence.frames, **NOISE)
    truth = {"true_offsets": sequence.offsets, "fov_mask": simulator.fov_mask}
    return [
        _image(sequence.frames, "HR (phantom sequence)", "hr", truth),
        _image(
            lr,
            "LR (simulated sequence)",
            "lr",
            _lr_metadata(simulator, "HR (phantom sequence)", true_offsets=sequence.offsets),
        ),
        _layout_layer(),
    ]


def _layout_layer() -> tuple:
    return layout_layer(_layout(), LAYOUT_NAME, visible=False)


def _placeholder(name: str, shape: tuple[int, ...]) -> list[tuple]:
    """A black image layer of the sample's first name and shape: napari wants one layer from
    a sample at once; it is filled when the sample is made."""
    attributes = {"name": name, "contrast_limits": [0.0, 1.0], "colormap": "gray"}
    return [(np.zeros(shape, np.float32), attributes, "image")]


def phantom_sample() -> list[tuple]:
    """A phantom HR frame, its simulated LR frame and its fibre layout (Points)."""
    placeholder = _placeholder("HR (phantom)", SHAPE)
    return layers_now_or_later(phantom_layers, "Making the pCLE phantom", placeholder)


def sequence_sample() -> list[tuple]:
    """A phantom sequence with probe motion: true HR frames, simulated LR frames, layout."""
    placeholder = _placeholder("HR (phantom sequence)", (SEQUENCE_FRAMES, *SHAPE))
    return layers_now_or_later(sequence_layers, "Making the phantom sequence", placeholder)
