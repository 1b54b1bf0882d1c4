"""The adversarial (SRGAN) and cycle (seed 001) objectives on the training loop, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from test_train import TINY_FSRCNN
from test_train import tiny_config as supervised_config

from napari_pclesr import FibreLayout, Simulator, models
from napari_pclesr.data import LRRecordings, PairedSequences, phantom_sequence
from napari_pclesr.infer import super_resolve
from napari_pclesr.train import (
    IterationDone,
    TrainConfig,
    TrainingPreparing,
    TrainingStarted,
    ValidationDone,
    iter_train,
    load_checkpoint,
    load_model,
    train,
)

TINY_SRGAN = {"blocks": 1, "features": 8}
TINY_D = {"features": 4, "dense": 16}


def smooth_stack(frames, shape, seed):
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random((frames, *shape)), (0, 1.5, 1.5)).astype(np.float32)


def simulated_pairs(n_sequences=6, frames=2, side=64):
    """Sequences of smooth HR with LR simulated through a synthetic bundle (layout known)."""
    return PairedSequences([smooth_stack(frames, (side, side), s) for s in range(n_sequences)])


def tiny_config(objective="cycle", **changes) -> TrainConfig:
    """The supervised tests' tiny settings, with a tiny SRGAN and discriminator."""
    gan = {"objective": objective, "model": "srgan", "hparams": TINY_SRGAN, "discriminator": TINY_D}
    return supervised_config(**{**gan, **changes})


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"objective": "wgan"}, "unknown objective 'wgan'"),
        ({"objective": "adversarial", "lr_data": "x.mkt"}, "lr_data .* needs objective='cycle'"),
        ({"lr_data": "x.mkt", "target_domain": "paired"}, "'paired' needs HR"),
        ({"target_domain": "unpaired"}, "'unpaired' needs target_data"),
        ({"target_domain": "imagenet"}, "unknown target_domain"),
        ({"gan_loss": "hinge"}, "unknown gan_loss"),
        ({"label_smoothing": 0.5}, r"label_smoothing must be in \[0, 0.5\)"),
        ({"d_steps": 0}, "d_steps must be a whole number >= 1"),
        ({"discriminator": {"depth": 3}}, "unknown discriminator hyper-parameter"),
        ({"fibres": 2}, "fibres must be a whole number >= 3"),
    ],
)
def test_bad_gan_settings_are_clear_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**{"objective": "cycle", **changes})


def test_objective_defaults_follow_srgan_and_seed_001():
    adversarial, cycle = tiny_config("adversarial"), tiny_config("cycle")
    assert adversarial.adversarial_weight == 1e-3 and adversarial.initial_noise == 0
    assert cycle.adversarial_weight == 1.0 and cycle.initial_noise == 0.1
    assert (cycle.vec_weight, cycle.reg_weight) == (1.0, 1.0)


# -- each objective end to end, resumed exactly -------------------------------------------------


def stop_at(iteration):
    return lambda event: not (isinstance(event, IterationDone) and event.iteration == iteration)


