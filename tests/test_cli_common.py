"""The guard that keeps commands from writing over their own inputs."""

import os

import pytest

from napari_pclesr.cli._common import refuse_overwriting_inputs


def test_same_file_by_any_spelling_is_refused(tmp_path, monkeypatch):
    source = tmp_path / "a.tif"
    source.write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    for spelling in ("a.tif", "./a.tif", str(source), f"../{tmp_path.name}/a.tif"):
        with pytest.raises(ValueError, match="refusing to write"):
            refuse_overwriting_inputs([spelling], [source])


def test_hard_and_symbolic_links_are_the_same_file(tmp_path):
    source = tmp_path / "a.tif"
    source.write_bytes(b"x")
    os.link(source, tmp_path / "hard.tif")
    (tmp_path / "soft.tif").symlink_to(source)
    for alias in ("hard.tif", "soft.tif"):
        with pytest.raises(ValueError, match="is the input"):
            refuse_overwriting_inputs([tmp_path / alias], [source])


def test_output_inside_an_input_folder_is_refused(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    with pytest.raises(ValueError, match="lies inside the input"):
        refuse_overwriting_inputs([folder / "sr.tif"], [folder])


def test_distinct_paths_pass(tmp_path):
    source = tmp_path / "a.tif"
    source.write_bytes(b"x")
    refuse_overwriting_inputs([tmp_path / "b.tif", None], [source, None])
