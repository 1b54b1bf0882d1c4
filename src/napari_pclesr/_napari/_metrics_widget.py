"""The "SR metrics" dock: SSIM, PSNR, GCF, ΔGCF and Tot_cs of SR layers, live with the slider.

The dock scores every frame of the chosen layers in a background worker, current frame first,
and keeps the per-frame values, so moving the frame slider over computed frames only looks
values up; moving to a frame not computed yet restarts the worker from that frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from napari.layers import Image
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_pclesr.metrics import SCORES, ComparisonTable, FrameScores, compare, evaluate_methods
from napari_pclesr.metrics._compare import FIELD_NAMES, format_mean_std, format_p_value
from napari_pclesr.metrics._inputs import CHUNK_PIXELS

FOV_MASK_KEY = "fov_mask"
NO_LAYER = "—"
COLUMNS = [
    "method",
    *(f"{score.label} {part}" for score in SCORES for part in ("(frame)", "mean ± std")),
    "p(Tot_cs) vs LR",
]


class SelectionError(ValueError):
    """The chosen layers cannot be scored; the message tells the user what to change."""


@dataclass
class _Job:
    """Everything scored for one choice of layers, filled frame by frame by workers."""

    sr_data: dict[str, object]
    hr_data: object
    lr_data: object
    mask: np.ndarray | None
    baseline: str
    n_frames: int
    frame_shape: tuple[int, int]
    layers: tuple[Image, ...]
    notes: str = ""
    values: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    done: np.ndarray = field(init=False)

    def __post_init__(self):
        self.done = np.zeros(self.n_frames, dtype=bool)
        for name in (self.baseline, *self.sr_data):
            self.values[name] = {key: np.full(self.n_frames, np.nan) for key in FIELD_NAMES}

    def store(self, frames: np.ndarray, results: dict[str, FrameScores]) -> None:
        for name, scores in results.items():
            for key in FIELD_NAMES:
                self.values[name][key][frames] = getattr(scores, key)
        self.done[frames] = True

    def table(self) -> ComparisonTable | None:
        """The comparison over the frames computed so far (None before the first)."""
        computed = np.flatnonzero(self.done)
        if computed.size == 0:
            return None
        scores = {
            name: FrameScores(**values).take(computed) for name, values in self.values.items()
        }
        return compare(scores, baseline=self.baseline)

    def frame_scores(self, name: str, frame: int) -> FrameScores:
        """The scores of one frame of a method (NaN while not computed)."""
        return FrameScores(
            **{key: values[frame : frame + 1] for key, values in self.values[name].items()}
        )

    def frames_to_compute(self, first: int) -> list[int]:
        """Frames not computed yet, ``first`` first, then onwards, then from the start."""
        order = np.roll(np.arange(self.n_frames), -first)
        return [int(t) for t in order if not self.done[t]]


class MetricsWidget(QWidget):
    """Dock widget comparing SR layers against an HR-hat layer and an LR layer.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose image layers are offered.
    """

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._job: _Job | None = None
        self._worker = None
        self._last_notified = ""
        self._known_layers: set[int] = set()
        self.current_table: ComparisonTable | None = None
        self._build_ui()
        self._refresh_layer_choices()
        self.viewer.layers.events.inserted.connect(self._on_layers_changed)
        self.viewer.layers.events.removed.connect(self._on_layers_changed)
        self.viewer.layers.events.reordered.connect(self._on_layers_changed)
        self.viewer.dims.events.current_step.connect(self._on_frame_changed)
        for layer in self.viewer.layers:
            self._watch(layer)
        self.request_update()

    # --- user interface --------------------------------------------------------------------

    def _build_ui(self) -> None:
        self.sr_list = QListWidget()
        self.sr_list.setSelectionMode(QAbstractItemView.NoSelection)
        self.sr_list.setToolTip("Tick the SR results to compare; each gets a row.")
        self.sr_list.setMaximumHeight(120)
        self.hr_combo = QComboBox()
        self.hr_combo.setToolTip("The reference HR-hat for SSIM and PSNR.")
        self.lr_combo = QComboBox()
        self.lr_combo.setToolTip("The LR input: the baseline row and the ΔGCF reference.")
        form = QFormLayout()
        form.addRow("SR layers", self.sr_list)
        form.addRow("HR-hat", self.hr_combo)
        form.addRow("LR", self.lr_combo)

        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.table_widget = QTableWidget(0, len(COLUMNS))
        self.table_widget.setHorizontalHeaderLabels(COLUMNS)
        self.table_widget.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table_widget.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.export_button = QPushButton("Export CSV…")
        self.export_button.setToolTip("Save the table (current frame and all-frame statistics).")
        self.export_button.clicked.connect(self._choose_csv_path)
        self.export_button.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addStretch()
        buttons.addWidget(self.export_button)

        self.definitions = QLabel()
        self.definitions.setWordWrap(True)
        self.definitions.setStyleSheet("font-size: small;")

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.status)
        layout.addWidget(self.table_widget)
        layout.addLayout(buttons)
        layout.addWidget(self.definitions)

        self.sr_list.itemChanged.connect(self.request_update)
        self.hr_combo.currentIndexChanged.connect(self.request_update)
        self.lr_combo.currentIndexChanged.connect(self.request_update)

    def _refresh_layer_choices(self) -> None:
        """List the image layers, keeping the user's choices (by layer, so renaming is fine).

        A layer seen for the first time is ticked as SR when its name contains "sr"; an empty
        HR-hat or LR choice takes the first layer whose name contains "hr" or "lr".
        """
        layers = [layer for layer in self.viewer.layers if isinstance(layer, Image)]
        ticked = {id(layer) for layer in self._chosen_sr_layers()}
        widgets = (self.sr_list, self.hr_combo, self.lr_combo)
        for widget in widgets:
            widget.blockSignals(True)
        try:
            self.sr_list.clear()
            for layer in layers:
                item = QListWidgetItem(layer.name)
                item.setData(Qt.UserRole, id(layer))
                item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
                new = id(layer) not in self._known_layers
                wanted = id(layer) in ticked or (new and _looks_like(layer.name, "sr"))
                item.setCheckState(Qt.Checked if wanted else Qt.Unchecked)
                self.sr_list.addItem(item)
            for combo, hint in ((self.hr_combo, "hr"), (self.lr_combo, "lr")):
                current = combo.currentData()
                combo.clear()
                combo.addItem(NO_LAYER, None)
                for layer in layers:
                    combo.addItem(layer.name, id(layer))
                index = combo.findData(current) if current is not None else -1
                if index < 0:
                    guess = next((lay for lay in layers if _looks_like(lay.name, hint)), None)
                    index = 0 if guess is None else combo.findData(id(guess))
                combo.setCurrentIndex(index)
        finally:
            for widget in widgets:
                widget.blockSignals(False)
        self._known_layers = {id(layer) for layer in layers}

    def _chosen_sr_layers(self) -> list[Image]:
        by_id = {id(layer): layer for layer in self.viewer.layers}
        items = (self.sr_list.item(row) for row in range(self.sr_list.count()))
        chosen = (item.data(Qt.UserRole) for item in items if item.checkState() == Qt.Checked)
        return [by_id[key] for key in chosen if key in by_id]

    def selected_sr_names(self) -> list[str]:
        """Names of the ticked SR layers, in list order."""
        return [layer.name for layer in self._chosen_sr_layers()]

    def _chosen_layer(self, combo: QComboBox) -> Image | None:
        key = combo.currentData()
        return next((layer for layer in self.viewer.layers if id(layer) == key), None)

    def select(self, sr: list[str], hr_hat: str, lr: str) -> None:
        """Choose the layers by name (as a user would in the dock) and start computing."""
        for widget in (self.sr_list, self.hr_combo, self.lr_combo):
            widget.blockSignals(True)
        try:
            for row in range(self.sr_list.count()):
                item = self.sr_list.item(row)
                item.setCheckState(Qt.Checked if item.text() in sr else Qt.Unchecked)
            self.hr_combo.setCurrentText(hr_hat)
            self.lr_combo.setCurrentText(lr)
        finally:
            for widget in (self.sr_list, self.hr_combo, self.lr_combo):
                widget.blockSignals(False)
        self.request_update()

    # --- events ----------------------------------------------------------------------------

    def _watch(self, layer) -> None:
        if isinstance(layer, Image):
            layer.events.data.connect(self._on_layer_data)
            layer.events.name.connect(self._on_layers_changed)

    def _on_layers_changed(self, event=None) -> None:
        if event is not None and getattr(event, "type", "") == "inserted":
            self._watch(event.value)
        if event is not None and getattr(event, "type", "") == "removed":
            layer = event.value
            if isinstance(layer, Image):
                layer.events.data.disconnect(self._on_layer_data)
                layer.events.name.disconnect(self._on_layers_changed)
        self._refresh_layer_choices()
        self.request_update()

    def _on_layer_data(self, event=None) -> None:
        changed = getattr(event, "source", None)
        if self._job is not None and any(layer is changed for layer in self._job.layers):
            self._job = None  # its values describe data that no longer exists
        self.request_update()

    def _on_frame_changed(self, event=None) -> None:
        job = self._job
        if job is None:
            return
        frame = self.current_frame()
        if not job.done[frame] and self._worker is not None:
            self._start_worker(job, frame)  # the user wants this frame now
        self._show(job)

    # --- computation -----------------------------------------------------------------------

    def request_update(self, *_) -> None:
        """Check the choice of layers and (re)start the computation when it changed."""
        try:
            spec = self._selection()
        except SelectionError as exc:
            self._cancel()
            self._job = None
            self._show(None)
            self._report(str(exc), "warning")
            return
        job = self._job
        if job is None or not _same_job(job, spec):
            self._cancel()
            job = self._job = _Job(**spec)
            if job.notes:
                self._notify(job.notes.strip(), "warning")
        if self._worker is None and not job.done.all():
            self._start_worker(job, self.current_frame())
        self._show(job)

    def _selection(self) -> dict:
        """The chosen layers as job arguments, or SelectionError with what to change."""
        sr_layers = self._chosen_sr_layers()
        hr_layer, lr_layer = self._chosen_layer(self.hr_combo), self._chosen_layer(self.lr_combo)
        missing = [
            what
            for what, ok in (
                ("tick at least one SR layer", sr_layers),
                ("choose the HR-hat layer", hr_layer is not None),
                ("choose the LR layer", lr_layer is not None),
            )
            if not ok
        ]
        if missing:
            raise SelectionError("To compute the metrics, " + ", ".join(missing) + ".")
        chosen = (*sr_layers, hr_layer, lr_layer)
        for layer in chosen:
            _check_layer(layer)
        shapes = {layer.name: tuple(layer.data.shape) for layer in chosen}
        if len(set(shapes.values())) > 1:
            listing = "; ".join(f"{name}: {shape}" for name, shape in shapes.items())
            raise SelectionError(
                f"Shape mismatch ({listing}): SR, HR-hat and LR must have the same shape."
            )
        shape = shapes[lr_layer.name]
        frame_shape = shape[-2:]
        mask, ignored = _fov_mask(chosen, frame_shape)
        notes = (
            f" Ignored the fov_mask of {', '.join(ignored)}: not a {frame_shape} boolean array."
            if ignored
            else ""
        )
        return {
            "notes": notes,
            "sr_data": {layer.name: layer.data for layer in sr_layers},
            "hr_data": hr_layer.data,
            "lr_data": lr_layer.data,
            "mask": mask,
            "baseline": f"{lr_layer.name} (LR)",
            "n_frames": shape[0] if len(shape) == 3 else 1,
            "frame_shape": frame_shape,
            "layers": chosen,
        }

    def current_frame(self) -> int:
        """The index of the frame the slider shows in the LR layer's stack."""
        job = self._job
        if job is None or job.n_frames == 1:
            return 0
        lr_layer = job.layers[-1]
        position = lr_layer.world_to_data(self.viewer.dims.point)
        return int(np.clip(round(float(position[0])), 0, job.n_frames - 1))

    def _start_worker(self, job: _Job, first_frame: int) -> None:
        self._cancel()
        order = job.frames_to_compute(first_frame)
        if not order:
            return
        frames_per_chunk = max(1, CHUNK_PIXELS // int(np.prod(job.frame_shape)))
        worker = _score_frames(job, order, frames_per_chunk)
        worker.yielded.connect(lambda result, job=job: self._on_scored(job, *result))
        worker.errored.connect(lambda exc, job=job: self._on_failed(job, exc))
        worker.finished.connect(lambda worker=worker: self._on_worker_finished(worker))
        self._worker = worker
        worker.start()

    def _cancel(self) -> None:
        if self._worker is not None:
            self._worker.quit()
            self._worker = None

    def _on_scored(self, job: _Job, frames: np.ndarray, results: dict) -> None:
        if job is not self._job:
            return  # a stale computation for layers no longer chosen
        job.store(frames, results)
        self._show(job)

    def _on_failed(self, job: _Job, exc: Exception) -> None:
        if job is self._job:
            self._report(f"Computation failed: {exc}", "error")

    def _on_worker_finished(self, worker) -> None:
        if worker is self._worker:
            self._worker = None

    def is_busy(self) -> bool:
        """Whether frames of the current choice are still being scored."""
        return self._job is not None and not self._job.done.all()

    # --- display and export ----------------------------------------------------------------

    def _show(self, job: _Job | None) -> None:
        table = None if job is None else job.table()
        self.current_table = table
        self.export_button.setEnabled(table is not None and not self.is_busy())
        if table is None:
            self.table_widget.setRowCount(0)
            self.definitions.setText("")
            return
        frame = self.current_frame()
        self.table_widget.setRowCount(len(table.rows))
        for row_index, row in enumerate(table.rows):
            now = job.frame_scores(row.name, frame)
            cells = [row.name]
            for score in SCORES:
                cells.append(_number(now.values(score.key)[0], score.digits))
                cells.append(format_mean_std(row.mean[score.key], row.std[score.key], score.digits))
            cells.append(format_p_value(row.p_value["tot_cs"]))
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter if column else Qt.AlignLeft)
                self.table_widget.setItem(row_index, column, item)
        done = int(job.done.sum())
        progress = "" if done == job.n_frames else f"; computing: {done}/{job.n_frames} frames"
        mask_note = "inside the fov_mask" if job.mask is not None else "whole frame"
        self._set_status(
            f"Frame {frame} of {job.n_frames}; statistics over {done} frame(s), {mask_note}"
            f"{progress}.{job.notes}",
            "warning" if job.notes else "info",
        )
        self.definitions.setText(table.footer)

    def export_csv(self, path) -> None:
        """Write the table (current-frame values, mean, std and p-values) to ``path`` as CSV."""
        if self.current_table is None or self.is_busy():
            raise ValueError("No complete table to export yet; wait until all frames are scored.")
        self.current_table.to_csv(path, frame=self.current_frame())
        self._set_status(f"Saved the table to {path}.", "info")
        self._notify(f"Saved the table to {path}.", "info")

    def _choose_csv_path(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export metrics", "metrics.csv", "CSV (*.csv)")
        if not path:
            return
        try:
            self.export_csv(path)
        except (ValueError, OSError) as exc:
            self._report(f"Export failed: {exc}", "error")

    def _report(self, message: str, level: str) -> None:
        """Show a message in the status line and, unless it is plain info, as a notification."""
        self._set_status(message, level)
        if level != "info":
            self._notify(message, level)

    def _set_status(self, message: str, level: str) -> None:
        colour = {"info": "", "warning": "color: orange;", "error": "color: red;"}[level]
        self.status.setStyleSheet(colour)
        self.status.setText(message)

    def _notify(self, message: str, level: str) -> None:
        """A napari notification, once per distinct message (the status line keeps it)."""
        if message == self._last_notified:
            return
        self._last_notified = message
        notify = {"info": show_info, "warning": show_warning, "error": show_error}[level]
        notify(f"SR metrics: {message}")

    def closeEvent(self, event) -> None:
        self._cancel()
        super().closeEvent(event)


@thread_worker
def _score_frames(job: _Job, order: list[int], frames_per_chunk: int):
    """Score ``order``'s frames, the first alone (shown at once), then in chunks."""
    chunks = [order[:1]] + [
        order[start : start + frames_per_chunk] for start in range(1, len(order), frames_per_chunk)
    ]
    for chunk in chunks:
        # Another worker for the same job may have scored some of these frames meanwhile.
        frames = np.asarray([t for t in chunk if not job.done[t]], dtype=int)
        if frames.size == 0:
            continue
        results = evaluate_methods(
            {name: _frames_of(data, frames) for name, data in job.sr_data.items()},
            _frames_of(job.hr_data, frames),
            _frames_of(job.lr_data, frames),
            mask=job.mask,
            baseline=job.baseline,
        )
        yield frames, results


def _frames_of(data, frames: np.ndarray) -> np.ndarray:
    """The chosen frames of a layer's (lazy) data as a NumPy (len(frames), H, W) stack."""
    if len(data.shape) == 2:  # a single frame: ``frames`` can only be [0]
        return np.asarray(data)[np.newaxis]
    return np.asarray(data[frames])


def _check_layer(layer: Image) -> None:
    name = layer.name
    if layer.rgb:
        raise SelectionError(
            f"Layer {name!r} is RGB; the metrics need grey images. Convert it to grey first "
            "(e.g. skimage.color.rgb2gray)."
        )
    dtype = np.dtype(layer.data.dtype)
    if dtype.kind in "iu" and dtype != np.uint8:
        raise SelectionError(
            f"Layer {name!r} holds {dtype} values; the metrics need intensities in [0, 1] "
            "(float, or uint8 which is divided by 255). Rescale it first."
        )
    if layer.multiscale:
        raise SelectionError(f"Layer {name!r} is multiscale; open it at one resolution.")
    if len(layer.data.shape) not in (2, 3):
        raise SelectionError(
            f"Layer {name!r} has shape {layer.data.shape}; give a frame (H, W) or stack (T, H, W)."
        )


def _fov_mask(layers, frame_shape) -> tuple[np.ndarray | None, list[str]]:
    """The intersection of the layers' ``fov_mask`` metadata, and the names of misfits."""
    mask, ignored = None, []
    for layer in layers:
        candidate = layer.metadata.get(FOV_MASK_KEY)
        if candidate is None:
            continue
        candidate = np.asarray(candidate)
        if candidate.shape != tuple(frame_shape) or candidate.dtype.kind not in "biu":
            ignored.append(repr(layer.name))
            continue
        mask = candidate != 0 if mask is None else mask & (candidate != 0)
    return mask, ignored


def _same_job(job: _Job, spec: dict) -> bool:
    """Whether ``spec`` asks for the same layers under the same names as ``job``."""
    layers = spec["layers"]
    same_layers = len(job.layers) == len(layers) and all(
        a is b for a, b in zip(job.layers, layers, strict=True)
    )
    same_names = list(job.sr_data) == list(spec["sr_data"]) and job.baseline == spec["baseline"]
    return same_layers and same_names


def _looks_like(name: str, hint: str) -> bool:
    return hint in name.lower()


def _number(value: float, digits: int) -> str:
    return "…" if np.isnan(value) else f"{value:.{digits}f}"
