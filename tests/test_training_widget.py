"""The training dock in a real napari viewer (run under xvfb-run)."""

import time

import numpy as np
import pytest
import torch
from dock_helpers import TIMEOUT_MS, TINY_FSRCNN, set_up_tiny_training, wait_idle, wait_ready

from napari_pclesr import FibreLayout, Simulator
from napari_pclesr.data import phantom
from napari_pclesr.data.patches import PairedSequences
from napari_pclesr.fibre import fibre_count_for
from napari_pclesr.train import TrainConfig, load_checkpoint, load_model

pytestmark = pytest.mark.napari


@pytest.fixture
def dock(make_napari_viewer, tmp_path, qtbot):
    from napari_pclesr._napari._training_widget import TrainingWidget

    viewer = make_napari_viewer()
    widget = TrainingWidget(viewer)
    viewer.window.add_dock_widget(widget)
    wait_ready(qtbot, widget)
    set_up_tiny_training(widget, tmp_path / "run", iterations=4, val_every=2)
    return viewer, widget


def start_and_wait(qtbot, widget):
    worker = widget.start()
    assert worker is not None, widget.status.message
    # Not waitSignal(worker.finished): a fast worker may finish before the wait connects.
    wait_idle(qtbot, widget)
    return worker


def test_trains_from_an_hr_layer_with_simulated_lr(dock, qtbot, tmp_path):
    viewer, widget = dock
    hr = np.stack([phantom((64, 64), seed=0), phantom((64, 64), seed=1)])
    viewer.add_image(hr, name="phantom HR")
    widget.refresh_choices()
    widget._hr_layers.value = [viewer.layers["phantom HR"]]
    widget._learning_rate.value = "3e-4"
    start_and_wait(qtbot, widget)

    best, last = tmp_path / "run" / "best.pt", tmp_path / "run" / "last.pt"
    assert widget.checkpoints == {"best": best, "last": last}
    checkpoint = load_checkpoint(last)
    assert checkpoint["iteration"] == 4
    config = checkpoint["config"]
    assert config["lr"] == pytest.approx(3e-4)
    assert config["hparams"] == {"features": 8, "shrink_features": 4, "mapping_layers": 1}
    assert config["data"] == "napari layers, simulated LR: 'phantom HR'"
    # One sequence is split by patch: training and validation patches of the same layer.
    assert checkpoint["split"]["train"] == ["phantom HR (training patches)"]
    assert checkpoint["split"]["val"] == ["phantom HR (validation patches)"]
    assert checkpoint["history"]["val_iteration"] == [2, 4]
    model, _ = load_model(best)
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 20, 20)).shape == (1, 1, 20, 20)
    assert widget._progress.value == 4
    assert "Finished at step 4" in widget.status.message
    assert str(best) in widget.status.message and str(last) in widget.status.message
    assert "validation at 4" in widget._history.value
    assert widget._use_best.enabled and widget._use_last.enabled
    # The live plot received every report and validation, at their iterations.
    history = checkpoint["history"]
    assert list(widget.plot.series) == ["loss", "val"]  # the one supervised term
    assert widget.plot.series["loss"].xs == history["iteration"]
    assert widget.plot.series["loss"].ys == pytest.approx(history["train_loss"])
    assert widget.plot.series["val"].xs == [2, 4]
    assert widget.plot.series["val"].ys == pytest.approx(history["val_loss"])
    # The preview: the current model on a fixed validation crop, refreshed at each validation.
    preview = viewer.layers["Preview · SR"]
    assert preview.metadata["iteration"] == 4
    lr_crop = viewer.layers["Preview · LR"].data
    from napari_pclesr.infer import super_resolve

    expected = super_resolve(lr_crop, last, device="cpu", fov_mask=preview.metadata["fov_mask"])
    np.testing.assert_allclose(preview.data, expected, atol=1e-5)
    assert "preview at step 2" in widget._history.value


def test_one_sequence_is_split_into_disjoint_patch_sets():
    from napari_pclesr._napari._training_widget import _split_patches

    hr = [phantom((96, 96), seed=4)]
    full = PairedSequences(hr)
    train, val = _split_patches(full, hr, None, 12, {"scale": 1})
    corners = {tuple(c) for c in full.patch_corners(0, 12)}
    train_corners = {tuple(c) for c in train.patch_corners(0, 12)}
    val_corners = {tuple(c) for c in val.patch_corners(0, 12)}
    assert train_corners | val_corners == corners
    assert not train_corners & val_corners
    assert len(val_corners) == max(1, round(0.15 * len(corners)))
    # Both parts see the same simulated LR (the same synthetic bundle and noise).
    np.testing.assert_array_equal(train.lr(0), val.lr(0))