@pytest.mark.parametrize(
    ("objective", "changes"),
    [
        ("adversarial", {"pretrain_iterations": 2, "d_steps": 2}),
        ("adversarial", {"gan_loss": "ragan", "instance_noise": 0.2, "label_smoothing": 0.1}),
        ("cycle", {"target_domain": "natural", "pretrain_iterations": 2}),
        ("cycle", {"target_domain": "paired", "gan_loss": "ragan", "d_steps": 2}),
    ],
)
def test_objective_trains_saves_a_loadable_generator_and_resumes_exactly(
    tmp_path, objective, changes
):
    options = {
        "iterations": 12,
        "val_every": 4,
        "schedule": "cosine",
        "augment_flips": True,
        "augment_rot90": True,
        **changes,
    }
    straight = train(
        tiny_config(objective, **options, out_dir=str(tmp_path / "a")), data=simulated_pairs()
    )
    stopped_config = tiny_config(objective, **options, out_dir=str(tmp_path / "b"))
    stopped = train(stopped_config, data=simulated_pairs(), callback=stop_at(6))
    assert stopped.iterations == 6 and stopped.stopped_by_request
    resumed = train(
        stopped_config.replace(resume=str(tmp_path / "b" / "last.pt")), data=simulated_pairs()
    )
    assert resumed.iterations == 12
    for name, values in straight.history.terms.items():
        np.testing.assert_allclose(resumed.history.terms[name], values, rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(resumed.history.val_loss, straight.history.val_loss, rtol=1e-5)
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    checkpoint = load_checkpoint(tmp_path / "a" / "last.pt")
    assert checkpoint["objective"] == objective
    discriminator = checkpoint["resume"]["discriminator"]
    assert discriminator["hparams"]["features"] == 4 and discriminator["state_dict"]
    resumed_d = load_checkpoint(tmp_path / "b" / "last.pt")["resume"]["discriminator"]
    for key, value in discriminator["state_dict"].items():
        torch.testing.assert_close(resumed_d["state_dict"][key], value, rtol=1e-5, atol=1e-6)
    # The generator alone serves inference, as for a supervised checkpoint.
    model, _ = load_model(tmp_path / "a" / "best.pt")
    assert model.arch == "srgan"
    lr = simulated_pairs().lr(0)
    sr = super_resolve(lr, tmp_path / "a" / "best.pt", device="cpu")
    assert sr.shape == lr.shape and np.isfinite(sr).all()


@pytest.mark.parametrize("objective", ["adversarial", "cycle"])
def test_any_registry_network_is_the_generator(tmp_path, objective):
    config = tiny_config(objective, model="fsrcnn", hparams=TINY_FSRCNN, iterations=2)
    result = train(config.replace(val_every=2, out_dir=str(tmp_path)), data=simulated_pairs())
    assert np.isfinite(result.history.terms["adv"]).all()
    model, _ = load_model(tmp_path / "best.pt")
    assert model.arch == "fsrcnn"


def test_events_carry_every_term_and_the_discriminator_waits_for_pretraining():
    config = tiny_config("adversarial", iterations=6, pretrain_iterations=3, val_every=6)
    events = list(iter_train(config, data=simulated_pairs()))
    started = next(e for e in events if isinstance(e, TrainingStarted))
    assert started.objective == "adversarial"
    assert started.terms == ("g_loss", "content", "adv", "d_loss", "d_real_acc", "d_fake_acc")
    reports = [e for e in events if isinstance(e, IterationDone)]
    assert [sorted(e.terms) for e in reports[:3]] == [["content", "g_loss"]] * 3
    assert all(set(e.terms) == set(started.terms) for e in reports[3:])
    for event in reports:
        assert event.loss == event.terms["g_loss"]
        assert 0 <= event.terms.get("d_real_acc", 0) <= 1
    # Pre-training is content only, so the generator's loss is the content loss.
    assert all(e.terms["g_loss"] == pytest.approx(e.terms["content"]) for e in reports[:3])
    after = reports[3].terms
    assert after["g_loss"] == pytest.approx(after["content"] + 1e-3 * after["adv"], rel=1e-5)
    validation = next(e for e in events if isinstance(e, ValidationDone))
    assert set(validation.scores) == {"content", "ssim"}
    assert validation.val_loss == validation.scores["content"]


def test_the_discriminator_sees_nothing_outside_the_fov_of_rim_patches():
    # Pixels outside the FoV count in no loss: D must see them as 0 in real and fake patches
    # alike, in its updates (fresh pairs too) and in the generator's adversarial term.
    from napari_pclesr.train.distributed import DistributedContext
    from napari_pclesr.train.objectives import create_objective

    config = tiny_config("adversarial", min_inside=0.3, d_steps=2, augment_flips=True)
    objective = create_objective(config, DistributedContext(), torch.device("cpu"), None)
    for _ in objective.prepare(simulated_pairs(), None):
        pass
    objective.build(models.create("srgan", **TINY_SRGAN))
    fovs, seen = [], []
    next_batch = objective.data.next_batch

    def recorded_batch():
        batch = next_batch()
        fovs.append(batch[2])
        return batch

    objective.data.next_batch = recorded_batch
    objective.discriminator.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0]))
    objective.step(0)
    # The step's batch, then a fresh pair for the first of the two D updates; D runs on the
    # fresh pair, on the step's pair (real and fake in one batch), then on the step's fake.
    step_fov, fresh_fov = fovs
    assert (~step_fov).any() and (~fresh_fov).any()  # rim patches in both batches
    expected_outside = [~torch.cat([fresh_fov] * 2), ~torch.cat([step_fov] * 2), ~step_fov]
    assert [inputs.shape for inputs in seen] == [mask.shape for mask in expected_outside]
    for inputs, outside in zip(seen, expected_outside, strict=True):
        assert inputs[~outside].abs().sum() > 0 and not inputs[outside].any()


