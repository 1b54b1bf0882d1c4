"""Training never loses a run or saves wrong weights: existing runs, divergence, oversized
batches, stop signals and a missing rendezvous."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from test_train import TINY_ARGS, recorded_pairs, tiny_config, write_pair_folder
from torch import nn

from napari_pclesr.cli import main
from napari_pclesr.cli._common import EXIT_BAD_INPUT, EXIT_STOPPED
from napari_pclesr.train import (
    IterationDone,
    TrainingDivergedError,
    load_checkpoint,
    train,
)

CLI = [sys.executable, "-c", "import sys; from napari_pclesr.cli import main; sys.exit(main())"]


def train_quietly(config, **kwargs):
    return train(config, data=recorded_pairs(), **kwargs)


# -- an existing run is kept --------------------------------------------------------------------


def test_a_folder_with_a_run_is_refused_unless_resumed_or_overwritten(tmp_path):
    config = tiny_config(iterations=4, val_every=4, out_dir=str(tmp_path))
    train_quietly(config)
    before = {name: (tmp_path / name).read_bytes() for name in ("best.pt", "last.pt")}
    with pytest.raises(FileExistsError, match="already holds a training run") as info:
        train_quietly(config.replace(iterations=2, val_every=2))
    message = str(info.value)
    assert "best.pt at iteration 4" in message and "--resume" in message
    assert "--overwrite" in message
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    # Continuing the run in the folder is allowed.
    resumed = train_quietly(config.replace(iterations=6, resume=str(tmp_path / "last.pt")))
    assert resumed.iterations == 6


def test_overwrite_replaces_the_whole_earlier_run(tmp_path):
    train_quietly(tiny_config(iterations=4, val_every=4, out_dir=str(tmp_path)))

    def stop_at_two(event):
        return not (isinstance(event, IterationDone) and event.iteration == 2)

    config = tiny_config(iterations=8, val_every=4, out_dir=str(tmp_path), overwrite=True)
    result = train_quietly(config, callback=stop_at_two)
    assert result.stopped_by_request
    # The old best.pt (iteration 4) must not pose as this run's best.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 2


def test_cli_refuses_an_earlier_run_and_an_output_inside_the_data(tmp_path, capsys):
    data = write_pair_folder(tmp_path / "data", frames=2)
    out = tmp_path / "run"
    common = ["train", *TINY_ARGS, "--loss", "l1", "--data", str(data), "--patch-size", "16"]
    common += ["--iters", "2", "--val-every", "2"]
    assert main([*common, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main([*common, "--out", str(out)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"{out} already holds a training run" in err and "--overwrite" in err
    assert main([*common, "--out", str(out), "--overwrite"]) == 0
    assert main([*common, "--out", str(data / "hr")]) == EXIT_BAD_INPUT
    assert "lies inside the input" in capsys.readouterr().err
    assert not (data / "hr" / "best.pt").exists()


# -- divergence ---------------------------------------------------------------------------------


class BlowsUp(nn.Module):
    """A one-layer network whose training output is NaN from its ``at``-th training step on."""

    scale = 1

    def __init__(self, at: int):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.at, self.steps = at, 0

    def forward(self, x):
        self.steps += self.training
        output = self.conv(x)
        return output * float("nan") if self.training and self.steps >= self.at else output


class PoisonsItsWeights(BlowsUp):
    """Finite outputs, but the ``at``-th training step has an infinite gradient, so the
    optimiser turns the weights into NaN after a finite loss."""

    def forward(self, x):
        self.steps += self.training
        output = self.conv(x)
        if self.training and self.steps == self.at:
            weight = self.conv.weight
            output = output + torch.sqrt(weight - weight.detach()).sum()  # 0, gradient ∞
        return output


def custom_config(tmp_path, **changes):
    settings = {"model": None, "hparams": {}, "iterations": 20, "val_every": 4, "log_every": 3}
    return tiny_config(**{**settings, "out_dir": str(tmp_path), **changes})


def assert_checkpoints_from(tmp_path, iteration):
    for name in ("best.pt", "last.pt"):
        checkpoint = load_checkpoint(tmp_path / name)  # refuses non-finite weights
        assert checkpoint["iteration"] == iteration, name


def test_a_non_finite_loss_stops_training_and_keeps_the_finite_checkpoints(tmp_path):
    with pytest.raises(TrainingDivergedError) as info:
        train_quietly(custom_config(tmp_path), model=BlowsUp(at=6))
    # Reports at 3, 4 and 6: the window 5-6 holds the first NaN, at iteration 6.
    assert info.value.iteration == 6
    message = str(info.value)
    assert "loss became NaN or infinite at iteration 6" in message
    assert "lower learning rate" in message and str(tmp_path / "last.pt") in message
    assert_checkpoints_from(tmp_path, 4)


@pytest.mark.parametrize(
    ("stop_at", "what"), [(6, "weights became"), (None, "validation loss became")]
)
def test_non_finite_weights_are_never_saved(tmp_path, stop_at, what):
    def stop(event):
        return not (isinstance(event, IterationDone) and event.iteration == stop_at)

    config = custom_config(tmp_path, log_every=1)
    at = 6 if stop_at else 8  # with no stop, the NaN weights meet the validation at 8
    with pytest.raises(TrainingDivergedError, match=f"{what} NaN or infinite at iteration {at}"):
        train_quietly(config, model=PoisonsItsWeights(at=at), callback=stop)
    assert_checkpoints_from(tmp_path, 4)


def test_cli_reports_divergence_with_the_iteration_and_advice(tmp_path, capsys):
    data = write_pair_folder(tmp_path / "data", frames=2)
    out = tmp_path / "run"
    argv = ["train", *TINY_ARGS, "--loss", "l1", "--data", str(data), "--patch-size", "16"]
    argv += ["--lr", "1e6", "--iters", "50", "--val-every", "50", "--out", str(out)]
    assert main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "pclesr train: error: training diverged" in err and "Traceback" not in err
    assert "at iteration" in err and "--lr 100000" in err
    for name in ("best.pt", "last.pt"):
        if (out / name).exists():
            load_checkpoint(out / name)  # whatever was written holds finite weights


# -- oversized batches --------------------------------------------------------------------------


def test_a_batch_that_cannot_fit_fails_before_the_data_are_read(tmp_path, capsys):
    absent = tmp_path / "no-such-data"  # reading it would fail: the batch check comes first
    argv = ["train", "--model", "edsr", "--device", "cpu", "--batch-size", "100000"]
    start = time.perf_counter()
    assert main([*argv, "--data", str(absent), "--out", str(tmp_path / "run")]) == 2
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert "batch size 100000 does not fit in memory" in err and "Use a batch size of" in err
    assert not (tmp_path / "run").exists()
    assert elapsed < 60  # was a RuntimeError after 26 s at 6.8 GB; here mostly imports
    with pytest.raises(ValueError, match="does not fit in memory"):
        train(tiny_config(model="edsr", hparams={}, batch_size=10**9), data=recorded_pairs())


# -- stop signals (real processes) --------------------------------------------------------------


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_saves_last_and_exits_with_the_stopped_status(tmp_path, signal_number):
    data = write_pair_folder(tmp_path / "data", frames=2)
    out, log = tmp_path / "run", tmp_path / "stderr.txt"
    argv = ["train", *TINY_ARGS, "--loss", "l1", "--data", str(data), "--patch-size", "16"]
    argv += ["--iters", "1000000", "--val-every", "1000000", "--out", str(out)]
    with open(log, "w") as stderr:
        process = subprocess.Popen([*CLI, *argv], stderr=stderr, env=_one_thread())
        try:
            _wait_for(log, "] 1", process)  # the progress bar after the first report
            process.send_signal(signal_number)
            status = process.wait(timeout=120)
        finally:
            process.kill()
            process.wait()
    err = log.read_text()
    assert status == EXIT_STOPPED, err[-2000:]
    assert "stopping after this iteration" in err and "stopped on request" in err
    assert "Traceback" not in err
    checkpoint = load_checkpoint(out / "last.pt")
    assert checkpoint["kind"] == "last" and 1 <= checkpoint["iteration"] < 1000000
    assert sorted(p.name for p in out.iterdir()) == ["last.pt"]  # no temporary file left


# -- distributed variables without torchrun -----------------------------------------------------


def test_distributed_variables_without_a_rendezvous_fail_quickly_with_advice(tmp_path):
    argv = ["train", *TINY_ARGS, "--data", "sample", "--out", str(tmp_path / "run")]
    environment = {**_one_thread(), "WORLD_SIZE": "2", "RANK": "0"}
    environment["PCLESR_RENDEZVOUS_TIMEOUT"] = "2"
    environment.pop("MASTER_ADDR", None)
    missing = subprocess.run([*CLI, *argv], capture_output=True, text=True, env=environment)
    assert missing.returncode == EXIT_BAD_INPUT
    assert "MASTER_ADDR" in missing.stderr and "torchrun" in missing.stderr
    environment.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    start = time.perf_counter()
    alone = subprocess.run(
        [*CLI, *argv], capture_output=True, text=True, env=environment, timeout=120
    )
    elapsed = time.perf_counter() - start
    assert alone.returncode == EXIT_BAD_INPUT, alone.stderr[-2000:]
    assert "did not all meet at 127.0.0.1" in alone.stderr and "within 2 s" in alone.stderr
    assert "unset WORLD_SIZE and RANK" in alone.stderr and "Traceback" not in alone.stderr
    assert elapsed < 60
    assert not (tmp_path / "run").exists()


def _one_thread() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(log, text: str, process, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"training did not start: {log.read_text()[-2000:]}")
        time.sleep(0.2)