def test_stop_leaves_a_loadable_last_checkpoint_and_resume_continues(dock, qtbot, tmp_path):
    viewer, widget = dock
    viewer.add_image(phantom((64, 64), seed=2), name="hr")
    widget.refresh_choices()
    widget._hr_layers.value = [viewer.layers["hr"]]
    widget._iterations.value = 100_000
    widget._val_every.value = 1000
    assert widget.start() is not None
    qtbot.waitUntil(lambda: widget._progress.value > 0, timeout=TIMEOUT_MS)
    widget.stop()
    wait_idle(qtbot, widget)
    last = tmp_path / "run" / "last.pt"
    assert widget.checkpoints == {"last": last}
    checkpoint = load_checkpoint(last)
    assert 0 < checkpoint["iteration"] < 100_000
    load_model(last)
    assert widget.status.message.startswith(f"Stopped at step {checkpoint['iteration']}")
    assert str(last) in widget.status.message
    # The progress bar shows where the run stopped, not 0 %.
    assert (widget._progress.value, widget._progress.max) == (checkpoint["iteration"], 100_000)
    # Only the file that exists can be handed to inference.
    assert widget._use_last.enabled and not widget._use_best.enabled
    assert widget.open_in_inference("best") is None

    # Resuming copies the run's settings from the file and continues from its iteration.
    widget._hparams.value = ""
    widget._resume.value = last
    assert widget._hparams.value == "features=8, shrink_features=4, mapping_layers=1"
    assert f"at step {checkpoint['iteration']}" in widget.status.message
    widget._iterations.value = checkpoint["iteration"]
    assert widget.start() is None
    assert "set the training steps higher" in widget.status.message
    widget._iterations.value = checkpoint["iteration"] + 2
    start_and_wait(qtbot, widget)
    assert load_checkpoint(last)["iteration"] == checkpoint["iteration"] + 2
    assert f"steps {checkpoint['iteration'] + 1}–" in widget._history.value


def test_closing_the_viewer_stops_the_run_and_keeps_last_checkpoint(dock, qtbot, tmp_path):
    viewer, widget = dock
    viewer.add_image(phantom((64, 64), seed=3), name="hr")
    widget.refresh_choices()
    widget._hr_layers.value = [viewer.layers["hr"]]
    widget._iterations.value = 100_000
    widget._val_every.value = 1000
    worker = widget.start()
    qtbot.waitUntil(lambda: widget._progress.value > 0, timeout=TIMEOUT_MS)
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT_MS):
        viewer.close()  # deletes the dock's widgets while the worker runs
    assert widget.closed
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    assert 0 < checkpoint["iteration"] < 100_000


def test_bad_settings_get_a_clear_message_and_start_nothing(dock, qtbot, tmp_path):
    from napari_pclesr import models

    viewer, widget = dock
    tiny = models.create("fsrcnn", features=8, shrink_features=4, mapping_layers=1)
    expected = f"{models.count_parameters(tiny):,} parameters"
    qtbot.waitUntil(lambda: widget._n_parameters.value.startswith(expected), timeout=TIMEOUT_MS)
    assert widget.start() is None
    assert "Select at least one sharp (HR) image layer" in widget.status.message

    viewer.add_image(phantom((48, 48)), name="hr")
    widget.refresh_choices()
    widget._hr_layers.value = [viewer.layers["hr"]]
    widget._learning_rate.value = "0"
    assert widget.start() is None
    assert "lr must be > 0" in widget.status.message
    widget._learning_rate.value = "fast"
    assert widget.start() is None
    assert "learning rate must be a number" in widget.status.message

    widget._learning_rate.value = "1e-4"
    widget._patch_size.value = 30
    widget._scale.value = 2
    assert widget.start() is None
    assert "patch size 30 is bigger than the 24x24 LR frames of 'hr'" in widget.status.message

    # Network settings are checked in the background as they are typed (building a network
    # in the UI thread would freeze it), and Start refuses what the check found wrong.
    widget._scale.value = 1
    widget._hparams.value = "features=0"
    qtbot.waitUntil(lambda: "features" in widget._n_parameters.value, timeout=TIMEOUT_MS)
    assert widget.start() is None
    assert "features" in widget.status.message

    widget._hparams.value = "colour=blue"
    qtbot.waitUntil(lambda: "colour" in widget._n_parameters.value, timeout=TIMEOUT_MS)
    assert widget.start() is None
    assert "no hyper-parameter(s) colour" in widget.status.message
    assert "no hyper-parameter(s) colour" in widget._n_parameters.value

    widget._hparams.value = TINY_FSRCNN
    widget._out_dir.value = None
    assert widget.start() is None
    assert "output folder" in widget.status.message
    assert widget.worker is None
    assert not (tmp_path / "run").exists()


