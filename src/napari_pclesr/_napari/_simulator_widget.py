"""The fibre-bundle simulator dock: tune the noise sigmas by eye on any HR image layer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FloatSlider,
    Label,
    PushButton,
    SpinBox,
    create_widget,
)

from napari_pclesr import FibreLayout, Simulator
from napari_pclesr._napari._docks import WorkerDock, image_frames, report
from napari_pclesr.fibre import fibre_count_for

SYNTHETIC = "synthetic bundle"
LAYOUT_KEY = "fibre_layout"
# Frames simulated between two progress reports (and two chances to stop).
CHUNK_FRAMES = 8


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
    simulator: Simulator
    parameters: dict


class SimulatorWidget(WorkerDock):
    """Simulate pCLE LR images from an HR image layer through a fibre layout.

    The HR layer is a frame or a stack. The layout is a synthetic bundle with the chosen number of
    fibres, or any Points layer carrying a ``FibreLayout`` in ``metadata["fibre_layout"]`` (as
    our reader and sample data make them). With *live* on, every change of a sigma re-simulates
    at once (the geometric set-up is cached, so this takes milliseconds per frame). The result
    goes to a layer named ``"<HR> LR (simulated)"``, updated in place, with the FoV mask, the
    layout and the parameters in its metadata.
    """

    def __init__(self, napari_viewer):
        self._viewer = napari_viewer
        self._image = create_widget(annotation="napari.layers.Image", label="HR image")
        self._layout_source = ComboBox(label="fibre layout", choices=self._layout_choices)
        self._n_fibres = SpinBox(label="fibres (0: auto)", min=0, max=500_000, step=1000, value=0)
        self._signal = ComboBox(label="fibre signal", choices=["voronoi", "nearest7"])
        self._sigma_mult = FloatSlider(label="σ mult", min=0.0, max=0.3, step=0.005, value=0.05)
        self._sigma_add = FloatSlider(label="σ add", min=0.0, max=0.1, step=0.001, value=0.01)
        self._seed = SpinBox(label="seed", min=0, max=2**31 - 1, value=0)
        self._live = CheckBox(label="live update", value=True)
        self._run = PushButton(text="Simulate")
        self._stop = PushButton(text="Stop", enabled=False)
        self._status = Label(value="")
        super().__init__(
            widgets=[
                self._image,
                self._layout_source,
                self._n_fibres,
                self._signal,
                self._sigma_mult,
                self._sigma_add,
                self._seed,
                self._live,
                self._run,
                self._stop,
                self._status,
            ]
        )
        self._synthetic_layouts: dict[tuple, FibreLayout] = {}
        # (id(layout), signal) -> Simulator; the simulator holds its layout, so ids stay valid.
        self._simulators: dict[tuple[int, str], Simulator] = {}
        self._rerun = False
        self._run.changed.connect(self.simulate)
        self._stop.changed.connect(self.stop)
        for control in (self._sigma_mult, self._sigma_add, self._seed):
            control.changed.connect(self._on_parameter_change)

    # -- public API (also used by tests and scripts) --------------------------------------------

    def simulate(self):
        """Start a simulation in a worker thread; returns the worker, or None on bad input."""
        if self.worker is not None:
            self._rerun = True  # keep the newest parameters; run again when this one ends
            return self.worker
        try:
            job = self._prepare()
        except ValueError as exc:
            report(self._status, str(exc), error=True)
            return None
        self.worker = self._start_worker(job)
        return self.worker

    def stop(self):
        """Ask the running simulation to stop after its current chunk of frames."""
        if self.worker is not None:
            self._rerun = False
            self.worker.quit()

    def _abandon(self) -> None:
        self._rerun = False
        self.worker.quit()

    # -- internals ------------------------------------------------------------------------------

    def _layout_choices(self, _widget=None) -> list[str]:
        names = [
            layer.name
            for layer in getattr(self._viewer, "layers", [])
            if isinstance(layer.metadata.get(LAYOUT_KEY), FibreLayout)
        ]
        return [SYNTHETIC, *names]

    def _on_parameter_change(self, _value=None):
        if self._live.value and self._image.value is not None:
            self.simulate()

    def _prepare(self) -> dict:
        layer = self._image.value
        data = np.asarray(image_frames(layer, "HR"))
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

    def _fibre_layout_for(self, shape: tuple[int, int]) -> FibreLayout:
        source = self._layout_source.value
        if source == SYNTHETIC:
            n_fibres = self._n_fibres.value or fibre_count_for(shape)
            key = (tuple(shape), n_fibres)
            if key not in self._synthetic_layouts:
                # A fixed layout seed: changing the noise seed must not move the fibres.
                self._synthetic_layouts[key] = FibreLayout.synthetic(shape, n_fibres, seed=0)
            return self._synthetic_layouts[key]
        layout = self._viewer.layers[source].metadata[LAYOUT_KEY]
        if layout.shape != tuple(shape):
            raise ValueError(
                f"The fibre layout '{source}' is for a {layout.shape} grid but the image frames "
                f"are {tuple(shape)}; pick a matching layout or the synthetic bundle."
            )
        return layout

    def _start_worker(self, job: dict):
        from napari.qt.threading import thread_worker

        @thread_worker
        def run():
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

        worker = run()
        self._connect(worker.yielded, self._on_progress)
        self._connect(worker.returned, self._on_result)
        self._connect(
            worker.errored, lambda exc: report(self._status, f"Simulation failed: {exc}", True)
        )
        # Not through _connect: the dock must forget a finished worker even after it closed.
        worker.finished.connect(self._on_finished)
        self._run.enabled, self._stop.enabled = False, True
        report(self._status, "Simulating…")
        worker.start()
        return worker

    def _on_progress(self, event: SimulationProgress):
        report(self._status, f"Simulating… {event.done}/{event.total} frames")

    def _on_result(self, result: SimulationResult):
        simulator = result.simulator
        self._simulators[(id(simulator.layout), simulator.signal)] = simulator
        name = f"{result.source_name} LR (simulated)"
        metadata = {
            "fov_mask": result.simulator.fov_mask,
            LAYOUT_KEY: result.simulator.layout,
            "simulator": result.parameters,
        }
        if name in self._viewer.layers:
            layer = self._viewer.layers[name]
            layer.data = result.lr
            layer.metadata.update(metadata)
        else:
            inside = result.lr[..., result.simulator.fov_mask]
            limits = np.percentile(inside, (0.5, 99.5)) if inside.size else (0.0, 1.0)
            self._viewer.add_image(
                result.lr, name=name, metadata=metadata, contrast_limits=tuple(map(float, limits))
            )
        layout = result.simulator.layout
        report(
            self._status,
            f"Simulated through {layout.n_fibres} fibres (σ mult {result.parameters['sigma_mult']}"
            f", σ add {result.parameters['sigma_add']}).",
        )

    def _on_finished(self):
        self.worker = None
        if self.closed:
            return
        self._run.enabled, self._stop.enabled = True, False
        if self._rerun:
            self._rerun = False
            self.simulate()
