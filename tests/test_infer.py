"""Inference: normalisation inverse, FoV, tiling, out-of-memory retries and model sources."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from torch import nn

from napari_pclesr.data.patches import Normalisation
from napari_pclesr.infer import super_resolve
from napari_pclesr.train.checkpoint import save_checkpoint


def disc(shape, radius):
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - (shape[0] - 1) / 2) ** 2 + (cols - (shape[1] - 1) / 2) ** 2 <= radius**2


@pytest.fixture
def frames():
    """Three smooth frames in camera-like units, zero outside a disc."""
    rng = np.random.default_rng(0)
    stack = ndi.gaussian_filter(rng.random((3, 50, 70)), (0, 2, 2)) * 3000 + 200
    return (stack * disc((50, 70), 24)).astype(np.float32)


def local_net(scale=1, seed=0):
    """A random network whose receptive-field radius is 2 LR pixels."""
    torch.manual_seed(seed)
    if scale == 1:
        net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 1, 3, padding=1))
    else:
        net = nn.Sequential(
            nn.Conv2d(1, scale * scale, 3, padding=1), nn.PixelShuffle(scale), nn.Tanh()
        )
    net.scale = scale
    return net


class Constant(nn.Module):
    """Outputs 0.5 everywhere (in the normalised space)."""

    def forward(self, x):
        return torch.full_like(x, 0.5)


# -- normalisation and FoV ----------------------------------------------------------------------


def test_identity_network_returns_the_input_exactly(frames):
    result = super_resolve(frames, nn.Identity(), device="cpu")
    assert result.dtype == np.float32 and result.shape == frames.shape
    np.testing.assert_allclose(result, frames, rtol=1e-6)
    single = super_resolve(frames[1], nn.Identity(), device="cpu")
    np.testing.assert_allclose(single, frames[1], rtol=1e-6)


def test_output_is_mapped_back_with_the_input_frame_range_and_zero_outside_fov(frames):
    mask = disc((50, 70), 24)
    result = super_resolve(frames, Constant(), device="cpu")
    for frame, out in zip(frames, result, strict=True):
        middle = np.percentile(frame[mask].astype(np.float64), (1, 99)).mean()
        np.testing.assert_allclose(out[mask], middle, rtol=1e-6)
        assert np.all(out[~mask] == 0)


def test_explicit_fov_mask_is_applied(frames):
    mask = disc((50, 70), 10)
    result = super_resolve(frames, nn.Identity(), device="cpu", fov_mask=mask)
    assert np.all(result[:, ~mask] == 0)
    np.testing.assert_allclose(result[:, mask], frames[:, mask], rtol=1e-6)


@pytest.fixture
def checkpoint_path(tmp_path):
    """A ×2 FSRCNN checkpoint whose normalisation maps the 2nd-98th percentiles to [0, 1]."""
    from napari_pclesr import models

    torch.manual_seed(0)
    net = models.create("fsrcnn", scale=2, features=8, shrink_features=4, mapping_layers=1)
    stats = Normalisation(percentiles=(2.0, 98.0))
    return save_checkpoint(
        {
            "model": {"name": "fsrcnn", "hparams": net.hparams, "scale": 2},
            "state_dict": net.state_dict(),
            "normalisation": stats.to_dict(),
            "config": {},
            "history": {},
            "iteration": 0,
        },
        tmp_path / "model.pt",
    )


def test_checkpoint_applies_its_normalisation_like_the_manual_pipeline(frames, checkpoint_path):
    from napari_pclesr.train import load_model

    net, _ = load_model(checkpoint_path)
    result = super_resolve(frames, checkpoint_path, device="cpu")
    mask = disc((50, 70), 24)
    norm = Normalisation(percentiles=(2.0, 98.0))
    normalised, low, high = norm.normalise(frames, mask)
    with torch.no_grad():
        raw = net(torch.from_numpy(normalised)[:, None])[:, 0].numpy()
    expected = norm.denormalise(raw, low, high, mask)
    assert result.shape == (3, 100, 140)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-3)
    assert np.all(result[:, ~np.kron(mask, np.ones((2, 2), bool))] == 0)


# -- tiling -------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1, 2])
def test_tiled_output_equals_untiled(frames, scale):
    net = local_net(scale)
    whole = super_resolve(frames, net, device="cpu", batch_size=2)
    tiled = super_resolve(frames, net, device="cpu", tile=24, overlap=8, batch_size=5)
    assert tiled.shape == (3, 50 * scale, 70 * scale)
    # 1e-5 of the intensity range, i.e. 1e-5 in the network's normalised [0, 1] space.
    np.testing.assert_allclose(tiled, whole, atol=1e-5 * np.ptp(frames))


def test_tiles_larger_than_the_receptive_field_margin_show_seams(frames):
    # With no overlap, the zero padding of each tile changes its border pixels.
    net = local_net()
    whole = super_resolve(frames, net, device="cpu")
    seams = super_resolve(frames, net, device="cpu", tile=24, overlap=0)
    assert np.abs(seams - whole).max() > 1e-3 * np.ptp(frames)


def test_bad_tiling_settings_are_clear_errors(frames):
    with pytest.raises(ValueError, match="larger than 2 × overlap"):
        super_resolve(frames, nn.Identity(), device="cpu", tile=32, overlap=16)
    with pytest.raises(ValueError, match="batch_size"):
        super_resolve(frames, nn.Identity(), device="cpu", batch_size=0)


# -- out of memory ------------------------------------------------------------------------------


class RunsOutOfMemory(nn.Module):
    """Wraps a network and raises CUDA out-of-memory for inputs larger than ``limit`` pixels."""

    def __init__(self, net, limit):
        super().__init__()
        self.net, self.limit, self.scale = net, limit, net.scale
        self.calls = []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        if x.shape[0] * x.shape[2] * x.shape[3] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.net(x)


def test_out_of_memory_retries_with_smaller_tiles(frames):
    net = local_net()
    expected = super_resolve(frames, net, device="cpu")
    flaky = RunsOutOfMemory(net, limit=2 * 40 * 40)
    with pytest.warns(RuntimeWarning, match="retrying with"):
        result = super_resolve(frames, flaky, device="cpu", overlap=8, batch_size=2)
    np.testing.assert_allclose(result, expected, atol=1e-5 * np.ptp(frames))
    assert flaky.calls[0] == (2, 1, 50, 70)  # whole frames first
    assert max(shape[2] for shape in flaky.calls[1:]) < 50  # then tiles


def test_out_of_memory_gives_up_with_a_clear_error(frames):
    always = RunsOutOfMemory(local_net(), limit=0)
    with (
        pytest.raises(torch.cuda.OutOfMemoryError, match="even with"),
        pytest.warns(RuntimeWarning),
    ):
        super_resolve(frames, always, device="cpu", overlap=8)


# -- sources and inputs -------------------------------------------------------------------------


def test_missing_checkpoint_and_unknown_names_are_clear_errors(frames, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        super_resolve(frames, tmp_path / "missing.pt", device="cpu")
    with pytest.raises(ValueError, match="neither a checkpoint file nor a baseline"):
        super_resolve(frames, "no-such-method", device="cpu")
    with pytest.raises(ValueError, match="must be a checkpoint path"):
        super_resolve(frames, 42, device="cpu")


def test_baseline_by_name_matches_the_baseline_module(frames):
    baselines = pytest.importorskip("napari_pclesr.baselines")
    name = baselines.available()[0]
    by_name = super_resolve(frames, name, device="cpu")
    by_module = super_resolve(frames, baselines.create(name), device="cpu")
    np.testing.assert_allclose(by_name, by_module, rtol=1e-6)
    doubled = super_resolve(frames, "bicubic", device="cpu", scale=2)
    assert doubled.shape == (3, 100, 140)
    with pytest.raises(ValueError, match="network upscales ×1"):
        super_resolve(frames, nn.Identity(), device="cpu", scale=2)


def test_bad_frames_and_masks_are_clear_errors(frames):
    with pytest.raises(ValueError, match="fov_mask has shape"):
        super_resolve(frames, nn.Identity(), device="cpu", fov_mask=np.ones((5, 5), bool))
    with pytest.raises(ValueError, match="field of view is empty"):
        super_resolve(np.zeros((8, 8)), nn.Identity(), device="cpu")
    with pytest.raises(ValueError, match="NaN"):
        super_resolve(np.full((8, 8), np.nan), nn.Identity(), device="cpu")


def test_wrong_output_shape_is_reported(frames):
    net = local_net()  # no upscaling, but claims ×2
    net.scale = 2
    with pytest.raises(ValueError, match="expected"):
        super_resolve(frames, net, device="cpu")


def test_bfloat16_on_cpu_stays_close_to_float32(frames):
    net = local_net()
    full = super_resolve(frames, net, device="cpu", half=False)
    half = super_resolve(frames, net, device="cpu", half=True)
    span = frames.max() - frames.min()
    assert np.abs(half - full).max() < 0.02 * span


# -- command line -------------------------------------------------------------------------------


def test_cli_infer_writes_the_super_resolved_stack(frames, checkpoint_path, tmp_path):
    tifffile = pytest.importorskip("tifffile")
    from napari_pclesr.cli import main
    from napari_pclesr.io import read_sequence

    # Five frames: the TIFF reader takes 3- or 4-plane stacks for colour images.
    frames = np.concatenate([frames, frames[:2]])
    source = tmp_path / "lr.tif"
    tifffile.imwrite(source, frames)
    target = tmp_path / "sr.tif"
    argv = ["infer", str(checkpoint_path), str(source), str(target), "--device", "cpu"]
    assert main([*argv, "--tile", "32", "--overlap", "8"]) == 0
    written = tifffile.imread(target)
    assert written.dtype == np.float32 and written.shape == (5, 100, 140)
    _, meta = read_sequence(source)
    expected = super_resolve(frames, checkpoint_path, device="cpu", fov_mask=meta["fov_mask"])
    # Tiles vs whole frames: this network's receptive field exceeds overlap/4, so not exact.
    assert np.abs(written - expected).max() < 0.02 * np.ptp(frames)
    assert np.all(written[:, ~np.kron(meta["fov_mask"], np.ones((2, 2), bool))] == 0)


def test_cli_infer_reports_bad_input_in_one_line(checkpoint_path, tmp_path, capsys):
    from napari_pclesr.cli import main

    missing = tmp_path / "absent.tif"
    assert main(["infer", str(checkpoint_path), str(missing), str(tmp_path / "o.tif")]) == 2
    assert "pclesr infer: error:" in capsys.readouterr().err


# -- devices ------------------------------------------------------------------------------------


def test_device_choice_and_clear_errors_for_missing_devices():
    from napari_pclesr.devices import autocast_dtype, available_devices, select_device

    assert select_device("cpu") == torch.device("cpu")
    assert autocast_dtype(torch.device("cpu")) is None
    expected = (
        "cuda" if torch.cuda.is_available() else ("mps" if "mps" in available_devices() else "cpu")
    )
    assert select_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda:1")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        select_device("gpu0")
