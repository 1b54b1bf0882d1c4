"""The SR metrics dock in a real napari viewer (run under xvfb-run)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from skimage import data, filters

from napari_pclesr.metrics import compare, evaluate_methods
from napari_pclesr.metrics._compare import format_mean_std

pytest.importorskip("napari")
pytestmark = pytest.mark.napari

TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def stacks():
    """HR-hat, LR and two SR stacks of 4 frames of 48×48, and a disc FoV mask."""
    camera = data.camera() / 255.0
    hr = np.stack([camera[100 + 40 * t : 148 + 40 * t, 200:248] for t in range(4)])
    lr = filters.gaussian(hr, sigma=(0, 1.5, 1.5))
    sharp = np.clip(lr + (lr - filters.gaussian(lr, sigma=(0, 1, 1))), 0, 1)
    noisy = np.clip(hr + 0.05 * np.random.default_rng(0).standard_normal(hr.shape), 0, 1)
    mask = np.hypot(*(np.indices((48, 48)) - 23.5)) < 22
    return {"hr": hr, "lr": lr, "sharp": sharp, "noisy": noisy, "mask": mask}


def add_layers(viewer, stacks, with_mask=True):
    metadata = {"fov_mask": stacks["mask"]} if with_mask else {}
    viewer.add_image(stacks["hr"], name="HR-hat")
    viewer.add_image(stacks["lr"], name="LR input", metadata=metadata)
    viewer.add_image(stacks["sharp"], name="sharp SR")
    viewer.add_image(stacks["noisy"], name="noisy SR")


def wait_done(qtbot, widget):
    qtbot.waitUntil(
        lambda: not widget.is_busy() and widget.current_table is not None, timeout=TIMEOUT_MS
    )


def cell(widget, row, title):
    """The text of a table cell, by row and column title (without the ⚠ mark)."""
    from napari_pclesr._napari._metrics_widget import COLUMNS, WARNING_MARK

    index = [column.title for column in COLUMNS].index(title)
    return widget.table_widget.item(row, index).text().removeprefix(WARNING_MARK)


def warnings_since(count: int) -> list[str]:
    """Messages of the napari warnings and errors notified after the first ``count``."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    return [
        str(record.message)
        for record in notification_manager.records[count:]
        if record.severity >= NotificationSeverity.WARNING
    ]


def notification_count() -> int:
    from napari.utils.notifications import notification_manager

    return len(notification_manager.records)


