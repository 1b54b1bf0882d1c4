"""The inference dock in a real napari viewer (run under xvfb-run)."""

import numpy as np
import pytest
from dock_helpers import wait_ready

from napari_pclesr.data import phantom
from napari_pclesr.data.patches import PairedSequences
from napari_pclesr.infer import super_resolve
from napari_pclesr.train import TrainConfig, train

pytestmark = pytest.mark.napari

TINY_FSRCNN = {"features": 8, "shrink_features": 4, "mapping_layers": 1}


@pytest.fixture
def dock(make_napari_viewer):
    from napari_pclesr._napari._inference_widget import InferenceWidget

    viewer = make_napari_viewer()
    widget = InferenceWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget


@pytest.fixture
def ready_dock(dock, qtbot):
    viewer, widget = dock
    wait_ready(qtbot, widget)
    widget._device.value = "cpu"
    return viewer, widget


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """best.pt of a tiny ×2 FSRCNN trained for two iterations."""
    out_dir = tmp_path_factory.mktemp("run")
    data = PairedSequences([phantom((96, 96), seed=i) for i in range(3)], scale=2)
    config = TrainConfig(
        model="fsrcnn",
        hparams=TINY_FSRCNN,
        scale=2,
        loss="l1",
        iterations=2,
        batch_size=4,
        patch_size=12,
        val_every=2,
        device="cpu",
        out_dir=str(out_dir),
    )
    return train(config, data=data).best_checkpoint


def run_and_wait(qtbot, widget):
    worker = widget.run()
    assert worker is not None, widget.status.message
    # Not waitSignal(worker.finished): a fast worker may finish before the wait connects.
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60000)
    return worker


def lr_stack(frames=3, shape=(48, 48)):
    stack = np.stack([phantom(shape, seed=i) for i in range(frames)])
    mask = np.zeros(shape, dtype=bool)
    mask[4:-4, 6:-6] = True
    return np.where(mask, stack, 0).astype(np.float32), mask


def test_baseline_output_equals_super_resolve(ready_dock, qtbot):
    viewer, widget = ready_dock
    stack, mask = lr_stack()
    viewer.add_image(stack, name="lr", metadata={"fov_mask": mask}, translate=(0, 10, 20))
    widget._image.value = viewer.layers["lr"]
    widget._source.value = "bicubic"
    widget._baseline_scale.value = 2
    widget._batch_size.value = 2  # two chunks of frames
    run_and_wait(qtbot, widget)

    layer = viewer.layers["SR · bicubic ×2"]
    expected = super_resolve(
        stack, "bicubic", device="cpu", scale=2, fov_mask=mask, batch_size=2, half=None
    )
    np.testing.assert_allclose(layer.data, expected, rtol=0, atol=1e-6)
    assert layer.data.shape == (3, 96, 96)
    upsampled_mask = np.repeat(np.repeat(mask, 2, axis=0), 2, axis=1)
    assert np.array_equal(layer.metadata["fov_mask"], upsampled_mask)
    assert not layer.data[:, ~upsampled_mask].any()
    assert layer.metadata["sr_model"] == "bicubic ×2"
    assert layer.metadata["sr_checkpoint"] is None
    assert layer.metadata["sr_device"] == "cpu"
    low, high = np.percentile(expected[:, upsampled_mask], (0.5, 99.5))
    assert layer.contrast_limits == pytest.approx([low, high])
    # The output overlays the input: output pixel 2·i + 1/2 sits on LR pixel i.
    assert tuple(layer.scale) == (1, 0.5, 0.5)
    lr_world = viewer.layers["lr"].data_to_world((0, 7, 9))
    sr_world = layer.data_to_world((0, 2 * 7 + 0.5, 2 * 9 + 0.5))
    np.testing.assert_allclose(sr_world, lr_world)
    assert "Done: 'SR · bicubic ×2', 3 frame(s)" in widget.status.message
    assert layer.metadata["sr_source_layer"] == "lr" and layer.metadata["pclesr_role"] == "sr"

    # Running the same method on the same input again updates that layer.
    widget._batch_size.value = 3
    run_and_wait(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["lr", "SR · bicubic ×2"]
    assert layer.metadata["sr_settings"]["batch_size"] == 3


def test_single_frame_without_mask_matches_super_resolve(ready_dock, qtbot):
    viewer, widget = ready_dock
    frame = phantom((40, 56), seed=3)
    viewer.add_image(frame, name="frame")
    widget._image.value = viewer.layers["frame"]
    widget._source.value = "unsharp"
    widget._tile.value = 24
    widget._overlap.value = 8
    run_and_wait(qtbot, widget)
    layer = viewer.layers["SR · unsharp"]
    expected = super_resolve(frame, "unsharp", device="cpu", tile=24, overlap=8)
    np.testing.assert_allclose(layer.data, expected, rtol=0, atol=1e-6)
    assert layer.metadata["sr_settings"]["tile"] == 24
    assert tuple(layer.scale) == (1, 1)


def test_stop_ends_early_without_a_layer(ready_dock, qtbot):
    viewer, widget = ready_dock
    stack, _ = lr_stack(frames=300, shape=(32, 32))
    viewer.add_image(stack, name="long")
    widget._image.value = viewer.layers["long"]
    widget._source.value = "richardson_lucy"
    widget._batch_size.value = 1
    assert widget.run() is not None
    qtbot.waitUntil(lambda: widget._progress.value > 0, timeout=60000)
    widget.stop()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60000)
    assert [layer.name for layer in viewer.layers] == ["long"]
    assert 1 <= widget._progress.value < 300
    assert widget.status.message.startswith("Stopped after")
    assert widget.worker is None and widget._run.enabled


