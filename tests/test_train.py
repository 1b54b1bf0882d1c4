"""Training: config validation, overfitting, events, checkpoints, stop, resume, early stopping."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from torch import nn

from napari_pclesr.data.patches import PairedSequences
from napari_pclesr.train import (
    CheckpointSaved,
    IterationDone,
    TrainConfig,
    TrainingFinished,
    TrainingPreparing,
    TrainingStarted,
    ValidationDone,
    iter_train,
    load_checkpoint,
    load_model,
    train,
)

TINY_FSRCNN = {"features": 8, "shrink_features": 4, "mapping_layers": 1}


def smooth_stack(frames, shape, seed):
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random((frames, *shape)), (0, 1.5, 1.5)).astype(np.float32)


def recorded_pairs(n_sequences=6, frames=2, shape=(32, 32)):
    """HR: smooth noise; LR: its blur (a recorded pair, full field of view)."""
    hr = [smooth_stack(frames, shape, seed) for seed in range(n_sequences)]
    return PairedSequences(hr, [ndi.gaussian_filter(s, (0, 1.5, 1.5)) for s in hr])


def simulated_pairs():
    """Six sequences of two 64x64 frames, LR simulated through a synthetic bundle.

    The circular field of view holds 4 patches of 16x16 per frame, so the 4 training
    sequences give 32 patches: an epoch is 4 iterations of batch 8.
    """
    return PairedSequences([smooth_stack(2, (64, 64), seed) for seed in range(6)])


def tiny_config(**changes) -> TrainConfig:
    settings = {
        "model": "fsrcnn",
        "hparams": TINY_FSRCNN,
        "loss": "l1",
        "iterations": 8,
        "batch_size": 8,
        "patch_size": 16,
        "lr": 1e-3,
        "val_every": 4,
        "log_every": 1,
        "device": "cpu",
        "augment_flips": False,
        "augment_rot90": False,
        "min_inside": 1.0,  # whole-FoV patches, so the patch counts below are simple
    }
    return TrainConfig(**{**settings, **changes})


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model": "unet9000"}, "unknown model 'unet9000'; choose one of"),
        ({"loss": "perceptual"}, "unknown loss 'perceptual'; available losses:"),
        ({"lr": -1e-4}, "lr must be > 0"),
        ({"batch_size": 0}, "batch_size must be a whole number >= 1"),
        ({"iterations": 2.5}, "iterations must be a whole number"),
        ({"hparams": {"depth": 3}}, "has no hyper-parameter"),
        ({"schedule": "linear"}, "unknown schedule"),
        ({"betas": (0.9, 1.5)}, "betas must be two numbers"),
        ({"split": (0.5, 0.1, 0.1)}, "split must be"),
        ({"patience": 0}, "patience must be"),
        ({"patch_size": 8}, "patch_size must be a whole number >= 11"),
        ({"data_options": {"blur": 1}}, r"unknown option\(s\) blur of the 'sample' data"),
        ({"data": "folder", "data_options": {"n_sequences": 2}}, "apply to generated data"),
    ],
)
def test_bad_config_is_a_clear_error(changes, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**changes)


def test_patch_bigger_than_the_image_is_a_clear_error():
    with pytest.raises(ValueError, match="patch size 64 is bigger than the 32x32 LR frames"):
        train(tiny_config(patch_size=64), data=recorded_pairs())


def test_config_round_trips_through_json():
    config = tiny_config(schedule="cosine", patience=3, out_dir="run")
    restored = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    with pytest.raises(ValueError, match="unknown training setting"):
        TrainConfig.from_dict({**config.to_dict(), "colour": "blue"})


# -- learning -----------------------------------------------------------------------------------


def test_overfitting_one_batch_drives_the_loss_down_tenfold():
    one = recorded_pairs(n_sequences=1, frames=1, shape=(16, 16))
    config = tiny_config(iterations=300, batch_size=4, lr=3e-3, val_every=300, log_every=1)
    result = train(config, data=(one, one))
    losses = result.history.train_loss
    assert len(losses) == 300
    assert np.mean(losses[-10:]) < losses[0] / 10


def test_events_checkpoints_and_result(tmp_path):
    config = tiny_config(iterations=12, val_every=4, log_every=3, out_dir=str(tmp_path))
    events = list(iter_train(config, data=recorded_pairs()))
    assert isinstance(events[0], TrainingPreparing)  # set-up progress comes first
    events = [e for e in events if not isinstance(e, TrainingPreparing)]
    assert isinstance(events[0], TrainingStarted) and isinstance(events[-1], TrainingFinished)
    started = events[0]
    assert started.device == "cpu" and started.world_size == 1
    assert started.n_train_patches == 4 * 2 * 4  # 4 training sequences, 2 frames, 4 patches
    reports = [e for e in events if isinstance(e, IterationDone)]
    # Reports every 3 iterations plus at each validation (4, 8) and at the end.
    assert [e.iteration for e in reports] == [3, 4, 6, 8, 9, 12]
    assert all(0 <= e.data_wait_share <= 1 and e.eta_s >= 0 for e in reports)
    validations = [e for e in events if isinstance(e, ValidationDone)]
    assert [e.iteration for e in validations] == [4, 8, 12]
    assert all(0 < e.val_ssim <= 1 for e in validations)
    saved = [(e.kind, e.iteration) for e in events if isinstance(e, CheckpointSaved)]
    assert saved.count(("last", 12)) == 1 and ("best", 4) in saved
    result = events[-1].result
    assert result.iterations == 12 and not result.stopped_by_request
    assert result.best_val_loss == min(e.val_loss for e in validations)
    assert result.best_checkpoint == tmp_path / "best.pt"

    raw = torch.load(tmp_path / "last.pt", weights_only=True)  # plain types and tensors only
    assert raw["config"] == config.to_dict() and raw["iteration"] == 12
    assert raw["history"]["val_loss"] == [e.val_loss for e in validations]
    assert len(raw["split"]["train"]) == 4 and len(raw["split"]["val"]) == 1
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["iteration"] == result.best_iteration
    model, stats = load_model(tmp_path / "last.pt")
    for key, value in result.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
    assert stats == result.normalisation


def test_stop_request_leaves_a_loadable_checkpoint(tmp_path):
    config = tiny_config(iterations=50, val_every=20, out_dir=str(tmp_path))

    def stop_at_five(event):
        return not (isinstance(event, IterationDone) and event.iteration == 5)

    result = train(config, data=recorded_pairs(), callback=stop_at_five)
    assert result.stopped_by_request and result.iterations == 5
    assert result.best_checkpoint is None  # no validation happened yet
    checkpoint = load_checkpoint(tmp_path / "last.pt")
    assert checkpoint["iteration"] == 5 and checkpoint["kind"] == "last"
    model, _ = load_model(checkpoint)
    assert isinstance(model, nn.Module)


def test_closing_the_generator_keeps_a_checkpoint(tmp_path):
    events = iter_train(tiny_config(iterations=50, out_dir=str(tmp_path)), data=recorded_pairs())
    for event in events:
        if isinstance(event, IterationDone) and event.iteration == 3:
            break
    events.close()
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 3


def test_stopped_and_resumed_run_continues_exactly(tmp_path):
    options = {
        "iterations": 12,
        "val_every": 4,
        "schedule": "cosine",
        "augment_flips": True,
        "augment_rot90": True,
        "fresh_noise_per_epoch": True,
    }
    straight = train(tiny_config(**options, out_dir=str(tmp_path / "a")), data=simulated_pairs())

    def stop_at_six(event):
        return not (isinstance(event, IterationDone) and event.iteration == 6)

    stopped_config = tiny_config(**options, out_dir=str(tmp_path / "b"))
    stopped = train(stopped_config, data=simulated_pairs(), callback=stop_at_six)
    assert stopped.iterations == 6
    resumed = train(
        stopped_config.replace(resume=str(tmp_path / "b" / "last.pt")), data=simulated_pairs()
    )
    assert resumed.iterations == 12
    # Same next loss, same curve, same weights as the uninterrupted run.
    assert resumed.history.train_loss[6] == pytest.approx(straight.history.train_loss[6], rel=1e-6)
    np.testing.assert_allclose(resumed.history.train_loss, straight.history.train_loss, rtol=1e-6)
    np.testing.assert_allclose(resumed.history.val_loss, straight.history.val_loss, rtol=1e-6)
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=1e-6, atol=1e-7)


def test_resume_refuses_a_different_network(tmp_path):
    config = tiny_config(iterations=2, val_every=2, out_dir=str(tmp_path))
    train(config, data=recorded_pairs())
    other = config.replace(hparams={**TINY_FSRCNN, "features": 6}, resume=str(tmp_path / "last.pt"))
    with pytest.raises(ValueError, match="settings differ from the checkpoint's: hparams"):
        train(other, data=recorded_pairs())


def test_rim_patches_join_training_when_min_inside_allows_them():
    from napari_pclesr.train import TrainingStarted, iter_train

    def started(config):
        events = iter_train(config.replace(iterations=1), data=simulated_pairs())
        event = next(e for e in events if isinstance(e, TrainingStarted))
        events.close()
        return event

    inside, rim = started(tiny_config()), started(tiny_config(min_inside=0.3))
    assert (inside.n_train_patches, inside.n_val_patches) == (32, 8)  # 4 patches per frame
    assert rim.n_train_patches > 2 * inside.n_train_patches  # the 16x16 grid reaches the rim


def test_fresh_noise_changes_the_training_lr_after_the_first_epoch():
    # An epoch is 4 iterations; only later epochs see new noise.
    base = tiny_config(iterations=8, val_every=8)
    once = train(base, data=simulated_pairs()).history.train_loss
    fresh = train(base.replace(fresh_noise_per_epoch=True), data=simulated_pairs())
    np.testing.assert_allclose(fresh.history.train_loss[:4], once[:4], rtol=1e-6)
    assert not np.allclose(fresh.history.train_loss[4:], once[4:], rtol=1e-6)


class Frozen(nn.Module):
    """Its output does not depend on its (single) weight, so the loss never improves."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x + 0 * self.weight


