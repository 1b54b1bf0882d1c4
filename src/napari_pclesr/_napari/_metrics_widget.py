"""The "SR metrics" dock: how good each SR layer is, live with the frame slider.

The dock scores every frame of the chosen layers in a background worker, current frame first,
and keeps the per-frame values, so moving the frame slider over computed frames only looks
values up; moving to a frame not computed yet restarts the worker from that frame. The table
shows the key scores first (SSIM, ΔGCF, Tot_cs, noise ratio), the rest behind "More columns";
a bar chart beside it shows one score per method with its spread over the frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from napari_pclesr._napari._docks import (
    FOV_MASK_KEY,
    LEVEL_COLOURS,
    WORSE_MARGIN,
    Form,
    PclesrDock,
    fit_narrow,
    layer_role,
    tip,
)
from napari_pclesr._napari._plots import PALETTE, Bar, BarChart
from napari_pclesr.metrics._compare import (
    FIELD_NAMES,
    NOISE_RATIO_LIMIT,
    NOISE_SPACING_PX,
    ComparisonTable,
    FrameScores,
    compare,
    evaluate_methods,
    format_mean_std,
    format_p_value,
)
from napari_pclesr.metrics._inputs import CHUNK_PIXELS

NO_LAYER = "—"
#: The input's row is named "input · <layer>": read first, it stays clear when elided.
BASELINE_PREFIX = "input · "
WARNING_MARK = "⚠ "
LR_COLOUR = "#8c8c8c"
WORSE_COLOUR = LEVEL_COLOURS["warning"]
METHOD_COLUMN_WIDTH = 110
#: The table always shows this many rows (the LR and two results) without scrolling.
TABLE_ROWS_SHOWN = 3


@dataclass(frozen=True)
class Column:
    """One table column: a score's mean ± std, its value at the current frame, or its
    p-value against the LR; ``extra`` columns show only with "More columns"."""

    title: str
    key: str
    kind: str  # "name", "mean", "frame" or "p"
    digits: int
    tooltip: str
    extra: bool = False


_SCORE_HELP = {
    "ssim": (
        "SSIM",
        4,
        "Structural similarity to the reference (HR-hat), from 0 to 1: higher means the fine "
        "structure matches better.",
    ),
    "delta_gcf_lr": (
        "ΔGCF",
        3,
        "Change of global contrast from the input (LR): above 0 the result looks crisper. "
        "Noise also raises it, so read it with the noise ratio.",
    ),
    "tot_cs": (
        "Tot_cs",
        4,
        "The seed papers' combined score, from 0 to 1: half similarity (SSIM), half contrast "
        "gain (ΔGCF squashed to 0–1). Higher is better.",
    ),
    "noise_ratio": (
        "Noise ratio",
        2,
        "Fine-grained noise of the result compared with the input (1: as noisy as the LR), "
        "estimated without the reference (Immerkær's method, on the fibre grid). Above "
        f"{NOISE_RATIO_LIMIT:g} with a contrast gain, that gain is likely noise (⚠).",
    ),
    "psnr": (
        "PSNR [dB]",
        2,
        "Peak signal-to-noise ratio against the reference, in decibels: higher is closer.",
    ),
    "gcf": ("GCF", 3, "Global contrast factor of the image itself: higher is more contrast."),
    "delta_gcf_hr": (
        "ΔGCF vs HR-hat",
        3,
        "Contrast compared with the reference: near 0 means as much contrast as the reference.",
    ),
    "noise": (
        "Noise σ",
        4,
        "Estimated noise level (standard deviation) on the 0–1 intensity scale.",
    ),
}
KEY_SCORES = ("ssim", "delta_gcf_lr", "tot_cs", "noise_ratio")
EXTRA_SCORES = ("psnr", "gcf", "delta_gcf_hr", "noise")
TESTED_SCORES = ("ssim", "psnr", "gcf", "tot_cs")
STATS_HELP = " Mean ± standard deviation over the frames."


def _columns() -> list[Column]:
    columns = [
        Column(
            "Method",
            "method",
            "name",
            0,
            "The result (SR layer) or the input (LR) scored in this row. ⚠ marks a result "
            "worse than its input, or a contrast gain that is likely noise; hover the row.",
        )
    ]
    for key in KEY_SCORES:
        title, digits, help_text = _SCORE_HELP[key]
        columns.append(Column(title, key, "mean", digits, help_text + STATS_HELP))
    for key in KEY_SCORES:
        title, digits, help_text = _SCORE_HELP[key]
        columns.append(Column(f"{title} (this frame)", key, "frame", digits, help_text, extra=True))
    for key in EXTRA_SCORES:
        title, digits, help_text = _SCORE_HELP[key]
        columns.append(Column(title, key, "mean", digits, help_text + STATS_HELP, extra=True))
    for key in TESTED_SCORES:
        title = _SCORE_HELP[key][0].split(" [")[0]
        columns.append(
            Column(
                f"p ({title})",
                key,
                "p",
                0,
                f"How likely a {title} difference this large from the input (LR) is by chance "
                "across the frames (paired t-test); below 0.05 is usually called significant. "
                "— with a single frame.",
                extra=True,
            )
        )
    return columns


COLUMNS = _columns()
DEFINITIONS = (
    "Scores are computed inside the field of view, frame by frame, against the reference "
    "image (HR-hat), and summarised as mean ± standard deviation over the frames. SSIM "
    "compares structure (1 = identical). GCF measures contrast at nine scales (Matkovic "
    "2005); ΔGCF is the result's GCF minus the input's. Tot_cs = ½·(SSIM + a 0–1 squashing "
    "of ΔGCF with scale 0.5): the seed papers' combined score. The noise ratio is the "
    "result's noise level over the input's, estimated without a reference by Immerkær's "
    f"3×3 mask with its taps {NOISE_SPACING_PX} pixels (just over one fibre) apart; a "
    f"contrast gain with a noise ratio above {NOISE_RATIO_LIMIT:g} is marked ⚠: likely noise. "
    "p-values compare each result with the input over the frames (paired t-test). "
    "docs/metrics.md gives every definition."
)


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
    layers: tuple
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


class MetricsWidget(PclesrDock):
    """Compare SR layers with a reference (HR-hat) and their input (LR).

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose image layers are offered.
    """

    title = "SR metrics"

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self._job: _Job | None = None
        self._known_layers: set[int] = set()
        self._watched: list = []
        self.current_table: ComparisonTable | None = None
        self._build_ui()
        self.follow_layers(self._on_layers_changed)
        self.listen(self.viewer.dims.events.current_step, self._on_frame_changed)
        for layer in self.viewer.layers:
            self._watch(layer)
        self._refresh_layer_choices()
        self.request_update()

    # --- user interface --------------------------------------------------------------------

    def _build_ui(self) -> None:
        self.sr_list = tip(
            QListWidget(),
            "Tick the results to score, one row each. Results of the Super-resolve dock with "
            "the input's size are ticked when they appear.",
        )
        self.sr_list.setSelectionMode(QAbstractItemView.NoSelection)
        self.sr_list.setMaximumHeight(4 * self.sr_list.fontMetrics().height() + 8)
        self.hr_combo = tip(
            QComboBox(),
            "The reference the results should match: the true image of a phantom, or HR-hat "
            "from mosaicking. SSIM and PSNR compare with it.",
        )
        self.lr_combo = tip(
            QComboBox(),
            "The pCLE image the results were made from: the baseline row, and the reference of "
            "ΔGCF and of the noise ratio.",
        )
        form = Form()
        form.add(self.sr_list, "Results to score (SR)")
        form.add(self.hr_combo, "Reference image (HR-hat)")
        form.add(self.lr_combo, "Input image (LR)")
        self._forms.append(form)
        self.add_widget(form)

        self.table_widget = QTableWidget(0, len(COLUMNS))
        self.table_widget.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table_widget.verticalHeader().setVisible(False)
        header = self.table_widget.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        # Method names can be long: that column keeps a fixed width and elides (the full
        # name is in the cell's tooltip), so the key scores stay in view in a narrow dock.
        header.setSectionResizeMode(0, QHeaderView.Interactive)
        self.table_widget.setColumnWidth(0, METHOD_COLUMN_WIDTH)
        self.table_widget.setTextElideMode(Qt.ElideRight)
        for index, column in enumerate(COLUMNS):
            item = QTableWidgetItem(column.title)
            item.setToolTip(column.tooltip)
            self.table_widget.setHorizontalHeaderItem(index, item)
        self.table_widget.setToolTip("Scores of each result; hover a column title for its meaning.")
        self._fit_table_height()
        self.more_columns = tip(
            QCheckBox("More columns"),
            "Also show the current frame's values, PSNR, GCF, ΔGCF against the reference, the "
            "noise level and the p-values.",
        )
        self.more_columns.toggled.connect(self._show_columns)
        self._show_columns(False)

        self.chart_score = tip(
            QComboBox(), "The score the bar chart shows, with its spread over the frames."
        )
        for key in KEY_SCORES:
            self.chart_score.addItem(_SCORE_HELP[key][0], key)
        self.chart_score.currentIndexChanged.connect(lambda _index: self._draw_chart())
        self.chart = BarChart()
        self.chart.setToolTip(
            "Mean of the chosen score per method; the whiskers span ± one standard deviation "
            "over the frames. Grey: the input (LR); orange: worse than the input."
        )
        options = QWidget()
        row = QHBoxLayout(options)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.more_columns)
        row.addStretch(1)
        row.addWidget(QLabel("Chart:"))
        row.addWidget(self.chart_score)
        fit_narrow(self.chart_score)
        # Table and chart share the height; the user can move the boundary.
        splitter = QSplitter(Qt.Vertical)
        splitter.addWidget(self.table_widget)
        splitter.addWidget(self.chart)
        splitter.setChildrenCollapsible(False)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 1)
        self.add_widget(options)
        self.add_widget(splitter, stretch=1)

        self.definitions = QLabel(DEFINITIONS)
        self.definitions.setWordWrap(True)
        self.add_advanced([self.definitions], title="How these are computed")

        self.export_button = tip(
            QPushButton("Export CSV…"),
            "Save the table (current frame and all-frame statistics, with the definitions).",
        )
        self.export_button.clicked.connect(self._choose_csv_path)
        self.export_button.setEnabled(False)
        self.add_actions(self.export_button)

        self.sr_list.itemChanged.connect(self.request_update)
        self.hr_combo.currentIndexChanged.connect(self.request_update)
        self.lr_combo.currentIndexChanged.connect(self.request_update)

    def showEvent(self, event) -> None:
        self._fit_table_height()  # napari's theme, applied once docked, sets the row heights
        super().showEvent(event)

    def _fit_table_height(self) -> None:
        table = self.table_widget
        table.setMinimumHeight(
            table.horizontalHeader().sizeHint().height()
            + TABLE_ROWS_SHOWN * table.verticalHeader().defaultSectionSize()
            + table.horizontalScrollBar().sizeHint().height()
            + 2 * table.frameWidth()
        )

    def _show_columns(self, more: bool) -> None:
        for index, column in enumerate(COLUMNS):
            self.table_widget.setColumnHidden(index, column.extra and not more)

    def _image_layers(self) -> list:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def _refresh_layer_choices(self) -> None:
        """List the image layers, keeping the user's choices (by layer, so renaming is fine).

        Defaults, for layers seen for the first time: the most recent input (LR) layer, the
        most recent reference (HR) layer of the input's shape, and ticked results: SR layers
        of the input's shape.
        """
        layers = self._image_layers()
        new = {id(layer) for layer in layers} - self._known_layers
        ticked = {id(layer) for layer in self._chosen_sr_layers()}
        widgets = (self.sr_list, self.hr_combo, self.lr_combo)
        for widget in widgets:
            widget.blockSignals(True)
        try:
            lr = self._pick(self.lr_combo, layers, new, lambda layer: layer_role(layer) == "lr")
            shape = None if lr is None else tuple(lr.data.shape)

            def fits(role):
                return lambda layer: (
                    layer_role(layer) == role
                    and (shape is None or tuple(layer.data.shape) == shape)
                )

            self._pick(self.hr_combo, layers, new, fits("hr"))
            sr_default = fits("sr")
            self.sr_list.clear()
            for layer in layers:
                item = QListWidgetItem(layer.name)
                item.setData(Qt.UserRole, id(layer))
                item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
                wanted = id(layer) in ticked or (
                    id(layer) in new and shape is not None and sr_default(layer)
                )
                item.setCheckState(Qt.Checked if wanted else Qt.Unchecked)
                self.sr_list.addItem(item)
        finally:
            for widget in widgets:
                widget.blockSignals(False)
        self._known_layers = {id(layer) for layer in layers}

    @staticmethod
    def _pick(combo: QComboBox, layers, new, suits):
        """Refill a layer combo box; select the newest suitable layer if it is new or nothing
        suitable is selected. Returns the selected layer."""
        current = combo.currentData()
        combo.clear()
        combo.addItem(NO_LAYER, None)
        for layer in layers:
            combo.addItem(layer.name, id(layer))
        index = combo.findData(current) if current is not None else -1
        candidates = [layer for layer in layers if suits(layer)]
        fresh = [layer for layer in candidates if id(layer) in new]
        if fresh or index < 0:
            guess = (fresh or candidates or [None])[-1]
            index = 0 if guess is None else combo.findData(id(guess))
        combo.setCurrentIndex(index)
        return next((layer for layer in layers if id(layer) == combo.currentData()), None)

    def _chosen_sr_layers(self) -> list:
        by_id = {id(layer): layer for layer in self.viewer.layers}
        items = (self.sr_list.item(row) for row in range(self.sr_list.count()))
        chosen = (item.data(Qt.UserRole) for item in items if item.checkState() == Qt.Checked)
        return [by_id[key] for key in chosen if key in by_id]

    def selected_sr_names(self) -> list[str]:
        """Names of the ticked SR layers, in list order."""
        return [layer.name for layer in self._chosen_sr_layers()]

    def _chosen_layer(self, combo: QComboBox):
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
        from napari.layers import Image

        if isinstance(layer, Image):
            self.listen(layer.events.data, self._on_layer_data)
            self.listen(layer.events.name, self._on_layers_changed)

    def _on_layers_changed(self, event=None) -> None:
        kind = getattr(event, "type", "")
        if kind == "inserted":
            self._watch(event.value)
        elif kind == "removed":
            self.forget(event.value.events.data, self._on_layer_data)
            self.forget(event.value.events.name, self._on_layers_changed)
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
        if not job.done[frame] and self.worker is not None:
            self._start_scoring(job, frame)  # the user wants this frame now
        self._show(job)

    # --- computation -----------------------------------------------------------------------

    def request_update(self, *_) -> None:
        """Check the choice of layers and (re)start the computation when it changed."""
        if self.closed:
            return
        try:
            spec = self._selection()
        except SelectionError as exc:
            self._cancel()
            self._job = None
            self._show(None)
            self.report(str(exc), getattr(exc, "level", "warning"))
            return
        job = self._job
        if job is None or not _same_job(job, spec):
            self._cancel()
            job = self._job = _Job(**spec)
            if job.notes:
                self.notify(job.notes.strip(), "warning")
        if self.worker is None and not job.done.all():
            self._start_scoring(job, self.current_frame())
        self._show(job)

    def _selection(self) -> dict:
        """The chosen layers as job arguments, or SelectionError with what to change."""
        sr_layers = self._chosen_sr_layers()
        hr_layer, lr_layer = self._chosen_layer(self.hr_combo), self._chosen_layer(self.lr_combo)
        missing = [
            what
            for what, ok in (
                ("tick at least one result (SR)", sr_layers),
                ("choose the reference image (HR-hat)", hr_layer is not None),
                ("choose the input image (LR)", lr_layer is not None),
            )
            if not ok
        ]
        if missing:
            error = SelectionError("To compute the scores, " + ", ".join(missing) + ".")
            error.level = "info"  # nothing is wrong yet: the user has not chosen
            raise error
        chosen = (*sr_layers, hr_layer, lr_layer)
        for layer in chosen:
            _check_layer(layer)
        shapes = {layer.name: tuple(layer.data.shape) for layer in chosen}
        if len(set(shapes.values())) > 1:
            listing = "; ".join(f"{name}: {shape}" for name, shape in shapes.items())
            raise SelectionError(
                f"The chosen layers differ in size ({listing}): results, reference and input "
                "must have the same shape."
            )
        shape = shapes[lr_layer.name]
        frame_shape = shape[-2:]
        mask, ignored = _fov_mask(chosen, frame_shape)
        notes = (
            f" Ignored the field-of-view mask of {', '.join(ignored)}: not a {frame_shape} "
            "boolean array."
            if ignored
            else ""
        )
        return {
            "notes": notes,
            "sr_data": {layer.name: layer.data for layer in sr_layers},
            "hr_data": hr_layer.data,
            "lr_data": lr_layer.data,
            "mask": mask,
            "baseline": BASELINE_PREFIX + lr_layer.name,
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

    def _start_scoring(self, job: _Job, first_frame: int) -> None:
        self._cancel()
        order = job.frames_to_compute(first_frame)
        if not order:
            return
        frames_per_chunk = max(1, CHUNK_PIXELS // int(np.prod(job.frame_shape)))
        self.start_worker(
            _score_frames,
            job,
            order,
            frames_per_chunk,
            yielded=lambda result, job=job: self._on_scored(job, *result),
            errored=lambda exc, job=job: self._on_failed(job, exc),
        )

    def _cancel(self) -> None:
        if self.worker is not None:
            self.worker.quit()
            self.worker = None

    def _on_scored(self, job: _Job, frames: np.ndarray, results: dict) -> None:
        if job is not self._job:
            return  # a stale computation for layers no longer chosen
        job.store(frames, results)
        self._show(job)

    def _on_failed(self, job: _Job, exc: Exception) -> None:
        if job is self._job:
            self.report(f"The computation failed: {exc}", "error")

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
            self._draw_chart()
            return
        frame = self.current_frame()
        baseline = table[table.baseline]
        self.table_widget.setRowCount(len(table.rows))
        worse = []
        for row_index, row in enumerate(table.rows):
            now = job.frame_scores(row.name, frame)
            is_worse = _worse(row, baseline)
            notes = []
            if is_worse:
                worse.append(row.name)
                notes.append(
                    f"Scores below its input: SSIM {row.mean['ssim']:.3f} against "
                    f"{baseline.mean['ssim']:.3f} for the LR. This result is worse than no "
                    "processing."
                )
            if row.noisy_contrast:
                notes.append(
                    f"Its contrast gain (ΔGCF {row.mean['delta_gcf_lr']:+.3f}) comes with "
                    f"{row.mean['noise_ratio']:.1f}× the input's noise: likely amplified "
                    "noise, not detail."
                )
            for column_index, column in enumerate(COLUMNS):
                item = QTableWidgetItem(_cell_text(column, row, now, is_worse))
                item.setTextAlignment(
                    Qt.AlignLeft | Qt.AlignVCenter
                    if column.kind == "name"
                    else Qt.AlignRight | Qt.AlignVCenter
                )
                if notes or column.kind == "name":
                    item.setToolTip(
                        "\n".join([row.name, *notes]) if column.kind == "name" else "\n".join(notes)
                    )
                if is_worse:
                    item.setForeground(QBrush(QColor(WORSE_COLOUR)))
                self.table_widget.setItem(row_index, column_index, item)
        self._draw_chart()
        done = int(job.done.sum())
        progress = "" if done == job.n_frames else f"; computing: {done}/{job.n_frames} frames"
        where = "inside the field of view" if job.mask is not None else "over whole frames"
        message = (
            f"Frame {frame} of {job.n_frames}; statistics over {done} frame(s), {where}"
            f"{progress}.{job.notes}"
        )
        level = "warning" if job.notes else "info"
        if worse and done == job.n_frames:
            names = ", ".join(f"'{name}'" for name in worse)
            self.report(
                f"{names} score(s) below the input (LR): worse than no processing.", "warning"
            )
            return
        self.status.set_message(message, level)

    def _draw_chart(self) -> None:
        table = self.current_table
        key = self.chart_score.currentData()
        if table is None or key is None:
            self.chart.set_bars([])
            return
        title, digits, _ = _SCORE_HELP[key]
        bars = []
        for row in table.rows:
            if row.name == table.baseline:
                colour = LR_COLOUR
            elif _worse(row, table[table.baseline]):
                colour = WORSE_COLOUR
            else:
                colour = PALETTE[0]
            bars.append(Bar(row.name, row.mean[key], row.std[key], colour))
        self.chart.set_bars(bars, y_label=title, digits=digits)

    def export_csv(self, path) -> None:
        """Write the table (current-frame values, mean, std and p-values) to ``path`` as CSV."""
        if self.current_table is None or self.is_busy():
            raise ValueError("No complete table to export yet; wait until all frames are scored.")
        self.current_table.to_csv(path, frame=self.current_frame())
        self.report(f"Saved the table to {path}.")
        self.notify(f"Saved the table to {path}.")

    def _choose_csv_path(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export metrics", "metrics.csv", "CSV (*.csv)")
        if not path:
            return
        try:
            self.export_csv(path)
        except (ValueError, OSError) as exc:
            self.report(f"Export failed: {exc}", "error")


def _worse(row, baseline) -> bool:
    """Whether a result's mean SSIM is below its input's by more than :data:`WORSE_MARGIN`."""
    return row.name != baseline.name and row.mean["ssim"] < baseline.mean["ssim"] - WORSE_MARGIN


def _cell_text(column: Column, row, now: FrameScores, is_worse: bool) -> str:
    if column.kind == "name":
        marked = is_worse or row.noisy_contrast
        return (WARNING_MARK if marked else "") + row.name
    if column.kind == "p":
        return format_p_value(row.p_value[column.key])
    if column.kind == "frame":
        value = now.values(column.key)[0]
        return "…" if np.isnan(value) else f"{value:.{column.digits}f}"
    text = format_mean_std(row.mean[column.key], row.std[column.key], column.digits)
    return f"{text} ⚠" if column.key == "noise_ratio" and row.noisy_contrast else text


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


def _check_layer(layer) -> None:
    name = layer.name
    if layer.rgb:
        raise SelectionError(
            f"Layer {name!r} is RGB; the scores need grey images. Convert it to grey first "
            "(e.g. skimage.color.rgb2gray)."
        )
    dtype = np.dtype(layer.data.dtype)
    if dtype.kind in "iu" and dtype != np.uint8:
        raise SelectionError(
            f"Layer {name!r} holds {dtype} values; the scores need intensities in [0, 1] "
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