def test_bad_layers_and_settings_get_clear_messages(ready_dock):
    viewer, widget = ready_dock
    widget._source.value = "bicubic"
    assert widget.run() is None
    assert "Pick the input (LR) image layer" in widget.status.message

    viewer.add_image(np.random.default_rng(0).random((32, 32, 3)), name="colour", rgb=True)
    widget._image.value = viewer.layers["colour"]
    assert widget.run() is None
    assert "RGB" in widget.status.message and "grey" in widget.status.message

    viewer.add_image(np.zeros((2, 2, 16, 16), dtype=np.float32), name="4d")
    widget._image.value = viewer.layers["4d"]
    assert widget.run() is None
    assert "(2, 2, 16, 16)" in widget.status.message

    viewer.add_image(phantom((32, 32)), name="lr")
    widget._image.value = viewer.layers["lr"]
    widget._tile.value, widget._overlap.value = 20, 10
    assert widget.run() is None
    assert "larger than twice the overlap" in widget.status.message

    widget._tile.value = 0
    widget._source.value = "checkpoint"
    assert widget.run() is None
    assert "Choose a model file" in widget.status.message
    assert len(viewer.layers) == 3


def test_checkpoint_output_equals_super_resolve(ready_dock, qtbot, checkpoint):
    viewer, widget = ready_dock
    stack, mask = lr_stack(frames=2, shape=(40, 40))
    viewer.add_image(stack, name="lr", metadata={"fov_mask": mask})
    widget._image.value = viewer.layers["lr"]
    widget.use_checkpoint(checkpoint)
    assert widget._source.value == "checkpoint"
    run_and_wait(qtbot, widget)

    layer = viewer.layers["SR · fsrcnn"]
    expected = super_resolve(stack, checkpoint, device="cpu", fov_mask=mask)
    np.testing.assert_allclose(layer.data, expected, rtol=0, atol=1e-6)
    assert layer.data.shape == (2, 80, 80)
    assert layer.metadata["sr_checkpoint"] == str(checkpoint)
    assert layer.metadata["sr_scale"] == 2


def test_unreadable_checkpoint_is_reported_without_a_layer(ready_dock, qtbot, tmp_path):
    viewer, widget = ready_dock
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    viewer.add_image(phantom((32, 32)), name="lr")
    widget._image.value = viewer.layers["lr"]
    widget.use_checkpoint(bad)
    run_and_wait(qtbot, widget)
    assert "Super-resolution failed" in widget.status.message
    assert "cannot be read as a checkpoint" in widget.status.message
    assert len(viewer.layers) == 1
    assert widget._run.enabled


def test_the_input_defaults_to_the_most_recent_lr_like_layer(dock, qtbot):
    viewer, widget = dock
    viewer.add_image(phantom((32, 32), seed=0), name="phantom HR")
    assert widget._image.value is viewer.layers["phantom HR"]  # the only image so far
    viewer.add_image(phantom((32, 32), seed=1), name="LR (simulated)")
    assert widget._image.value is viewer.layers["LR (simulated)"]
    viewer.add_image(phantom((32, 32), seed=2), name="recording", metadata={"format": "mkt"})
    assert widget._image.value is viewer.layers["recording"]
    # A sharp image or an SR result added later does not take the choice away.
    viewer.add_image(phantom((32, 32), seed=3), name="HR-hat")
    viewer.add_image(phantom((32, 32), seed=4), name="SR · wiener", metadata={"sr_model": "w"})
    assert widget._image.value is viewer.layers["recording"]
    # Nor does a new layer override what the user picked, unless it is a new LR.
    widget._image.value = viewer.layers["LR (simulated)"]
    viewer.add_image(phantom((32, 32), seed=5), name="HR again")
    assert widget._image.value is viewer.layers["LR (simulated)"]


def test_baselines_are_listed_by_plain_name_once_torch_is_loaded(dock, qtbot):
    from napari_pclesr import baselines, pretrained

    _viewer, widget = dock
    wait_ready(qtbot, widget)
    combo = widget._source.native
    labels = [combo.itemText(index) for index in range(combo.count())]
    assert labels[0] == "Trained model (checkpoint file)"
    assert "Wiener deconvolution (wiener)" in labels
    assert len(labels) == 1 + len(pretrained.available()) + len(baselines.available())
    assert widget._device.value == "auto" and widget._run.enabled