def test_preparation_events_come_first_and_at_once(tmp_path):
    config = tiny_config("cycle", data=str(tmp_path / "missing"))
    events = iter_train(config)
    start = time.perf_counter()
    first = next(events)
    assert isinstance(first, TrainingPreparing) and time.perf_counter() - start < 3
    seen = []
    with pytest.raises(FileNotFoundError, match="has no 'hr' sub-folder"):
        seen.extend(events)  # the data are read only after the first events
    assert seen and all(isinstance(e, TrainingPreparing) for e in seen)
    stages = [
        e.stage
        for e in iter_train(tiny_config("cycle", iterations=1), data=simulated_pairs())
        if isinstance(e, TrainingPreparing)
    ]
    for stage in ("loading data", "fibre layout", "fibre geometry"):
        assert stage in stages
    assert "simulating LR and reading fibre signals (training)" in stages
    assert "target-domain patches" in stages and stages[-1] == "building the networks"


def test_a_stop_during_set_up_ends_the_run_before_training(tmp_path):
    stop = threading.Event()
    config = tiny_config("cycle", out_dir=str(tmp_path / "run"))
    seen = []
    for event in iter_train(config, data=simulated_pairs(), stop_event=stop):
        seen.append(event)
        if isinstance(event, TrainingPreparing) and event.stage == "fibre layout":
            stop.set()
    assert all(isinstance(e, TrainingPreparing) for e in seen)
    assert not (tmp_path / "run").exists()
    stop.clear()
    assert train(config, data=simulated_pairs(), callback=lambda e: False) is None


def test_cycle_l_vec_falls_and_the_discriminator_learns_with_paired_targets():
    config = tiny_config(
        "cycle",
        target_domain="paired",
        iterations=200,
        lr=1e-4,  # seed 001's rate (1e-3 makes the tiny game oscillate)
        val_every=100,
        log_every=10,
        instance_noise=0.05,
        noise_anneal=100,
    )
    result = train(config, data=simulated_pairs())
    vec = np.array(result.history.terms["vec"])
    assert vec[-3:].mean() < 0.5 * vec[:2].mean()
    accuracy = (
        np.array(result.history.terms["d_real_acc"]) + np.array(result.history.terms["d_fake_acc"])
    ) / 2
    assert abs(accuracy[-5:].mean() - 0.5) > 0.1
    assert result.history.val_scores["vec"][-1] < result.history.val_scores["vec"][0]


def test_cycle_trains_from_lr_recordings_without_hr_and_picks_best_by_fidelity(tmp_path):
    layout = FibreLayout.synthetic((96, 96), n_fibres=700, seed=4)
    simulator = Simulator(layout)
    recordings = [
        simulator.simulate(phantom_sequence(3, (96, 96), seed=seed).frames, seed=seed)
        for seed in range(2)
    ]
    data = LRRecordings(recordings, [simulator.fov_mask] * 2, ["rec0", "rec1"])
    config = tiny_config(
        "cycle", fibres=700, iterations=4, val_every=2, out_dir=str(tmp_path), patch_size=24
    )
    events = list(iter_train(config, data=data))
    started = next(e for e in events if isinstance(e, TrainingStarted))
    assert started.score == "validation vec_weight * l_Vec + reg_weight * l_Reg"
    notes = [e.detail for e in events if isinstance(e, TrainingPreparing) and e.detail]
    assert any("700 fibres in the FoV disc, as given" in note for note in notes)
    validation = [e for e in events if isinstance(e, ValidationDone)][-1]
    assert np.isnan(validation.val_ssim) and "ssim" not in validation.scores
    assert validation.val_loss == pytest.approx(validation.scores["vec"] + validation.scores["reg"])
    assert validation.scores["delta_gcf"] == pytest.approx(
        validation.scores["gcf"] - validation.scores["gcf_lr"]
    )
    # The input itself is nearly consistent with its own fibres (exactly, but for the cells'
    # averaging of the interpolated LR): a reference far below an untrained network's l_Vec.
    assert validation.scores["vec_identity"] < 0.05 < validation.scores["vec"]
    checkpoint = load_checkpoint(tmp_path / "last.pt")
    # Two recordings: frames of each split in time (train first), never a recording's frames
    # in two parts at the same time.
    assert checkpoint["split"]["train"] == ["rec0 [train frames 0-0]", "rec1 [train frames 0-0]"]
    assert [note["n_fibres"] for note in checkpoint["fibre_layouts"]] == [
        pytest.approx(700, rel=0.05)
    ] * 2