def test_dock_computes_the_table_follows_the_slider_and_exports(
    make_napari_viewer, qtbot, stacks, tmp_path, monkeypatch
):
    from napari_pclesr._napari import _metrics_widget
    from napari_pclesr._napari._metrics_widget import MetricsWidget

    viewer = make_napari_viewer()
    add_layers(viewer, stacks)
    widget = MetricsWidget(viewer)
    widget.select(["sharp SR", "noisy SR"], "HR-hat", "LR input")
    wait_done(qtbot, widget)

    expected = compare(
        evaluate_methods(
            {"sharp SR": stacks["sharp"], "noisy SR": stacks["noisy"]},
            stacks["hr"],
            stacks["lr"],
            mask=stacks["mask"],
            baseline="input · LR input",
        ),
        baseline="input · LR input",
    )
    assert widget.table_widget.rowCount() == 3
    assert [cell(widget, r, "Method") for r in range(3)] == [
        "input · LR input",
        "sharp SR",
        "noisy SR",
    ]
    for row_index, row in enumerate(expected.rows):
        assert cell(widget, row_index, "Tot_cs") == format_mean_std(
            row.mean["tot_cs"], row.std["tot_cs"], 4
        )
        assert cell(widget, row_index, "SSIM") == format_mean_std(
            row.mean["ssim"], row.std["ssim"], 4
        )
        noise = format_mean_std(row.mean["noise_ratio"], row.std["noise_ratio"], 2)
        assert cell(widget, row_index, "Noise ratio").removesuffix(" ⚠") == noise
    assert "Tot_cs =" in widget.definitions.text()
    shown = widget.current_frame()
    assert shown == viewer.dims.current_step[0]
    scores = expected.scores
    assert cell(widget, 1, "SSIM (this frame)") == f"{scores['sharp SR'].ssim[shown]:.4f}"
    assert shown != 2

    viewer.dims.set_current_step(0, 2)
    assert cell(widget, 1, "SSIM (this frame)") == f"{scores['sharp SR'].ssim[2]:.4f}"
    assert cell(widget, 2, "Tot_cs (this frame)") == f"{scores['noisy SR'].tot_cs[2]:.4f}"
    # noisy SR: SSIM 0.59 against the LR's 0.86, its ΔGCF +0.94 bought with 4.7× the noise.
    below = "'noisy SR' score(s) below the input (LR): worse than no processing."
    assert widget.status.text() == below
    assert widget.status.level == "warning"
    assert cell(widget, 2, "Noise ratio").endswith("⚠")
    assert not cell(widget, 1, "Noise ratio").endswith("⚠")

    path = tmp_path / "metrics.csv"
    widget.export_csv(path)
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line[:1] != "#"]
    rows = list(csv.DictReader(lines))
    assert [row["method"] for row in rows] == ["input · LR input", "sharp SR", "noisy SR"]
    assert int(rows[1]["frame"]) == 2
    assert float(rows[1]["ssim_frame"]) == pytest.approx(scores["sharp SR"].ssim[2], rel=1e-12)
    assert float(rows[2]["tot_cs_mean"]) == pytest.approx(expected["noisy SR"].mean["tot_cs"])
    assert float(rows[2]["tot_cs_p"]) == pytest.approx(expected["noisy SR"].p_value["tot_cs"])
    assert rows[2]["noisy_contrast"] == str(expected["noisy SR"].noisy_contrast)

    # The button asks for a file name, then writes the same table there.
    chosen = tmp_path / "from_dialog.csv"
    monkeypatch.setattr(
        _metrics_widget.QFileDialog, "getSaveFileName", lambda *args: (str(chosen), "CSV")
    )
    assert widget.export_button.isEnabled()
    widget.export_button.click()
    assert chosen.read_text(encoding="utf-8") == path.read_text(encoding="utf-8")
    assert str(chosen) in widget.status.text()


def test_dock_restarts_for_a_new_choice_and_new_data(make_napari_viewer, qtbot, stacks):
    from napari_pclesr._napari._metrics_widget import MetricsWidget

    viewer = make_napari_viewer()
    add_layers(viewer, stacks, with_mask=False)
    widget = MetricsWidget(viewer)
    widget.select(["sharp SR", "noisy SR"], "HR-hat", "LR input")
    widget.select(["noisy SR"], "HR-hat", "LR input")  # supersedes the first request at once
    wait_done(qtbot, widget)
    assert [cell(widget, r, "Method") for r in range(2)] == ["input · LR input", "noisy SR"]

    viewer.layers["noisy SR"].data = stacks["hr"]  # a perfect SR: SSIM 1 on every frame
    wait_done(qtbot, widget)
    assert cell(widget, 1, "SSIM") == "1.0000 ± 0.0000"
    assert "whole frames" in widget.status.text()


def test_dock_explains_what_is_wrong(make_napari_viewer, qtbot, stacks):
    from napari_pclesr._napari._metrics_widget import MetricsWidget

    viewer = make_napari_viewer()
    add_layers(viewer, stacks, with_mask=False)
    widget = MetricsWidget(viewer)
    widget.select(["sharp SR"], "HR-hat", "—")
    assert "choose the input image (LR)" in widget.status.text()
    assert widget.table_widget.rowCount() == 0

    viewer.add_image(stacks["sharp"][:, :40], name="cropped SR")
    widget.select(["cropped SR"], "HR-hat", "LR input")
    assert "differ in size" in widget.status.text()
    assert "cropped SR: (4, 40, 48)" in widget.status.text()

    viewer.add_image(np.zeros((48, 48, 3)), name="colour", rgb=True)
    widget.select(["colour"], "HR-hat", "LR input")
    assert "RGB" in widget.status.text()
    assert not widget.export_button.isEnabled()
    with pytest.raises(ValueError, match="No complete table"):
        widget.export_csv("unused.csv")