def test_paired_layers_train_and_hand_the_checkpoint_to_inference(dock, qtbot, tmp_path):
    from napari_pclesr._napari._inference_widget import InferenceWidget

    viewer, widget = dock
    hr = np.stack([phantom((64, 64), seed=s) for s in (5, 6)])
    simulator = Simulator(FibreLayout.synthetic((64, 64), fibre_count_for((64, 64)), seed=1))
    lr = simulator.simulate(hr, 0.05, 0.01, seed=0)
    viewer.add_image(hr, name="HR")
    viewer.add_image(lr, name="LR", metadata={"fov_mask": simulator.fov_mask})
    inference = InferenceWidget(viewer)
    viewer.window.add_dock_widget(inference)
    widget.refresh_choices()
    widget._source.value = "paired"
    widget._hr_layers.value = [viewer.layers["HR"]]
    widget._lr_layer.value = viewer.layers["LR"]
    widget._iterations.value = 2
    start_and_wait(qtbot, widget)

    checkpoint = load_checkpoint(tmp_path / "run" / "best.pt")
    assert checkpoint["config"]["data"] == "napari layers: HR 'HR', LR 'LR'"
    assert widget.open_in_inference() is inference
    assert inference._source.value == "checkpoint"
    assert inference._checkpoint.value == tmp_path / "run" / "best.pt"


def test_the_paired_source_needs_one_hr_layer_and_a_distinct_lr_layer(dock, qtbot):
    viewer, widget = dock
    viewer.add_image(phantom((48, 48)), name="a")
    viewer.add_image(phantom((48, 48), seed=1), name="b")
    widget.refresh_choices()
    widget._source.value = "paired"
    widget._hr_layers.value = [viewer.layers["a"], viewer.layers["b"]]
    assert widget.start() is None
    assert "exactly one selected sharp (HR) layer" in widget.status.message
    widget._hr_layers.value = [viewer.layers["a"]]
    widget._lr_layer.value = viewer.layers["a"]
    assert widget.start() is None
    assert "must be different layers" in widget.status.message

    # Stacks that do not align are refused by the data pipeline, in the worker.
    viewer.add_image(np.stack([phantom((48, 48), seed=s) for s in (2, 3)]), name="stack")
    widget.refresh_choices()
    widget._lr_layer.value = viewer.layers["stack"]
    start_and_wait(qtbot, widget)
    assert "Training failed" in widget.status.message
    assert "1 HR frames but 2 LR frames" in widget.status.message
    assert widget._start.enabled and widget.worker is None

    widget._source.value = "simulated"
    viewer.add_image(phantom((49, 48)), name="odd")
    widget.refresh_choices()
    widget._hr_layers.value = [viewer.layers["odd"]]
    widget._scale.value = 2
    assert widget.start() is None
    assert "49x48, not divisible by the scale 2" in widget.status.message


def test_helpers():
    from napari_pclesr._napari._training_widget import format_duration, parse_hparams

    assert parse_hparams("features=8, res_scale=0.1, mean=0.5") == {
        "features": 8,
        "res_scale": 0.1,
        "mean": 0.5,
    }
    assert parse_hparams(" ") == {}
    with pytest.raises(ValueError, match="key=value"):
        parse_hparams("features 8")
    assert format_duration(12.4) == "12 s"
    assert format_duration(185) == "3 min 05 s"
    assert format_duration(3720) == "1 h 02 min"
    # The dock's defaults are TrainConfig's (the names and numbers the docs describe).
    assert TrainConfig().lr == 1e-4


def test_trains_on_the_sample_phantoms_and_opens_an_inference_dock(dock, qtbot, tmp_path):
    from napari_pclesr._napari._inference_widget import InferenceWidget

    viewer, widget = dock
    widget._source.value = "sample"
    assert not widget._hr_layers.visible
    widget._iterations.value = 1
    widget._val_every.value = 1
    start_and_wait(qtbot, widget)
    checkpoint = load_checkpoint(tmp_path / "run" / "best.pt")
    assert checkpoint["config"]["data"] == "sample"
    assert all(name.startswith("phantom") for name in checkpoint["split"]["train"])
    # No inference dock yet: the plugin's dock is opened and given the checkpoint.
    inference = widget.open_in_inference()
    assert isinstance(inference, InferenceWidget)
    assert getattr(inference.viewer, "__wrapped__", None) is viewer  # napari's plugin proxy
    assert inference._checkpoint.value == tmp_path / "run" / "best.pt"
    assert widget.open_in_inference() is inference  # found again, not opened twice


