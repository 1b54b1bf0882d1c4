"""``pclesr info`` and ``pclesr convert``."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import tifffile

from napari_pclesr.cli import main
from napari_pclesr.cli.io_commands import parse_frame_range
from napari_pclesr.io import read_sequence, write_mkt


@pytest.fixture
def recording(tmp_path):
    frames = np.random.default_rng(0).integers(-300, 4000, (6, 512, 512)).astype(np.int16)
    frames[2, 0, 0], frames[4, 1, 1] = -1234, 5555
    path = write_mkt(tmp_path / "rec.mkt", frames, frame_rate=12, metadata={"fovx": 256})
    return path, frames


def test_info_text_and_json(recording, capsys):
    path, _ = recording
    assert main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    for expected in [
        "format:      mkt",
        "6 frame(s) of 512x512",
        "int16",
        "12 frames/s",
        "0.5 µm",
        "-1234 .. 5555 (all frames)",
    ]:
        assert expected in text
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"] == [6, 512, 512] and info["value_range"] == [-1234, 5555]
    assert info["frame_rate"] == 12 and info["pixel_size_um"] == 0.5
    assert info["fov_fraction"] == 1.0  # random values fill the frame: no dark border


def test_convert_selected_frames(recording, tmp_path, capsys):
    path, frames = recording
    out = tmp_path / "part.tif"
    assert main(["convert", str(path), str(out), "--frames", "1:5:2"]) == 0
    assert "wrote 2 frame(s)" in capsys.readouterr().out
    converted, meta = read_sequence(out)
    assert converted.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(converted), frames[1:5:2].astype(np.float32))
    assert meta["frame_rate"] == 12 and meta["pixel_size_um"] == 0.5
    assert meta["raw"]["pclesr"]["source_frames"] == [1, 5, 2]
    assert main(["convert", str(path), str(tmp_path / "one.tif"), "--frames", "-1"]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "one.tif"), frames[-1:])


def test_cli_errors_exit_with_status_2(recording, tmp_path, capsys):
    path, _ = recording
    assert main(["convert", str(path), str(tmp_path / "x.tif"), "--frames", "10:20"]) == 2
    assert "selects no frame" in capsys.readouterr().err
    assert main(["convert", str(path), str(tmp_path / "x.png")]) == 2
    (tmp_path / "empty.mkt").touch()
    assert main(["info", str(tmp_path / "empty.mkt")]) == 2
    assert "empty.mkt: the file is empty" in capsys.readouterr().err
    assert not (tmp_path / "x.tif").exists()


def test_parse_frame_range():
    assert parse_frame_range("2:7") == slice(2, 7)
    assert parse_frame_range(":5") == slice(None, 5)
    assert parse_frame_range("0:10:3") == slice(0, 10, 3)
    assert parse_frame_range("4") == slice(4, 5)
    assert parse_frame_range("-1") == slice(-1, None)
    for bad in ["a:b", "1:2:3:4", "", "0:5:0"]:
        with pytest.raises(argparse.ArgumentTypeError):
            parse_frame_range(bad)