def test_dock_ignores_a_misfit_mask_and_scores_single_frames(make_napari_viewer, qtbot, stacks):
    from napari_pclesr._napari._metrics_widget import MetricsWidget

    viewer = make_napari_viewer()
    viewer.add_image(stacks["hr"][0], name="HR-hat")
    viewer.add_image(stacks["lr"][0], name="LR", metadata={"fov_mask": np.ones((5, 5), bool)})
    viewer.add_image(stacks["sharp"][0], name="SR")
    widget = MetricsWidget(viewer)
    widget.select(["SR"], "HR-hat", "LR")
    wait_done(qtbot, widget)
    assert "Ignored the field-of-view mask of 'LR'" in widget.status.text()
    expected = compare(
        evaluate_methods(
            {"SR": stacks["sharp"][0]}, stacks["hr"][0], stacks["lr"][0], baseline="input · LR"
        ),
        baseline="input · LR",
    )
    assert cell(widget, 1, "SSIM") == f"{expected['SR'].mean['ssim']:.4f}"
    assert cell(widget, 1, "p (Tot_cs)") == "—"


def test_frames_are_scheduled_from_the_current_one():
    from napari_pclesr._napari._metrics_widget import _Job

    job = _Job({}, None, None, None, "LR", 6, (16, 16), ())
    job.done[[1, 4]] = True
    assert job.frames_to_compute(3) == [3, 5, 0, 2]
    assert job.frames_to_compute(0) == [0, 2, 3, 5]


def test_moving_to_an_unscored_frame_scores_it_next(make_napari_viewer, qtbot, stacks, monkeypatch):
    from napari_pclesr._napari import _metrics_widget
    from napari_pclesr._napari._metrics_widget import MetricsWidget

    stored = []
    original_store = _metrics_widget._Job.store

    def recording_store(job, frames, results):
        stored.append([int(t) for t in frames])
        original_store(job, frames, results)

    monkeypatch.setattr(_metrics_widget._Job, "store", recording_store)
    monkeypatch.setattr(_metrics_widget, "CHUNK_PIXELS", 1)  # one frame per chunk
    viewer = make_napari_viewer()
    frames = 12
    tiles = (3, 3, 3)  # 12 frames of 144×144, so that scoring them all takes a while
    viewer.add_image(np.tile(stacks["hr"], tiles), name="HR-hat")
    viewer.add_image(np.tile(stacks["lr"], tiles), name="LR")
    viewer.add_image(np.tile(stacks["sharp"], tiles), name="SR")
    viewer.dims.set_current_step(0, 0)
    widget = MetricsWidget(viewer)
    widget.select(["SR"], "HR-hat", "LR")  # starts from frame 0
    viewer.dims.set_current_step(0, 9)  # before any result came back
    wait_done(qtbot, widget)
    scored = [t for chunk in stored for t in chunk]
    assert set(scored) == set(range(frames))
    # The first worker may have scored a few frames from 0 on before it saw the request to
    # stop; the second one scores 9, 10, 11, then the rest: 9 comes long before 8.
    assert scored.index(9) < scored.index(8)
    ssim_9 = widget.current_table.scores["SR"].ssim[9]
    assert cell(widget, 1, "SSIM (this frame)") == f"{ssim_9:.4f}"

    viewer.layers.remove("SR")
    assert widget.table_widget.rowCount() == 0
    assert "tick at least one result (SR)" in widget.status.text()