@pytest.mark.parametrize("names", [[], ["tiny"]])
def test_pretrained_networks_are_listed_and_run(
    make_napari_viewer, qtbot, monkeypatch, checkpoint, names
):
    from napari_pclesr import pretrained
    from napari_pclesr._napari._inference_widget import InferenceWidget

    monkeypatch.setattr(pretrained, "available", lambda: list(names))
    monkeypatch.setattr(pretrained, "checkpoint_path", lambda name: checkpoint)
    viewer = make_napari_viewer()
    widget = InferenceWidget(viewer)
    viewer.window.add_dock_widget(widget)
    wait_ready(qtbot, widget)
    combo = widget._source.native
    labels = [combo.itemText(index) for index in range(combo.count())]
    assert [label for label in labels if label.startswith("Pretrained")] == [
        f"Pretrained: {name}" for name in names
    ]
    if not names:
        return
    widget._device.value = "cpu"
    stack, mask = lr_stack(frames=2, shape=(40, 40))
    viewer.add_image(stack, name="lr", metadata={"fov_mask": mask})
    widget._image.value = viewer.layers["lr"]
    widget._source.value = "pretrained:tiny"
    assert widget._checkpoint.native.isHidden()  # no file to choose
    run_and_wait(qtbot, widget)
    layer = viewer.layers["SR · tiny"]
    expected = super_resolve(stack, checkpoint, device="cpu", fov_mask=mask)
    np.testing.assert_allclose(layer.data, expected, rtol=0, atol=1e-6)
    assert layer.metadata["sr_checkpoint"] == str(checkpoint)


def _pair(viewer):
    """A sharp 96×96 reference "HR" and its 48×48 block-mean LR, simulated from it."""
    hr = phantom((96, 96), seed=4)
    lr = hr.reshape(48, 2, 48, 2).mean(axis=(1, 3))
    viewer.add_image(hr, name="HR")
    viewer.add_image(lr, name="input", metadata={"simulated_from": "HR"})
    return hr, lr


def test_a_result_worse_than_its_input_is_flagged(ready_dock, qtbot, checkpoint):
    from napari_pclesr.metrics import ssim

    viewer, widget = ready_dock
    hr, lr = _pair(viewer)
    widget._image.value = viewer.layers["input"]
    widget.use_checkpoint(checkpoint)  # two training steps: far from useful
    run_and_wait(qtbot, widget)
    check = viewer.layers["SR · fsrcnn"].metadata["sr_check"]
    sr = viewer.layers["SR · fsrcnn"].data
    fov = viewer.layers["SR · fsrcnn"].metadata["fov_mask"]
    span = float(hr[fov].max() - hr[fov].min())
    assert check["reference"] == "HR" and check["frames"] == [0]
    assert check["sr_ssim"] == pytest.approx(ssim(sr, hr, data_range=span, mask=fov))
    upsampled = np.kron(lr, np.ones((2, 2)))
    assert check["lr_ssim"] == pytest.approx(ssim(upsampled, hr, data_range=span, mask=fov))
    assert check["sr_ssim"] < check["lr_ssim"] - 0.05
    assert widget.status.level == "warning"
    assert "worse than its input" in widget.status.message

    # Nearest-neighbour ×2 is the input itself on the HR grid: a tie, not a warning.
    widget._source.value = "nearest"
    widget._baseline_scale.value = 2
    run_and_wait(qtbot, widget)
    check = viewer.layers["SR · nearest ×2"].metadata["sr_check"]
    assert check["sr_ssim"] == pytest.approx(check["lr_ssim"], abs=1e-6)
    assert widget.status.level == "info" and "SSIM against 'HR'" in widget.status.message


def test_long_stacks_stream_with_progress(ready_dock, qtbot):
    viewer, widget = ready_dock
    stack, mask = lr_stack(frames=10, shape=(32, 32))
    viewer.add_image(stack, name="lr", metadata={"fov_mask": mask})
    widget._image.value = viewer.layers["lr"]
    widget._source.value = "unsharp"
    widget._batch_size.value = 3
    progress = []
    worker = widget.run()
    worker.yielded.connect(progress.append)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60000)
    assert [event.done for event in progress][-1] == 10 and all(p.total == 10 for p in progress)
    # A batch of 3 at a time: the count rises by batches (an early event may go unseen).
    done = [event.done for event in progress]
    assert done == sorted(set(done)) and set(done) <= {3, 6, 9, 10}
    expected = super_resolve(stack, "unsharp", device="cpu", fov_mask=mask)
    np.testing.assert_allclose(viewer.layers["SR · unsharp"].data, expected, atol=1e-6)
    assert viewer.layers["SR · unsharp"].metadata["sr_check"] is None  # no reference