def test_early_stopping_after_patience_validations_without_improvement():
    config = tiny_config(model=None, hparams={}, iterations=100, val_every=2, patience=2)
    result = train(config, model=Frozen(), data=recorded_pairs())
    assert result.stopped_early and result.iterations == 6  # best at 2, no gain at 4 and 6
    assert result.best_iteration == 2
    assert result.history.val_iteration == [2, 4, 6]


# -- command line -------------------------------------------------------------------------------

TINY_ARGS = ["--model", "fsrcnn", "--hparam", "features=8", "--hparam", "shrink_features=4"]
TINY_ARGS += ["--hparam", "mapping_layers=1", "--device", "cpu", "--batch-size", "4"]


def write_pair_folder(folder, frames=5):
    """``folder/hr/*.tif`` and ``folder/lr/*.tif``: the recorded pairs as ``--data`` wants."""
    import tifffile

    pairs = recorded_pairs(frames=frames)
    for kind in ("hr", "lr"):
        (folder / kind).mkdir(parents=True)
    for index, name in enumerate(pairs.names):
        tifffile.imwrite(folder / "hr" / f"{name}.tif", pairs.hr(index))
        tifffile.imwrite(folder / "lr" / f"{name}.tif", pairs.lr(index))
    return folder


def test_cli_trains_on_a_folder_and_resumes(tmp_path, capsys):
    from napari_pclesr.cli import main

    write_pair_folder(tmp_path / "data")
    out = tmp_path / "run"
    common = [*TINY_ARGS, "--loss", "l1", "--data", str(tmp_path / "data"), "--out", str(out)]
    common += ["--patch-size", "16", "--val-every", "3", "--log-every", "1"]
    assert main(["train", *common, "--iters", "6"]) == 0
    err = capsys.readouterr().err
    assert "6/6" in err and "val loss" in err and "done: 6 iterations" in err
    assert load_checkpoint(out / "last.pt")["config"]["data"] == str(tmp_path / "data")
    assert main(["train", *common, "--iters", "8", "--resume", str(out / "last.pt")]) == 0
    assert "iterations 6 -> 8" in capsys.readouterr().err
    assert load_checkpoint(out / "last.pt")["iteration"] == 8