def test_start_says_preparing_at_once_and_a_first_event_arrives_within_3_s(dock, qtbot):
    from napari_pclesr._napari._training_widget import Preparing

    _viewer, widget = dock
    widget._source.value = "sample"
    widget._iterations.value = 100_000
    widget._val_every.value = 1000
    arrivals = []
    handle = widget._on_event

    def record(event):
        arrivals.append((time.perf_counter(), event))
        handle(event)

    widget._on_event = record  # start() connects the handler it finds then
    started = time.perf_counter()
    assert widget.start() is not None
    assert widget.status.message.startswith("Preparing")  # before any event
    assert widget._progress.max == 0  # a moving "busy" bar until training starts
    qtbot.waitUntil(lambda: len(arrivals) > 0, timeout=3000)
    first_time, first = arrivals[0]
    assert first_time - started < 3.0
    assert isinstance(first, Preparing)
    widget.stop()
    wait_idle(qtbot, widget)
    assert widget._start.enabled  # Start is available again


def test_a_bad_network_setting_not_checked_yet_ends_the_run_at_once(dock, qtbot):
    _viewer, widget = dock
    widget._source.value = "sample"
    with widget._hparams.changed.blocked():  # Start comes before any background check
        widget._hparams.value = "features=0"
    started = time.perf_counter()
    start_and_wait(qtbot, widget)
    assert "Training failed" in widget.status.message and "features" in widget.status.message
    assert time.perf_counter() - started < 30  # before any data were prepared
    assert widget.checkpoints == {}


def test_adversarial_training_plots_the_generator_and_critic_terms(dock, qtbot, tmp_path):
    viewer, widget = dock
    viewer.add_image(phantom((64, 64), seed=0), name="HR")
    widget.refresh_choices()
    widget._hr_layers.value = [viewer.layers["HR"]]
    assert widget._adv_weight.native.isHidden()  # GAN options only for GAN objectives
    widget._objective.value = "adversarial"
    assert not widget._adv_weight.native.isHidden() and widget._vec_weight.native.isHidden()
    widget._pretrain.value = 2  # the critic joins at step 3
    widget._adv_weight.value = "0.01"
    start_and_wait(qtbot, widget)

    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    config = checkpoint["config"]
    assert (config["objective"], config["pretrain_iterations"]) == ("adversarial", 2)
    assert config["adv_weight"] == pytest.approx(0.01)
    history = checkpoint["history"]
    plot = widget.plot
    assert list(plot.series) == ["g_loss", "content", "adv", "d_loss", "val"]
    assert plot.series["content"].xs == history["iteration"] == [2, 4]
    assert plot.series["content"].ys == pytest.approx(history["terms"]["content"])
    # D's terms exist only once the critic trains: the report at step 4.
    assert plot.series["d_loss"].xs == [4]
    assert plot.series["d_loss"].ys == pytest.approx(history["terms"]["d_loss"][1:])
    assert plot.series["val"].xs == history["val_iteration"]
    assert "d_loss" in widget._history.value and "Finished at step 4" in widget.status.message


def test_cycle_objective_settings_reach_the_config(dock, qtbot):
    _, widget = dock
    widget._source.value = "sample"
    widget._objective.value = "cycle"
    assert widget._loss.native.isHidden() and not widget._vec_weight.native.isHidden()
    widget._vec_weight.value = 2.0
    widget._target_domain.value = "rescaled"
    config = widget.config()
    assert (config.objective, config.vec_weight, config.target_domain) == ("cycle", 2.0, "rescaled")
    assert config.adv_weight is None  # empty: the objective's default
    widget._adv_weight.value = "a lot"
    with pytest.raises(ValueError, match="adversarial weight must be a number"):
        widget.config()


def test_unpaired_target_domain_asks_for_its_folder(dock, qtbot, tmp_path):
    _, widget = dock
    widget._source.value = "sample"
    widget._out_dir.value = tmp_path / "run"
    widget._objective.value = "cycle"
    assert widget._target_data.native.isHidden()  # natural: no folder to choose
    widget._target_domain.value = "unpaired"
    assert not widget._target_data.native.isHidden()
    with pytest.raises(ValueError, match="needs a folder of sharp images"):
        widget.config()
    (tmp_path / "sharp").mkdir()
    widget._target_data.value = tmp_path / "sharp"
    config = widget.config()
    assert (config.target_domain, config.target_data) == ("unpaired", str(tmp_path / "sharp"))
    widget._target_domain.value = "rescaled"  # other domains ignore the folder
    assert widget._target_data.native.isHidden() and widget.config().target_data is None
