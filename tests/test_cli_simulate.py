"""``pclesr simulate`` and ``pclesr demo`` through the real entry point."""

import csv
import os

import numpy as np
import tifffile

from napari_pclesr import FibreLayout
from napari_pclesr.cli import main
from napari_pclesr.data import phantom


def test_simulate_writes_float32_lr_and_the_layout(tmp_path, capsys):
    hr = (phantom((64, 72), seed=0) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "hr.tif", np.stack([hr, hr]))
    out, layout_path = tmp_path / "lr.tif", tmp_path / "layout.csv"
    args = ["simulate", str(tmp_path / "hr.tif"), "--seed", "3", "--n-fibres", "500"]
    assert main([*args, "--out", str(out), "--save-layout", str(layout_path)]) == 0
    lr = tifffile.imread(out)
    assert lr.shape == (2, 64, 72) and lr.dtype == np.float32
    layout = FibreLayout.from_file(layout_path)
    assert layout.n_fibres == 500 and layout.shape == (64, 72)
    assert "500 fibres" in capsys.readouterr().out
    # The same seed reproduces the output; a saved layout can be reused.
    again = tmp_path / "again.tif"
    assert main([*args[:2], "--layout", str(layout_path), "--seed", "3", "--out", str(again)]) == 0
    assert np.array_equal(tifffile.imread(again), lr)


def test_simulate_reports_bad_input_and_writes_nothing(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "hr.tif", np.zeros((32, 32), np.float32))
    out = tmp_path / "lr.tif"
    argv = ["simulate", str(tmp_path / "hr.tif"), "--seed", "0", "--sigma-mult", "-1"]
    status = main([*argv, "--out", str(out)])
    assert status == 2
    assert "sigma_mult must be a finite number >= 0" in capsys.readouterr().err
    assert not out.exists()


def test_demo_runs_the_whole_job(tmp_path, capsys):
    from napari_pclesr import pretrained

    args = ["--quick", "--size", "96", "--iterations", "3", "--batch-size", "4"]
    assert main(["demo", "--out", str(tmp_path), "--device", "cpu", *args]) == 0
    for name in ("hr.tif", "lr.tif", "layout.csv", "figure.png", "scores.csv", "scores.md"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "run" / "best.pt").is_file()
    shipped = pretrained.available()
    learned = [f"{name}_pretrained" for name in shipped]
    learned.append("fsrcnn_fine_tuned" if "fsrcnn" in shipped else "fsrcnn")
    for method in (*learned, "wiener", "unsharp"):
        assert tifffile.imread(tmp_path / f"sr_{method}.tif").shape == (2, 96, 96), method
    output = capsys.readouterr().out
    assert "Tot_cs" in output and "first by SSIM: " in output and "first by Tot_cs: " in output
    markdown = (tmp_path / "scores.md").read_text()
    assert markdown.startswith("| method | frames | SSIM |") and "| wiener ⚠ |" in markdown
    # Contrast that is noise: Wiener's gain is flagged on the demo's frames, our models' are not.
    with open(tmp_path / "scores.csv", newline="") as handle:
        rows = csv.DictReader(line for line in handle if not line.startswith("#"))  # footer
        flagged = {row["method"]: row["noisy_contrast"] for row in rows}
    assert flagged["wiener"] == "True"
    learned_labels = [m for m in flagged if m not in ("LR", "wiener", "unsharp")]
    assert learned_labels and all(flagged[m] == "False" for m in learned_labels)
    umask = os.umask(0)
    os.umask(umask)
    for name in ("scores.csv", "hr.tif", "run/best.pt"):  # readable as any file, not 0600
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