def test_lr_recordings_split_by_recording_or_by_frame_blocks():
    stacks = [np.zeros((10, 8, 8), np.float32) + i for i in range(4)]
    masks = [np.ones((8, 8), bool)] * 4
    many = LRRecordings(stacks, masks, ["a", "b", "c", "d"])
    train_part, val_part, test_part = many.split((0.5, 0.25, 0.25), seed=0)
    assert sorted(train_part.names + val_part.names + test_part.names) == ["a", "b", "c", "d"]
    assert sorted(train_part.sources + val_part.sources + test_part.sources) == [0, 1, 2, 3]
    one = many.subset([2])
    train_part, val_part, test_part = one.split((0.7, 0.15, 0.15))
    assert [len(part.lr(0)) for part in (train_part, val_part, test_part)] == [8, 1, 1]
    assert train_part.sources == val_part.sources == (2,)
    np.testing.assert_array_equal(val_part.lr(0), stacks[2][8:9])
    with pytest.raises(ValueError, match="too few to split"):
        LRRecordings([np.zeros((2, 8, 8))], masks[:1], ["short"]).split()


def test_cycle_trains_from_the_real_mpeg_recording_without_hr(shared_dir, tmp_path):
    path = shared_dir / "data" / "pcle_colorectal_S01V01.mpeg"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    config = tiny_config(
        "cycle",
        lr_data=str(path),
        layout="auto",
        frame_step=26,
        iterations=2,
        val_every=2,
        batch_size=4,
        patch_size=24,
        out_dir=str(tmp_path),
    )
    events = list(iter_train(config))
    notes = [e.detail for e in events if isinstance(e, TrainingPreparing) and e.detail]
    assert any("no fibre pattern is measurable" in note for note in notes)
    result = events[-1].result
    assert result.iterations == 2 and np.isfinite(result.history.train_loss).all()
    assert np.isnan(result.history.val_ssim[-1])
    frame = np.asarray(LRRecordings.open(path, frame_step=100).lr(0))
    sr = super_resolve(frame, tmp_path / "best.pt", device="cpu")
    assert sr.shape == frame.shape


# -- command line -------------------------------------------------------------------------------

TINY_ARGS = ["--model", "srgan", "--hparam", "blocks=1", "--hparam", "features=8"]
TINY_ARGS += ["--disc-hparam", "features=4", "--disc-hparam", "dense=16", "--device", "cpu"]
TINY_ARGS += ["--batch-size", "4", "--iters", "2", "--val-every", "2", "--log-every", "1"]


