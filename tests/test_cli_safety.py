"""The command line loses nothing and says what went wrong: no output over an input, cheap
checks before any work, one-line errors (a traceback only with --debug), exit statuses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_pclesr import FibreLayout
from napari_pclesr.cli import describe_error, main
from napari_pclesr.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_STATUSES,
    EXIT_TERMINATED,
)
from napari_pclesr.cli.demo import MARKER, claim_folder
from napari_pclesr.data import phantom

CLI = [sys.executable, "-c", "import sys; from napari_pclesr.cli import main; sys.exit(main())"]


@pytest.fixture
def hr_file(tmp_path):
    path = tmp_path / "hr.tif"
    tifffile.imwrite(path, phantom((48, 48), seed=0).astype(np.float32))
    return path


def simulate(hr_file, *options):
    return main(["simulate", str(hr_file), "--seed", "0", "--n-fibres", "300", *options])


# -- no output over an input --------------------------------------------------------------------


def test_simulate_never_writes_over_its_inputs(hr_file, tmp_path, capsys):
    before = hr_file.read_bytes()
    assert simulate(hr_file, "--out", str(hr_file)) == EXIT_BAD_INPUT
    assert "refusing to write" in capsys.readouterr().err
    layout = FibreLayout.synthetic((48, 48), 300, seed=0).save(tmp_path / "layout.csv")
    layout_bytes = layout.read_bytes()
    options = ["--layout", str(layout), "--out", str(tmp_path / "lr.tif")]
    assert simulate(hr_file, *options, "--save-layout", str(layout)) == EXIT_BAD_INPUT
    assert f"refusing to write {layout}" in capsys.readouterr().err
    assert simulate(hr_file, *options, "--save-layout", str(hr_file)) == EXIT_BAD_INPUT
    assert "--save-layout writes .csv" in capsys.readouterr().err  # and never a TIFF
    assert hr_file.read_bytes() == before and layout.read_bytes() == layout_bytes
    assert not (tmp_path / "lr.tif").exists()


def test_bad_cheap_arguments_fail_before_anything_is_written(hr_file, tmp_path, capsys):
    out = tmp_path / "lr.tif"
    assert simulate(hr_file, "--out", str(out), "--save-layout", str(tmp_path / "l.txt")) == 2
    assert "--save-layout writes .csv, .npy, .npz" in capsys.readouterr().err
    assert simulate(hr_file, "--out", str(tmp_path / "lr.png")) == 2
    assert simulate(hr_file, "--out", str(out), "--sigma-add", "nan") == 2
    assert "sigma_add must be a finite number" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hr.tif"]


def test_metrics_csv_and_convert_refuse_their_inputs(hr_file, tmp_path, capsys):
    sr, lr = tmp_path / "sr.tif", tmp_path / "lr.tif"
    tifffile.imwrite(sr, tifffile.imread(hr_file) * 0.9)
    tifffile.imwrite(lr, tifffile.imread(hr_file) * 0.8)
    before = sr.read_bytes()
    argv = ["metrics", "--sr", str(sr), "--hr", str(hr_file), "--lr", str(lr)]
    assert main([*argv, "--csv", str(sr)]) == EXIT_BAD_INPUT
    assert f"refusing to write {sr}" in capsys.readouterr().err and sr.read_bytes() == before
    assert main([*argv, "--csv", str(tmp_path / "absent" / "t.csv")]) == EXIT_BAD_INPUT
    assert "does not exist" in capsys.readouterr().err
    previous = os.umask(0o022)
    try:
        assert main([*argv, "--csv", str(tmp_path / "table.csv")]) == 0
    finally:
        os.umask(previous)
    assert (tmp_path / "table.csv").stat().st_mode & 0o777 == 0o644  # not 0600
    assert main(["convert", str(sr), str(sr)]) == EXIT_BAD_INPUT
    assert "refusing to write" in capsys.readouterr().err and sr.read_bytes() == before


def test_demo_keeps_files_it_did_not_write(tmp_path, capsys):
    (tmp_path / "hr.tif").write_bytes(b"my own data")
    assert main(["demo", "--out", str(tmp_path), "--iterations", "1"]) == EXIT_BAD_INPUT
    assert "already holds hr.tif, which pclesr demo did not write" in capsys.readouterr().err
    assert (tmp_path / "hr.tif").read_bytes() == b"my own data"
    assert not (tmp_path / MARKER).exists()
    # A folder of an earlier demo is the demo's to replace; a new folder is claimed.
    (tmp_path / MARKER).write_text("")
    claim_folder(tmp_path)
    claim_folder(tmp_path / "new")
    assert (tmp_path / "new" / MARKER).is_file()


# -- simulator: layouts and noise ---------------------------------------------------------------


def test_a_layout_for_another_grid_is_refused_or_rescaled_on_request(tmp_path, capsys):
    hr = tmp_path / "hr96.tif"
    tifffile.imwrite(hr, phantom((96, 96), seed=0).astype(np.float32))
    layout = FibreLayout.synthetic((48, 48), 500, seed=0).save(tmp_path / "layout48.csv")
    out = tmp_path / "lr.tif"
    argv = ["simulate", str(hr), "--layout", str(layout), "--seed", "0", "--out", str(out)]
    assert main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "layout is for a 48x48 grid, but the images are 96x96" in err
    assert "--rescale-layout" in err and not out.exists()
    assert main([*argv, "--rescale-layout"]) == 0
    covered = np.mean(tifffile.imread(out) != 0)
    # The bundle's circle covers about π/4 · 0.98² = 75 % of the frame, not a corner of it.
    assert 0.7 < covered < 0.8


def test_layout_rescaling_maps_grid_edges_onto_grid_edges():
    layout = FibreLayout([[-0.5, -0.5], [47.5, 47.5], [0, 47.5], [24, 10]], (48, 48))
    wider = layout.rescaled((96, 144))
    np.testing.assert_allclose(
        wider.positions, [[-0.5, -0.5], [95.5, 143.5], [0.5, 143.5], [48.5, 31.0]]
    )
    assert wider.shape == (96, 144)


def test_noise_that_overflows_is_refused_before_writing(hr_file, tmp_path, capsys):
    out = tmp_path / "lr.tif"
    with np.errstate(all="raise"):  # no overflow warning escapes either
        assert simulate(hr_file, "--out", str(out), "--sigma-add", "1e308") == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "sigma_add=1e+308 makes the simulated fibre signals overflow" in err
    assert not out.exists()


def test_a_layout_npz_with_a_scalar_shape_is_a_clear_error(hr_file, tmp_path, capsys):
    layout = FibreLayout.synthetic((48, 48), 300, seed=0)
    np.savez(tmp_path / "bad.npz", positions=layout.positions, shape=np.int64(48))
    argv = ["--layout", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "lr.tif")]
    assert simulate(hr_file, *argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "bad.npz" in err and "'shape' must be the grid's two sides (H, W), got 48" in err


def test_nan_in_an_input_file_is_reported_with_the_file_name(hr_file, tmp_path, capsys):
    stack = np.stack([tifffile.imread(hr_file)] * 2)
    stack[1, 5, 7] = np.nan
    bad = tmp_path / "data" / "hr" / "bad.tif"
    bad.parent.mkdir(parents=True)
    tifffile.imwrite(bad, stack)
    out = tmp_path / "out.tif"
    assert simulate(bad, "--out", str(out)) == EXIT_BAD_INPUT
    assert f"{bad} contains NaN" in capsys.readouterr().err
    metrics = ["metrics", "--hr", str(hr_file), "--lr", str(hr_file), "--sr", str(hr_file)]
    assert main([*metrics, "--sr", f"odd={bad}"]) == EXIT_BAD_INPUT
    assert f"{bad} contains NaN" in capsys.readouterr().err
    train = ["train", "--model", "fsrcnn", "--iters", "1", "--device", "cpu"]
    assert main([*train, "--data", str(tmp_path / "data"), "--out", str(out)]) == EXIT_BAD_INPUT
    assert f"{bad} contains NaN" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "hr.tif"]


# -- errors: one line, traceback with --debug, exit statuses ------------------------------------


def test_errors_print_one_line_and_debug_adds_the_traceback(tmp_path):
    argv = ["simulate", str(tmp_path / "absent.tif"), "--out", str(tmp_path / "lr.tif")]
    plain = subprocess.run([*CLI, *argv], capture_output=True, text=True)
    assert plain.returncode == EXIT_BAD_INPUT
    assert "Traceback" not in plain.stderr and "absent.tif" in plain.stderr
    assert len(plain.stderr.strip().splitlines()) == 1
    for debug_argv in (["--debug", *argv], [*argv, "--debug"]):
        debug = subprocess.run([*CLI, *debug_argv], capture_output=True, text=True)
        assert debug.returncode == EXIT_BAD_INPUT
        assert "Traceback" in debug.stderr and "absent.tif" in debug.stderr.splitlines()[-1]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            RuntimeError(
                "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                "allocate memory: you tried to allocate 104857600000 bytes. Error code 12"
            ),
            "out of memory: it needed 97.7 GiB more; use a smaller --batch-size",
        ),
        (
            type("OutOfMemoryError", (RuntimeError,), {})(
                "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.3 GiB total)"
            ),
            "out of memory: it needed 2.00 GiB more",
        ),
        (MemoryError(), "out of memory; use a smaller --batch-size"),
        (PermissionError(13, "Permission denied", "/data/a.tif"), "/data/a.tif: permission denied"),
        (OSError(28, "No space left on device", "/out/sr.tif"), "/out/sr.tif: no space left"),
        (FileNotFoundError("checkpoint run/best.pt does not exist."), "checkpoint run/best.pt"),
        (ValueError("lr must be > 0, got -1."), "lr must be > 0, got -1."),
        (RuntimeError("an internal bug"), None),
        (TypeError("an internal bug"), None),
    ],
)
def test_user_errors_are_described_and_bugs_are_not(error, expected):
    described = describe_error(error, "train")
    if expected is None:
        assert described is None
    else:
        assert described.startswith(expected)


def test_interrupt_and_sigterm_have_their_exit_statuses(hr_file, tmp_path, monkeypatch, capsys):
    from napari_pclesr.cli import simulate as command

    def interrupted(args):
        raise KeyboardInterrupt

    def terminated(args):
        os.kill(os.getpid(), signal.SIGTERM)  # the real signal, delivered to this process
        raise AssertionError("SIGTERM did not stop the command")

    argv = ["simulate", str(hr_file), "--out", str(tmp_path / "lr.tif")]
    monkeypatch.setattr(command, "run", interrupted)
    assert main(argv) == EXIT_INTERRUPTED
    monkeypatch.setattr(command, "run", terminated)
    assert main(argv) == EXIT_TERMINATED
    assert "terminated (SIGTERM)" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored after the command


def test_help_lists_the_exit_statuses(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for code, meaning in EXIT_STATUSES.items():
        assert f"{code:<4}{meaning}" in text