def test_the_dock_opens_without_a_warning_and_ticks_only_fitting_results(make_napari_viewer, qtbot):
    from napari_pclesr._napari._metrics_widget import MetricsWidget
    from napari_pclesr._napari._sample_data import phantom_sample

    viewer = make_napari_viewer()
    for layer_data, attributes, kind in phantom_sample():  # from a test: made at once
        getattr(viewer, f"add_{kind}")(layer_data, **attributes)
    # A layer named like an SR result, but of another size, as used to trip the dock.
    viewer.add_image(np.zeros((40, 40), np.float32), name="SR test crop")
    before = notification_count()
    widget = MetricsWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.selected_sr_names() == []
    assert widget.hr_combo.currentText() == "HR (phantom)"
    assert widget.lr_combo.currentText() == "LR (simulated)"
    assert widget.status.level == "info" and "tick at least one result" in widget.status.text()
    # A result of the input's size (as the Super-resolve dock makes them) is ticked at once.
    lr = viewer.layers["LR (simulated)"].data
    viewer.add_image(lr.copy(), name="SR · copy", metadata={"sr_model": "identity"})
    assert widget.selected_sr_names() == ["SR · copy"]
    wait_done(qtbot, widget)
    assert widget.current_table["SR · copy"].mean["ssim"] == pytest.approx(
        widget.current_table["input · LR (simulated)"].mean["ssim"]
    )
    assert warnings_since(before) == []


def test_a_result_worse_than_its_input_gets_a_warning_row(make_napari_viewer, qtbot, stacks):
    from qtpy.QtGui import QColor

    from napari_pclesr._napari._metrics_widget import COLUMNS, WARNING_MARK, WORSE_COLOUR

    viewer = make_napari_viewer()
    add_layers(viewer, stacks)
    widget = _metrics_dock(viewer)
    worse = filters.gaussian(stacks["lr"], sigma=(0, 2, 2))
    viewer.add_image(worse, name="blurred SR")
    before = notification_count()
    widget.select(["sharp SR", "blurred SR"], "HR-hat", "LR input")
    wait_done(qtbot, widget)
    method = widget.table_widget.item(2, 0)
    assert method.text() == WARNING_MARK + "blurred SR"
    assert "worse than no processing" in method.toolTip()
    assert method.foreground().color() == QColor(WORSE_COLOUR)
    assert not widget.table_widget.item(1, 0).text().startswith(WARNING_MARK)
    assert "'blurred SR' score(s) below the input" in widget.status.text()
    assert any("blurred SR" in message for message in warnings_since(before))
    # The chart: one bar per row, its height the mean and its whisker the std of the score.
    bars = widget.chart.bars
    table = widget.current_table
    assert [bar.label for bar in bars] == [row.name for row in table.rows]
    assert [bar.value for bar in bars] == [row.mean["ssim"] for row in table.rows]
    assert [bar.error for bar in bars] == [row.std["ssim"] for row in table.rows]
    assert bars[2].colour == WORSE_COLOUR
    widget.chart_score.setCurrentIndex(widget.chart_score.findData("noise_ratio"))
    assert [bar.value for bar in widget.chart.bars] == [r.mean["noise_ratio"] for r in table.rows]
    assert len(COLUMNS) == widget.table_widget.columnCount()


def test_key_columns_come_first_and_every_header_explains_itself(make_napari_viewer):
    from napari_pclesr._napari._metrics_widget import COLUMNS

    viewer = make_napari_viewer()
    widget = _metrics_dock(viewer)
    table = widget.table_widget
    shown = [c.title for i, c in enumerate(COLUMNS) if not table.isColumnHidden(i)]
    assert shown == ["Method", "SSIM", "ΔGCF", "Tot_cs", "Noise ratio"]
    for index in range(table.columnCount()):
        tooltip = table.horizontalHeaderItem(index).toolTip()
        assert len(tooltip) > 30, COLUMNS[index].title
        assert "ddof" not in tooltip and "scipy" not in tooltip and "fov_mask" not in tooltip
    widget.more_columns.setChecked(True)
    assert not any(table.isColumnHidden(i) for i in range(table.columnCount()))
    text = widget.definitions.text()
    assert "ddof" not in text and "scipy" not in text and "fov_mask" not in text


def _metrics_dock(viewer):
    from napari_pclesr._napari._metrics_widget import MetricsWidget

    widget = MetricsWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return widget