def test_cli_trains_on_the_sample_data(tmp_path, capsys):
    from napari_pclesr.cli import main

    argv = ["train", *TINY_ARGS, "--data", "sample", "--iters", "2", "--patch-size", "32"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    assert "training fsrcnn" in capsys.readouterr().err
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "last.pt").is_file()


def test_data_options_reach_the_generated_data_and_the_checkpoint(tmp_path):
    from napari_pclesr.cli import main
    from napari_pclesr.train.paired_data import generated_data_options, load_training_data

    assert "blurred_share" in generated_data_options()["mixed"]
    assert "seed" not in generated_data_options()["sample"]
    data = load_training_data(tiny_config(data_options={"n_sequences": 3, "n_frames": 2}))
    assert len(data) == 3 and all(len(data.hr(i)) == 2 for i in range(3))
    argv = ["train", *TINY_ARGS, "--data", "sample", "--iters", "1", "--patch-size", "32"]
    options = ["--data-option", "n_sequences=3", "--data-option", "n_frames=2"]
    assert main([*argv, *options, "--out", str(tmp_path)]) == 0
    saved = load_checkpoint(tmp_path / "best.pt")["config"]
    assert saved["data_options"] == {"n_sequences": 3, "n_frames": 2}
    with pytest.raises(ValueError, match=r"cannot be built with the options n_sequences='many'"):
        load_training_data(tiny_config(data_options={"n_sequences": "many"}))
    # The cycle objective builds the same data with the same options.
    from napari_pclesr.train.fibre_data import load_cycle_data

    options = {"n_sequences": 3, "n_frames": 2}
    cycle = tiny_config(objective="cycle", data="sample", data_options=options)
    assert len(load_cycle_data(cycle)) == 3


