"""``pclesr mosaic`` end to end, and training on the pairs it writes."""

import json

import numpy as np
import pytest

from napari_pclesr import FibreLayout, Simulator
from napari_pclesr.cli import main
from napari_pclesr.data import phantom_sequence
from napari_pclesr.fibre import fibre_count_for
from napari_pclesr.io import read_sequence, write_image
from napari_pclesr.registration import Registration

SIZE = 128
TINY_TRAINING = ["--model", "fsrcnn", "--hparam", "features=8", "--hparam", "shrink_features=4"]
TINY_TRAINING += ["--hparam", "mapping_layers=1", "--device", "cpu", "--batch-size", "4"]


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A small simulated recording (LR through one bundle) with a dark frame, as a TIFF."""
    truth = phantom_sequence(16, (SIZE, SIZE), seed=5, speed=3.0)
    simulator = Simulator(
        FibreLayout.synthetic((SIZE, SIZE), fibre_count_for((SIZE, SIZE)), seed=0)
    )
    hr = truth.frames.copy()
    hr[9] = 0.01
    lr = simulator.simulate(hr, seed=0)
    path = tmp_path_factory.mktemp("recording") / "sequence.tif"
    write_image(path, lr, frame_rate=12.0)
    return path, lr, simulator.fov_mask


def test_mosaic_writes_mosaic_hr_hat_report_and_pairs_that_train_accepts(
    recording, tmp_path, capsys
):
    path, lr, _ = recording
    out = {name: tmp_path / name for name in ("m.tif", "h.tif", "report.json")}
    pairs = tmp_path / "pairs"
    argv = [
        "mosaic",
        str(path),
        "--out-mosaic",
        str(out["m.tif"]),
        "--out-hrhat",
        str(out["h.tif"]),
    ]
    argv += ["--report", str(out["report.json"]), "--pairs", str(pairs), "--clip-frames", "4"]
    assert main([*argv, "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "registered 16 frames" in captured.out and "15 kept" in captured.out
    assert "register [" in captured.err and "16/16 frames" in captured.err  # the progress bar

    registration = Registration.load(out["report.json"])
    assert registration.rejected.tolist() == [i == 9 for i in range(16)]
    report = json.loads(out["report.json"].read_text())
    assert report["input"] == str(path) and len(report["mosaics"]) == 1
    mosaic, _ = read_sequence(out["m.tif"])
    assert tuple(mosaic.shape[1:]) == tuple(report["mosaics"][0]["shape"])
    hr_hat, meta = read_sequence(out["h.tif"])
    hr_hat = np.asarray(hr_hat[:])
    assert hr_hat.shape == lr.shape and meta["frame_rate"] == 12.0
    assert np.isnan(hr_hat[9]).all() and np.isfinite(np.delete(hr_hat, 9, axis=0)).all()

    # 15 kept frames in clips of 4: 4 + 4 + 7 (a short last clip joins the one before).
    names = sorted(p.name for p in (pairs / "hr").iterdir())
    assert names == sorted(p.name for p in (pairs / "lr").iterdir())
    assert names == [f"sequence_s00_c{i:02d}.tif" for i in range(3)]
    lr_pair, _ = read_sequence(pairs / "lr" / names[0])
    hr_pair, _ = read_sequence(pairs / "hr" / names[0])
    # The LR keeps the FoV only (training recovers the FoV from the nonzero pixels).
    np.testing.assert_array_equal(
        np.asarray(lr_pair[:]), np.where(registration.fov_mask, lr[:4], 0)
    )
    np.testing.assert_allclose(np.asarray(hr_pair[:]), hr_hat[:4])

    run = tmp_path / "run"
    train = ["train", *TINY_TRAINING, "--data", str(pairs), "--out", str(run), "--iters", "2"]
    assert main([*train, "--patch-size", "32", "--val-every", "2"]) == 0
    err = capsys.readouterr().err
    assert "done: 2 iterations" in err
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()


def test_mosaic_with_the_affine_model_and_a_frame_range(recording, tmp_path, capsys):
    path, _, _ = recording
    report = tmp_path / "report.json"
    argv = ["mosaic", str(path), "--report", str(report), "--model", "affine", "--frames", "0:8"]
    assert main([*argv, "--no-progress", "--device", "cpu"]) == 0
    assert capsys.readouterr().err == ""
    registration = Registration.load(report)
    assert registration.n_frames == 8 and registration.transforms.shape == (8, 2, 3)
    assert json.loads(report.read_text())["input_frames"] == [0, 8, 1]


def test_mosaic_refuses_bad_requests_and_writes_nothing(recording, tmp_path, capsys):
    path, _, _ = recording
    assert main(["mosaic", str(path)]) == 2
    assert "nothing to write" in capsys.readouterr().err
    assert main(["mosaic", str(path), "--out-hrhat", str(path)]) == 2
    assert "refusing to write" in capsys.readouterr().err
    assert main(["mosaic", str(path), "--out-mosaic", str(tmp_path / "m.png")]) == 2
    assert "use a .tif suffix" in capsys.readouterr().err
    assert main(["mosaic", str(path), "--report", str(tmp_path / "r.json"), "--gaps", "x"]) == 2
    assert "--gaps must be" in capsys.readouterr().err
    assert main(["mosaic", str(path), "--pairs", str(tmp_path), "--method", "fibre"]) == 2
    assert "needs the fibre positions" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_mosaic_never_overwrites_earlier_training_pairs(recording, tmp_path, capsys):
    path, _, _ = recording
    argv = ["mosaic", str(path), "--pairs", str(tmp_path), "--no-progress", "--device", "cpu"]
    assert main(argv) == 0
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.tif")}
    # 15 kept frames make one clip of 32: too few sequences for pclesr train's split.
    assert len(before) == 2
    assert "holds 1 training sequence(s)" in capsys.readouterr().err
    assert main(argv) == 2
    assert "exist already" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.tif")} == before


def test_mosaic_refuses_outputs_of_an_earlier_run_unless_told_to_overwrite(
    recording, tmp_path, capsys
):
    path, _, _ = recording
    report, hr_hat = tmp_path / "report.json", tmp_path / "h.tif"
    argv = ["mosaic", str(path), "--report", str(report), "--out-hrhat", str(hr_hat)]
    argv += ["--frames", "0:6", "--no-progress", "--device", "cpu"]
    hr_hat.write_bytes(b"an earlier run")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{hr_hat} already exists; use --overwrite" in err
    assert hr_hat.read_bytes() == b"an earlier run" and not report.exists()
    missing = tmp_path / "missing" / "m.tif"
    assert main([*argv, "--overwrite", "--out-mosaic", str(missing)]) == 2
    assert "the folder" in capsys.readouterr().err and not report.exists()
    assert main([*argv, "--overwrite"]) == 0
    assert Registration.load(report).n_frames == 6
    assert read_sequence(hr_hat)[0].shape == (6, SIZE, SIZE)


def test_a_sequence_with_nothing_to_fuse_fails_after_writing_its_report(tmp_path, capsys):
    from napari_pclesr.data import phantom

    frames = np.stack([phantom((96, 96), kind="oesophagus", seed=seed) for seed in range(4)])
    write_image(tmp_path / "jumps.tif", frames)
    report = tmp_path / "report.json"
    argv = ["mosaic", str(tmp_path / "jumps.tif"), "--report", str(report)]
    assert main([*argv, "--out-mosaic", str(tmp_path / "m.tif"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "warning: no frame of the 4 overlaps" in err and "every frame" in err
    assert "Traceback" not in err
    assert Registration.load(report).rejected.all()
    assert not (tmp_path / "m.tif").exists()
