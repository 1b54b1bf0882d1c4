"""``pclesr metrics``: the table, JSON with per-frame values, CSV, masks and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from skimage import data, filters

from napari_pclesr.cli import main
from napari_pclesr.metrics import compare, evaluate_methods


def write_tiff(path, array):
    """Save frames as a grey stack (tifffile would take a (3, H, W) array for planar RGB)."""
    tifffile.imwrite(path, array, photometric="minisblack")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("metrics_cli")
    camera = data.camera() / 255.0
    hr = np.stack([camera[150 + 30 * t : 198 + 30 * t, 240:288] for t in range(3)])
    lr = filters.gaussian(hr, sigma=(0, 1.5, 1.5))
    sharp = np.clip(lr + (lr - filters.gaussian(lr, sigma=(0, 1, 1))), 0, 1)
    mask = np.zeros((48, 48), np.uint8)
    mask[4:44, 6:42] = 1
    arrays = {"hr": hr, "lr": lr, "sharp": sharp, "mask": mask}
    paths = {}
    for name, array in arrays.items():
        paths[name] = folder / f"{name}.tif"
        write_tiff(paths[name], array.astype(np.float32) if array.dtype != np.uint8 else array)
    arrays["blurred"] = filters.gaussian(hr, sigma=(0, 0.7, 0.7)).astype(np.float32)
    paths["blurred"] = folder / "blurred.tif"
    write_tiff(paths["blurred"], arrays["blurred"])
    return {"paths": paths, "arrays": arrays, "folder": folder}


def expected_table(files, mask=None):
    arrays = {k: v.astype(np.float32).astype(np.float64) for k, v in files["arrays"].items()}
    return compare(
        evaluate_methods(
            {"EDSR": arrays["sharp"], "blurred": arrays["blurred"]},
            arrays["hr"],
            arrays["lr"],
            mask=mask,
        )
    )


def test_cli_prints_the_table(files, capsys):
    paths = files["paths"]
    status = main(
        [
            "metrics",
            "--sr",
            f"EDSR={paths['sharp']}",
            "--sr",
            str(paths["blurred"]),
            "--hr",
            str(paths["hr"]),
            "--lr",
            str(paths["lr"]),
        ]
    )
    assert status == 0
    output = capsys.readouterr().out
    expected = expected_table(files)
    lines = output.splitlines()
    assert lines[0].split()[:3] == ["method", "frames", "SSIM"]
    assert [line.split()[0] for line in lines[1:4]] == ["LR", "EDSR", "blurred"]
    row = expected["EDSR"]
    assert f"{row.mean['tot_cs']:.4f} ± {row.std['tot_cs']:.4f}" in lines[2]
    assert "Tot_cs = ½·[clip(SSIM, 0, 1)" in output


def test_cli_json_has_per_frame_values_and_uses_the_mask(files, capsys):
    paths = files["paths"]
    csv_path = files["folder"] / "table.csv"
    status = main(
        [
            "metrics",
            "--sr",
            f"EDSR={paths['sharp']}",
            "--sr",
            str(paths["blurred"]),
            "--hr",
            str(paths["hr"]),
            "--lr",
            str(paths["lr"]),
            "--mask",
            str(paths["mask"]),
            "--json",
            "--csv",
            str(csv_path),
        ]
    )
    assert status == 0
    payload = json.loads(capsys.readouterr().out)
    expected = expected_table(files, mask=files["arrays"]["mask"] != 0)
    for name in ("LR", "EDSR", "blurred"):
        per_frame = payload["per_frame"][name]
        np.testing.assert_allclose(per_frame["ssim"], expected.scores[name].ssim, rtol=1e-12)
        np.testing.assert_allclose(per_frame["tot_cs"], expected.scores[name].tot_cs, rtol=1e-12)
        assert len(per_frame["gcf"]) == 3
    assert payload["summary"][1]["method"] == "EDSR"
    assert payload["summary"][1]["ssim_p"] == pytest.approx(expected["EDSR"].p_value["ssim"])
    assert "Tot_cs" in payload["definitions"]["tot_cs"]
    assert csv_path.read_text(encoding="utf-8").startswith("method,frames,")


def test_cli_minmax_rescales_integer_data(files, capsys, tmp_path):
    paths = files["paths"]
    raw = tmp_path / "raw.tif"
    write_tiff(raw, (files["arrays"]["sharp"] * 4000 + 100).astype(np.uint16))
    args = ["metrics", "--sr", str(raw), "--hr", str(paths["hr"]), "--lr", str(paths["lr"])]
    assert main(args) == 2
    assert "--minmax" in capsys.readouterr().err
    assert main([*args, "--minmax", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert len(payload["per_frame"]["raw"]["ssim"]) == 3


def test_cli_reports_bad_input_in_one_line(files, capsys, tmp_path):
    paths = files["paths"]
    small = tmp_path / "small.tif"
    write_tiff(small, files["arrays"]["sharp"][:, :40].astype(np.float32))
    args = ["metrics", "--sr", str(small), "--hr", str(paths["hr"]), "--lr", str(paths["lr"])]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert error.startswith("pclesr metrics: error:") and "same shape" in error
    missing = [
        "metrics",
        "--sr",
        str(tmp_path / "nope.tif"),
        "--hr",
        str(paths["hr"]),
        "--lr",
        str(paths["lr"]),
    ]
    assert main(missing) == 2
    assert "nope.tif" in capsys.readouterr().err
    twice = [
        "metrics",
        "--sr",
        f"A={paths['sharp']}",
        "--sr",
        f"A={paths['blurred']}",
        "--hr",
        str(paths["hr"]),
        "--lr",
        str(paths["lr"]),
    ]
    assert main(twice) == 2
    assert "NAME=PATH" in capsys.readouterr().err


def test_cli_auto_mask_is_the_readers_field_of_view(files, capsys):
    from napari_pclesr.io import read_sequence

    paths = files["paths"]
    fov_mask = read_sequence(paths["lr"])[1]["fov_mask"]
    args = ["metrics", "--sr", f"EDSR={paths['sharp']}", "--hr", str(paths["hr"])]
    assert main([*args, "--lr", str(paths["lr"]), "--mask", "auto", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    arrays = {k: v.astype(np.float32).astype(np.float64) for k, v in files["arrays"].items()}
    expected = evaluate_methods({"EDSR": arrays["sharp"]}, arrays["hr"], arrays["lr"], fov_mask)
    np.testing.assert_allclose(payload["per_frame"]["EDSR"]["gcf"], expected["EDSR"].gcf)
