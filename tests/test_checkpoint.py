"""Checkpoint files: round trip, atomic writes, clear errors, integrity, model rebuilding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_pclesr import models
from napari_pclesr.data.patches import Normalisation
from napari_pclesr.train.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    UnverifiedCheckpointWarning,
    checkpoint_digests,
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
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert "weights_only" not in str(info.value)  # torch's advice to load unsafely
    assert issubclass(CheckpointError, ValueError)


def test_incomplete_checkpoint_and_missing_file(tmp_path):
    payload = checkpoint_of(tiny_fsrcnn())
    del payload["normalisation"]
    path = save_checkpoint(payload, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="lacks normalisation"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.pt")


# -- integrity ----------------------------------------------------------------------------------


def test_flipped_bytes_in_the_weights_are_reported_as_corrupted(tmp_path):
    net = tiny_fsrcnn()
    path = save_checkpoint(checkpoint_of(net), tmp_path / "best.pt")
    data = bytearray(path.read_bytes())
    # The case: 300 flipped bytes inside the stored weights of one layer.
    weight = max(net.state_dict().values(), key=torch.Tensor.numel)
    start = bytes(data).find(weight.numpy().tobytes())
    assert start > 0 and weight.numel() * 4 >= 300
    for offset in range(start, start + 300):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    # torch alone loads the damaged file without complaint; the digest does not.
    torch.load(path, weights_only=True)
    with pytest.raises(CheckpointError, match="corrupted") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "state_dict" in str(info.value)
    with pytest.raises(CheckpointError, match="corrupted"):
        load_model(path)


def test_a_changed_normalisation_is_reported_as_corrupted(tmp_path):
    path = save_checkpoint(checkpoint_of(tiny_fsrcnn()), tmp_path / "best.pt")
    payload = torch.load(path, weights_only=True)
    payload["normalisation"]["lr_std"] = 2.5
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="corrupted: its normalisation"):
        load_checkpoint(path)


def test_digests_cover_every_weight_and_are_stable(tmp_path):
    net = tiny_fsrcnn()
    payload = checkpoint_of(net)
    digests = checkpoint_digests(payload)
    assert set(digests) == {"state_dict", "normalisation"}
    assert all(len(value) == 64 for value in digests.values())
    saved = load_checkpoint(save_checkpoint(payload, tmp_path / "a.pt"))
    assert saved["sha256"] == digests == checkpoint_digests(saved)
    for key, weight in net.state_dict().items():
        flipped = weight.detach().clone().contiguous()
        flipped.view(torch.int32).view(-1)[0] ^= 1  # the lowest bit of one value
        changed = {**payload, "state_dict": {**net.state_dict(), key: flipped}}
        assert checkpoint_digests(changed)["state_dict"] != digests["state_dict"], key


def test_checkpoint_without_digests_loads_with_a_warning(tmp_path):
    path = save_checkpoint(checkpoint_of(tiny_fsrcnn()), tmp_path / "old.pt")
    payload = torch.load(path, weights_only=True)
    del payload["sha256"]  # as written before digests existed
    torch.save(payload, path)
    with pytest.warns(UnverifiedCheckpointWarning, match="no SHA-256"):
        loaded = load_checkpoint(path)
    save_checkpoint(loaded, path)  # re-saving adds the digests
    assert "sha256" in torch.load(path, weights_only=True)


def test_non_finite_weights_are_never_written_nor_loaded(tmp_path):
    net = tiny_fsrcnn()
    with torch.no_grad():
        next(net.parameters()).view(-1)[3] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        save_checkpoint(checkpoint_of(net), tmp_path / "best.pt")
    assert list(tmp_path.iterdir()) == []
    # A file written without the check (e.g. by an older version) is refused on load.
    payload = checkpoint_of(net)
    payload.update(format="napari-pclesr-checkpoint", format_version=FORMAT_VERSION)
    torch.save(payload, tmp_path / "nan.pt")
    expected = r"unusable: .* NaN or infinite .* lower learning rate"
    with pytest.warns(UnverifiedCheckpointWarning), pytest.raises(CheckpointError, match=expected):
        load_checkpoint(tmp_path / "nan.pt")


def test_directory_and_unreadable_file_get_their_own_messages(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(checkpoint_of(tiny_fsrcnn()), run / "best.pt")
    with pytest.raises(IsADirectoryError, match=r"is a directory, not a file; it holds best\.pt"):
        load_checkpoint(run)

    def refuse(path, mode="r", *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    from napari_pclesr.train import checkpoint as module

    monkeypatch.setattr(module, "open", refuse, raising=False)
    with pytest.raises(PermissionError, match="permission denied") as info:
        load_checkpoint(run / "best.pt")
    assert str(run / "best.pt") in str(info.value) and "damaged" not in str(info.value)