def test_cli_trains_srgan_on_the_sample_data(tmp_path, capsys):
    from napari_pclesr.cli import main

    argv = ["train", "--objective", "adversarial", *TINY_ARGS, "--data", "sample"]
    assert main([*argv, "--patch-size", "32", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "objective adversarial" in err and "content" in err and "acc_real" in err
    assert load_checkpoint(tmp_path / "last.pt")["config"]["objective"] == "adversarial"


def test_cli_trains_the_cycle_gan_from_a_recording_with_layout_auto(tmp_path, capsys):
    tifffile = pytest.importorskip("tifffile")
    from napari_pclesr.cli import main

    layout = FibreLayout.synthetic((224, 224), n_fibres=4000, seed=0)
    recording = Simulator(layout).simulate(phantom_sequence(6, (224, 224), seed=1).frames, seed=1)
    tifffile.imwrite(tmp_path / "rec.tif", recording)
    argv = ["train", "--objective", "cycle", *TINY_ARGS, "--lr-data", str(tmp_path / "rec.tif")]
    argv += ["--layout", "auto", "--target-domain", "rescaled", "--patch-size", "16"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "measured from the recording" in err and "vec" in err and "delta_gcf" in err
    assert main([*argv, "--out", str(tmp_path / "run2"), "--objective", "supervised"]) == 2
    assert "needs objective='cycle'" in capsys.readouterr().err
    (tmp_path / "recordings").mkdir()
    (tmp_path / "rec.tif").rename(tmp_path / "recordings" / "rec.tif")
    argv[argv.index(str(tmp_path / "rec.tif"))] = str(tmp_path / "recordings")
    assert main([*argv, "--out", str(tmp_path / "recordings" / "run")]) == 2
    assert "lies inside the input" in capsys.readouterr().err


# -- DDP ----------------------------------------------------------------------------------------

DDP_SCRIPT = """
import json, os, sys

import numpy as np
import torch
from scipy import ndimage as ndi

from napari_pclesr.data.patches import PairedSequences
from napari_pclesr.train import TrainConfig, train

torch.set_num_threads(1)
out, rank = sys.argv[1], int(os.environ["RANK"])
rng = np.random.default_rng(0)
hr = [ndi.gaussian_filter(rng.random((2, 64, 64)), (0, 1.5, 1.5)) for _ in range(6)]
config = TrainConfig(
    objective="cycle", model="srgan", hparams={"blocks": 1, "features": 8},
    discriminator={"features": 4, "dense": 16}, iterations=4, batch_size=4, patch_size=16,
    val_every=2, log_every=1, device="cpu", out_dir=os.path.join(out, "run"),
)
result = train(config, data=PairedSequences([h.astype(np.float32) for h in hr]))
parameters = {k: v for k, v in result.model.named_parameters()}
torch.save(parameters, os.path.join(out, f"rank{rank}.pt"))
with open(os.path.join(out, f"rank{rank}.json"), "w") as handle:
    json.dump({"terms": result.history.terms, "val": result.history.val_loss}, handle)
"""


@pytest.mark.slow
def test_cycle_gan_trains_in_lockstep_on_two_processes(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("this torch build has no torch.distributed")
    script = tmp_path / "ddp_cycle.py"
    script.write_text(DDP_SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    command += ["--standalone", str(script), str(tmp_path)]
    finished = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=tmp_path,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert reports[0] == reports[1]  # terms and scores are reduced over the processes
    assert set(reports[0]["terms"]) == {"g_loss", "vec", "reg", "adv", "d_loss"} | {
        "d_real_acc",
        "d_fake_acc",
    }
    weights = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key
    checkpoint = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    ranks = checkpoint["resume"]["ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["noise"], ranks[1]["noise"])
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["best.pt", "last.pt"]


# -- cycle data ---------------------------------------------------------------------------------


def test_fibre_vectors_slot_maps_and_hr_patches_agree_batch_for_batch():
    # Without noise, V(I_LR) is an affine image of the HR's cell means in every frame, so the
    # HR patches pooled through their slot maps match V(I_LR) exactly once each vector is
    # scaled to [0, 1] on its own, flips and rotations included.
    from napari_pclesr.losses import fibre_vector_loss
    from napari_pclesr.simulate import pool_slots
    from napari_pclesr.train.distributed import DistributedContext
    from napari_pclesr.train.fibre_data import FibreTrainingData

    config = tiny_config(
        "cycle",
        target_domain="paired",
        sigma_mult=0.0,
        sigma_add=0.0,
        augment_flips=True,
        augment_rot90=True,
    )
    data = FibreTrainingData(config, DistributedContext(), torch.device("cpu"))
    for _ in data.prepare(simulated_pairs(), None):
        pass
    assert data.has_hr and data.k > 0
    for _ in range(3):
        _, slots, vectors, hr = data.next_batch()
        means, valid = pool_slots(hr, slots, data.k)
        assert valid.sum(1).min() > 0
        assert float(fibre_vector_loss(vectors, means, valid, "separate")) < 1e-8
        shuffled = pool_slots(hr.flip(0), slots, data.k)[0]
        assert float(fibre_vector_loss(vectors, shuffled, valid, "separate")) > 1e-3


def test_cycle_reads_the_layout_from_a_file_or_from_a_raw_bundle_frame(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    from test_fibre_layout import render_raw_frame

    truth = FibreLayout.synthetic((96, 96), n_fibres=700, seed=4)
    simulator = Simulator(truth)
    recordings = [
        simulator.simulate(phantom_sequence(3, (96, 96), seed=seed).frames, seed=seed)
        for seed in range(3)
    ]
    data = LRRecordings(recordings, [simulator.fov_mask] * 3, ["a", "b", "c"])
    truth.save(tmp_path / "bundle.npz")
    tifffile.imwrite(tmp_path / "raw.tif", render_raw_frame(truth, np.random.default_rng(0)))
    for layout, note in (("bundle.npz", "700 fibres from"), ("raw.tif", "fibre cores detected")):
        config = tiny_config("cycle", layout=str(tmp_path / layout), iterations=1, val_every=1)
        events = list(iter_train(config, data=data))
        notes = [
            e.detail
            for e in events
            if isinstance(e, TrainingPreparing) and e.stage == "fibre layout" and e.detail
        ]
        assert len(notes) == 3 and all(note in n for n in notes)
    with pytest.raises(ValueError, match="is for 96x96 frames but"):
        other = LRRecordings(
            [r[:, :64, :64] for r in recordings],
            [m[:64, :64] for m in [simulator.fov_mask] * 3],
            ["a", "b", "c"],
        )
        list(iter_train(config.replace(layout=str(tmp_path / "bundle.npz")), data=other))


def test_target_domain_patches(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    from skimage import io

    from napari_pclesr.data import target_domains

    bundled = target_domains.natural_patches(32)
    assert bundled.shape[1:] == (32, 32) and len(bundled) > 500
    assert np.isfinite(bundled).all() and 0.3 < bundled.mean() < 0.7  # about the [0, 1] map
    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(0)
    io.imsave(tmp_path / "images" / "a.png", (rng.random((40, 70, 3)) * 255).astype(np.uint8))
    folder = target_domains.natural_patches(16, tmp_path / "images")
    assert folder.shape == (2 * 4, 16, 16)  # a centred 2 × 4 grid
    (tmp_path / "mosaic" / "hr").mkdir(parents=True)
    stack = np.zeros((3, 48, 48), np.float32)
    stack[:, :32, :32] = 100 + rng.random((3, 32, 32))  # the FoV: the nonzero square
    tifffile.imwrite(tmp_path / "mosaic" / "hr" / "s1.tif", stack, photometric="minisblack")
    unpaired = target_domains.unpaired_patches(16, tmp_path / "mosaic")
    assert unpaired.shape == (3 * 4, 16, 16)
    # Each frame by its own 1st and 99th percentiles inside its FoV, as the training LR.
    inside = stack[0, :32, :32]
    low, high = np.percentile(inside, [1, 99])
    np.testing.assert_allclose(unpaired[0], (inside[:16, :16] - low) / (high - low), atol=1e-5)
    with pytest.raises(ValueError, match=r"no \.tif/\.tiff file"):
        target_domains.unpaired_patches(16, tmp_path / "images")
    frames = rng.random((2, 64, 64)).astype(np.float32)
    rescaled = target_domains.rescaled_patches([frames], [np.ones((64, 64), bool)], 8)
    assert rescaled.shape == (2 * 4, 8, 8)
    small = frames[0].reshape(16, 4, 16, 4).mean(axis=(1, 3))
    low, high = np.percentile(small, [1, 99])
    np.testing.assert_allclose(rescaled[0], (small[:8, :8] - low) / (high - low), atol=1e-5)
