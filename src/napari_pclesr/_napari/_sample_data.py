"""napari sample data, generated on the fly and offline (each in well under 2 s).

* ``phantom``: a 576×576 tissue phantom (HR), a 30,000-fibre synthetic layout and the
  simulated LR image (seed 000's noise, σ_mult = 0.05, σ_add = 0.01).
* ``sequence``: a phantom sequence with smooth probe motion: the true HR frames (with their
  offsets in the canvas) and the simulated LR frames.
"""

from __future__ import annotations

import functools

from napari_pclesr.fibre import FibreLayout
from napari_pclesr.simulate import Simulator

SHAPE = (576, 576)
N_FIBRES = 30000
SEQUENCE_FRAMES = 12
SEED = 0
NOISE = {"sigma_mult": 0.05, "sigma_add": 0.01, "seed": SEED}


@functools.cache
def _simulator() -> Simulator:
    # Both samples share one layout; building it once halves the second sample's cost.
    return Simulator(FibreLayout.synthetic(SHAPE, N_FIBRES, seed=SEED))


def _metadata(simulator: Simulator, **extra) -> dict:
    return {
        "fibre_layout": simulator.layout,
        "fov_mask": simulator.fov_mask,
        "simulator": {**NOISE, "n_fibres": simulator.layout.n_fibres, "signal": "voronoi"},
        **extra,
    }


def phantom_sample() -> list[tuple]:
    """A phantom HR frame, its fibre layout (Points) and its simulated LR frame."""
    from napari_pclesr._napari._reader import layout_layer
    from napari_pclesr.data import phantom

    simulator = _simulator()
    hr = phantom(SHAPE, seed=SEED)
    lr = simulator.simulate(hr, **NOISE)
    image = {"contrast_limits": [0.0, 1.0], "colormap": "gray"}
    return [
        (hr, {"name": "phantom HR", **image, "metadata": {"fov_mask": simulator.fov_mask}}),
        (lr, {"name": "phantom LR (simulated)", **image, "metadata": _metadata(simulator)}),
        layout_layer(simulator.layout, "fibre layout", visible=False),
    ]


def sequence_sample() -> list[tuple]:
    """A phantom sequence with probe motion: true HR frames and simulated LR frames."""
    from napari_pclesr.data import phantom_sequence

    simulator = _simulator()
    sequence = phantom_sequence(n_frames=SEQUENCE_FRAMES, shape=SHAPE, seed=SEED)
    lr = simulator.simulate(sequence.frames, **NOISE)
    image = {"contrast_limits": [0.0, 1.0], "colormap": "gray"}
    truth = {"true_offsets": sequence.offsets, "fov_mask": simulator.fov_mask}
    return [
        (sequence.frames, {"name": "sequence HR (truth)", **image, "metadata": truth}),
        (
            lr,
            {
                "name": "sequence LR (simulated)",
                **image,
                "metadata": _metadata(simulator, true_offsets=sequence.offsets),
            },
        ),
    ]
