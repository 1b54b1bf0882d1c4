"""Checkpoint files: round trip, atomic writes, clear errors, model rebuilding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_pclesr import models
from napari_pclesr.data.patches import Normalisation
from napari_pclesr.train.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    load_model,
    save_checkpoint,
)


def tiny_fsrcnn():
    return models.create("fsrcnn", features=8, shrink_features=4, mapping_layers=1)


def checkpoint_of(net, name="fsrcnn"):
    hparams = {k: v for k, v in getattr(net, "hparams", {}).items() if k != "scale"}
    return {
        "kind": "best",
        "iteration": 7,
        "model": {"name": name, "hparams": hparams, "scale": 1},
        "state_dict": net.state_dict(),
        "normalisation": {"lr_mean": 1.0, "lr_std": 2.0, "hr_mean": 3.0, "hr_std": 4.0},
        "config": {"model": name, "betas": [0.9, 0.999]},
        "history": {"iteration": [1, 2], "train_loss": [0.5, 0.25]},
    }


def test_round_trip_keeps_everything_and_loads_with_weights_only(tmp_path):
    net = tiny_fsrcnn()
    path = save_checkpoint(checkpoint_of(net), tmp_path / "best.pt")
    raw = torch.load(path, weights_only=True)  # plain types and tensors only
    assert raw["format_version"] == FORMAT_VERSION
    loaded = load_checkpoint(path)
    assert loaded["iteration"] == 7 and loaded["history"]["train_loss"] == [0.5, 0.25]
    for key, value in net.state_dict().items():
        assert torch.equal(loaded["state_dict"][key], value)
    from napari_pclesr import __version__

    assert loaded["package_version"] == __version__


def test_load_model_rebuilds_the_registry_network(tmp_path):
    net = tiny_fsrcnn()
    path = save_checkpoint(checkpoint_of(net), tmp_path / "best.pt")
    rebuilt, stats = load_model(path, "cpu")
    assert not rebuilt.training
    # A format-1 dict of z-score statistics means the seed's per-frame min-max.
    assert stats == Normalisation.seed000()
    x = torch.rand(2, 1, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), net.eval()(x))


def test_custom_network_needs_the_module_to_load(tmp_path):
    net = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1))
    path = save_checkpoint(checkpoint_of(net, name=None), tmp_path / "custom.pt")
    with pytest.raises(CheckpointError, match="custom network"):
        load_model(path)
    target = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1))
    loaded, _ = load_model(path, model=target)
    assert torch.equal(loaded[0].weight, net[0].weight)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(path, model=nn.Sequential(nn.Conv2d(1, 2, 3)))


def test_write_is_atomic(tmp_path):
    net = tiny_fsrcnn()
    path = save_checkpoint(checkpoint_of(net), tmp_path / "last.pt")
    before = path.read_bytes()
    unpicklable = {**checkpoint_of(net), "history": {"bad": lambda: None}}
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises, the file must survive
        save_checkpoint(unpicklable, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary left


def test_newer_format_is_refused_with_upgrade_advice(tmp_path):
    path = save_checkpoint(checkpoint_of(tiny_fsrcnn()), tmp_path / "new.pt")
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="upgrade napari-pclesr") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_truncated_file_is_a_clear_error(tmp_path):
    path = save_checkpoint(checkpoint_of(tiny_fsrcnn()), tmp_path / "cut.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupted") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"just some text\n", "cannot be read as a checkpoint"),
        (None, "not a napari-pclesr checkpoint"),
    ],
)
def test_foreign_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "other.pt"
    if content is None:
        torch.save({"weights": torch.zeros(3)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)
    assert issubclass(CheckpointError, ValueError)


def test_incomplete_checkpoint_and_missing_file(tmp_path):
    payload = checkpoint_of(tiny_fsrcnn())
    del payload["normalisation"]
    path = save_checkpoint(payload, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="lacks normalisation"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.pt")
