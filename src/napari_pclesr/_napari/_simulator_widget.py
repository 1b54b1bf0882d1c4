"""The "Fibre-bundle simulator" dock: see a sharp image through a pCLE fibre bundle, live."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSlider, PushButton, SpinBox

from napari_pclesr._napari._docks import (
    FOV_MASK_KEY,
    ROLE_KEY,
    PclesrDock,
    add_or_update_image,
    image_frames,
    percentile_limits,
    pick_default,
    points_layer_choices,
    tip,
)

SYNTHETIC = "synthetic"
FROM_FILE = "file"
LAYOUT_KEY = "fibre_layout"
LAYOUT_FILTER = "*.csv *.npy *.npz"
RESULT_NAME = "LR (simulated)"
SOURCE_KEY = "simulated_from"
# Frames simulated between two progress reports (and two chances to stop).
CHUNK_FRAMES = 8
SIGNALS = [
    ("Voronoi cell mean (voronoi)", "voronoi"),
    ("7 nearest pixels (nearest7)", "nearest7"),
]


@dataclass(frozen=True)
class SimulationProgress:
    """A progress event of the simulation worker: ``done`` of ``total`` frames."""

    done: int
    total: int


@dataclass(frozen=True)
class SimulationResult:
    """The simulated LR stack, ready to become a layer."""

    lr: np.ndarray
    source_name: str
    simulator: object
    parameters: dict


class SimulatorWidget(PclesrDock):
    """See an image through a simulated pCLE fibre bundle, with the noise tuned by eye.

    The sharp image (HR) is a frame or a stack. The fibre layout is a synthetic bundle of the
    chosen density, a Points layer (a layout opened from a file, or any points on the image's
    grid) or a layout file. With *Update live* on, every change of a noise level re-simulates
    at once (the geometric set-up is cached, so this takes milliseconds per frame). The result
    is the layer "LR (simulated)", updated in place for the same image, with the FoV mask, the
    layout and the parameters in its metadata.
    """

    title = "Fibre-bundle simulator"

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self._image = tip(
            ComboBox(label="Sharp image (HR)", choices=self._image_choices),
            "The sharp image to look at through the fibre bundle: a grey frame or stack. The "
            f"result is the layer '{RESULT_NAME}'.",
        )
        self._layout_source = tip(
            ComboBox(label="Fibre layout", choices=self._layout_choices),
            "Where the fibres are: a synthetic Cellvizio-like bundle, a layout file (.csv with "
            "row,col columns, .npy or .npz), or a Points layer (a layout opened in napari, or "
            "points you placed on the image).",
        )
        self._layout_file = tip(
            FileEdit(label="Layout file", mode="r", filter=LAYOUT_FILTER, nullable=True),
            "A fibre layout saved by this plugin or pclesr (.csv, .npy or .npz) on the same "
            "grid as the image.",
        )
        self._sigma_mult = tip(
            FloatSlider(
                label="Multiplicative noise (σ mult)", min=0.0, max=0.3, step=0.005, value=0.05
            ),
            "Noise that grows with each fibre's signal: nfs = (1 + m)·fs + a, m ~ N(0, σ mult). "
            "The seed paper uses 0.05; sensible range 0–0.15.",
        )
        self._sigma_add = tip(
            FloatSlider(label="Additive noise (σ add)", min=0.0, max=0.1, step=0.001, value=0.01),
            "Noise added to every fibre whatever its signal: a ~ N(0, σ add·(max − min of the "
            "fibre signals)). The seed paper uses 0.01; sensible range 0–0.05.",
        )
        self._live = tip(
            CheckBox(text="Update live", value=True),
            "Simulate again whenever a noise level or the seed changes.",
        )
        self._n_fibres = tip(
            SpinBox(
                label="Number of fibres (0: Cellvizio density)",
                min=0,
                max=500_000,
                step=1000,
                value=0,
            ),
            "Fibres of the synthetic bundle. 0 uses the density of a Cellvizio probe, 30,000 "
            "fibres per 576×576 pixels, scaled to the image. Typical 10,000–50,000.",
        )
        self._signal = tip(
            ComboBox(label="Fibre signal (averaging)", choices=SIGNALS, value="voronoi"),
            "What a fibre sees: the mean of its Voronoi cell (the seed paper's model), or of the "
            "7 pixels nearest its centre.",
        )
        self._seed = tip(
            SpinBox(label="Random seed", min=0, max=2**31 - 1, value=0),
            "Seed of the noise; the same seed gives the same LR. Any whole number.",
        )
        self._run = tip(PushButton(text="Simulate"), "Simulate the LR image now.")
        self._stop = tip(
            PushButton(text="Stop", enabled=False), "Stop a long stack after the current frames."
        )
        self.add_rows([self._image, self._layout_source, self._layout_file])
        self.add_rows([self._sigma_mult, self._sigma_add, self._live])
        self.add_advanced([self._n_fibres, self._signal, self._seed])
        self.add_actions(self._run, self._stop)
        self.report("Pick a sharp image; its simulated fibre view appears as a new layer.")

        self._synthetic_layouts: dict[tuple, object] = {}
        # (id(layout), signal) -> Simulator; the simulator holds its layout, so ids stay valid.
        self._simulators: dict[tuple[int, str], object] = {}
        self._rerun = False
        self._run.changed.connect(self.simulate)
        self._stop.changed.connect(self.stop)
        self._layout_source.changed.connect(self._show_layout_options)
        for control in (self._sigma_mult, self._sigma_add, self._seed):
            control.changed.connect(self._on_parameter_change)
        self.follow_layers()
        self.refresh_choices()
        self._show_layout_options()

    # -- public API (also used by tests and scripts) --------------------------------------------

    def simulate(self):
        """Start a simulation in a worker thread; returns the worker, or None on bad input."""
        if self.worker is not None:
            self._rerun = True  # keep the newest parameters; run again when this one ends
            return self.worker
        try:
            job = self._prepare()
        except ValueError as exc:
            self.report(str(exc), "error")
            return None
        self._run.enabled, self._stop.enabled = False, True
        self.report("Simulating…")
        return self.start_worker(
            _simulate_in_chunks,
            job,
            yielded=self._on_progress,
            returned=self._on_result,
            errored=lambda exc: self.report(f"The simulation failed: {exc}", "error"),
            finished=self._on_finished,
        )

    def _request_stop(self) -> None:
        self._rerun = False
        self.worker.quit()

    def refresh_choices(self, *_event) -> None:
        super().refresh_choices()
        pick_default(self._image, self.viewer, ("hr",))

    # -- internals ------------------------------------------------------------------------------

    def _layout_choices(self, _widget=None):
        return [
            ("synthetic bundle", SYNTHETIC),
            ("layout file…", FROM_FILE),
            *points_layer_choices(self.viewer),
        ]

    def _show_layout_options(self, _value=None) -> None:
        self.set_row_visible(self._layout_file, self._layout_source.value == FROM_FILE)
        self.set_row_visible(self._n_fibres, self._layout_source.value == SYNTHETIC)

    def _on_parameter_change(self, _value=None):
        if self._live.value and self._image.value is not None:
            self.simulate()

    def _prepare(self) -> dict:
        layer = self._image.value
        data = np.asarray(image_frames(layer, "sharp (HR)"))
        layout = self._fibre_layout_for(data.shape[-2:])
        signal = self._signal.value
        return {
            "hr": data,
            "layout": layout,
            "signal": signal,
            "simulator": self._simulators.get((id(layout), signal)),
            "source_name": layer.name,
            "parameters": {
                "sigma_mult": float(self._sigma_mult.value),
                "sigma_add": float(self._sigma_add.value),
                "seed": int(self._seed.value),
                "signal": signal,
            },
        }

    def _fibre_layout_for(self, shape: tuple[int, int]):
        from napari_pclesr.fibre import FibreLayout, fibre_count_for

        source = self._layout_source.value
        if source == SYNTHETIC:
            n_fibres = self._n_fibres.value or fibre_count_for(shape)
            key = (tuple(shape), n_fibres)
            if key not in self._synthetic_layouts:
                # A fixed layout seed: changing the noise seed must not move the fibres.
                self._synthetic_layouts[key] = FibreLayout.synthetic(shape, n_fibres, seed=0)
            return self._synthetic_layouts[key]
        if source == FROM_FILE:
            path = self._layout_file.value
            if path is None or not path.is_file():
                raise ValueError("Choose a layout file (.csv, .npy or .npz), or another layout.")
            from napari_pclesr.io import read_layout

            layout, name = read_layout(path), path.name
        else:
            known = source.metadata.get(LAYOUT_KEY)
            name = source.name
            if isinstance(known, FibreLayout):
                layout = known
            else:
                try:
                    layout = FibreLayout(np.asarray(source.data)[:, -2:], tuple(shape))
                except ValueError as exc:
                    message = f"The points of '{name}' are not a fibre layout: {exc}"
                    raise ValueError(message) from None
        if layout.shape != tuple(shape):
            raise ValueError(
                f"The fibre layout '{name}' is for a {layout.shape} grid but the image frames "
                f"are {tuple(shape)}; pick a matching layout or the synthetic bundle."
            )
        return layout

    def _on_progress(self, event: SimulationProgress):
        self.report(f"Simulating… {event.done}/{event.total} frames")

    def _on_result(self, result: SimulationResult):
        simulator = result.simulator
        self._simulators[(id(simulator.layout), simulator.signal)] = simulator
        metadata = {
            FOV_MASK_KEY: simulator.fov_mask,
            LAYOUT_KEY: simulator.layout,
            "simulator": result.parameters,
            SOURCE_KEY: result.source_name,
            ROLE_KEY: "lr",
        }
        existing = [
            layer
            for layer in self.viewer.layers
            if layer.metadata.get(SOURCE_KEY) == result.source_name
            and layer.metadata.get(ROLE_KEY) == "lr"
        ]
        if existing:
            add_or_update_image(self.viewer, existing[0].name, result.lr, metadata=metadata)
        else:
            limits = percentile_limits(result.lr, simulator.fov_mask)
            self.viewer.add_image(
                result.lr, name=RESULT_NAME, metadata=metadata, contrast_limits=limits
            )
        parameters = result.parameters
        self.report(
            f"Simulated '{result.source_name}' through {simulator.layout.n_fibres:,} fibres "
            f"(σ mult {parameters['sigma_mult']:g}, σ add {parameters['sigma_add']:g})."
        )

    def _on_finished(self):
        self._run.enabled, self._stop.enabled = True, False
        if self._rerun:
            self._rerun = False
            self.simulate()
        elif self.status.message.startswith("Simulating"):
            self.report("Stopped; no layer was changed.")


def _simulate_in_chunks(job: dict):
    """Generator run by the worker: simulate a few frames at a time, yielding progress."""
    from napari_pclesr.simulate import Simulator

    simulator = job["simulator"] or Simulator(job["layout"], signal=job["signal"])
    hr = job["hr"]
    frames = hr[np.newaxis] if hr.ndim == 2 else hr
    parameters = job["parameters"]
    generator = np.random.default_rng(parameters["seed"])
    chunks = []
    for start in range(0, len(frames), CHUNK_FRAMES):
        chunk = np.asarray(frames[start : start + CHUNK_FRAMES])
        chunks.append(
            simulator.simulate(
                chunk, parameters["sigma_mult"], parameters["sigma_add"], seed=generator
            )
        )
        yield SimulationProgress(done=start + len(chunk), total=len(frames))
    lr = np.concatenate(chunks)
    return SimulationResult(
        lr=lr[0] if hr.ndim == 2 else lr,
        source_name=job["source_name"],
        simulator=simulator,
        parameters=parameters,
    )