def test_cli_reports_a_bad_setting_in_one_line(tmp_path, capsys):
    from napari_pclesr.cli import main

    assert main(["train", "--model", "nope", "--out", str(tmp_path)]) == 2
    assert "pclesr train: error: unknown model 'nope'" in capsys.readouterr().err
    assert main(["train", *TINY_ARGS, "--hparam", "blocks", "--out", str(tmp_path)]) == 2
    assert "--hparam needs KEY=VALUE" in capsys.readouterr().err


def test_hparam_values_are_parsed_as_json_or_text():
    from napari_pclesr.cli.train import parse_hparams

    assert parse_hparams(["blocks=8", "res_scale=0.1", "act=relu", "flag=true"]) == {
        "blocks": 8,
        "res_scale": 0.1,
        "act": "relu",
        "flag": True,
    }


def test_folder_without_lr_simulates_through_the_given_layout(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    from napari_pclesr import FibreLayout, Simulator
    from napari_pclesr.train import load_training_data

    (tmp_path / "hr").mkdir()
    for seed in range(3):
        tifffile.imwrite(tmp_path / "hr" / f"s{seed}.tif", smooth_stack(5, (40, 40), seed))
    layout = FibreLayout.synthetic((40, 40), n_fibres=400, seed=3)
    layout.save(tmp_path / "layout.npz")
    config = tiny_config(data=str(tmp_path), layout=str(tmp_path / "layout.npz"))
    data = load_training_data(config)
    assert data.simulated and data.names == ("s0", "s1", "s2")
    np.testing.assert_array_equal(data.fov_mask(0), Simulator(layout).fov_mask)
    with pytest.raises(ValueError, match="--layout applies to folder data"):
        load_training_data(config.replace(data="sample"))


def test_training_at_scale_two_gives_a_checkpoint_that_doubles_the_size(tmp_path):
    from napari_pclesr.infer import super_resolve

    hr = [smooth_stack(2, (64, 64), seed) for seed in range(3)]
    lr = [s.reshape(2, 32, 2, 32, 2).mean(axis=(2, 4)) for s in hr]
    data = PairedSequences(hr, lr, scale=2)
    config = tiny_config(scale=2, iterations=2, val_every=2, out_dir=str(tmp_path))
    result = train(config, data=data)
    assert result.model.scale == 2
    sr = super_resolve(lr[0], tmp_path / "best.pt", device="cpu")
    assert sr.shape == (2, 64, 64)


def test_loss_aliases_are_normalised_in_the_config():
    assert tiny_config(loss="Mix").loss == "ssim+l1"
