"""Inference: normalisation inverse, FoV, tiling, out-of-memory retries and model sources."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from conftest import save_tiny_fsrcnn
from scipy import ndimage as ndi
from torch import nn

from napari_pclesr import infer
from napari_pclesr.data.patches import Normalisation
from napari_pclesr.infer import (
    SeamWarning,
    SuperResolver,
    _tile_spans,
    super_resolve,
    super_resolve_recording,
)
from napari_pclesr.io import LazyFrames


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
    return save_tiny_fsrcnn(tmp_path / "model.pt", scale=2)


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
    tiled = super_resolve(frames, net, device="cpu", tile=13, batch_size=5)  # halo: radius 2
    assert tiled.shape == (3, 50 * scale, 70 * scale)
    # 1e-5 of the intensity range, i.e. 1e-5 in the network's normalised [0, 1] space.
    np.testing.assert_allclose(tiled, whole, atol=1e-5 * np.ptp(frames))


def test_a_halo_below_the_receptive_field_warns_and_shows_seams(frames):
    net = local_net()
    whole = super_resolve(frames, net, device="cpu")
    with pytest.warns(SeamWarning, match="smaller than the receptive-field radius") as caught:
        seams = super_resolve(frames, net, device="cpu", tile=24, overlap=1)
    assert len(caught) == 1
    assert np.abs(seams - whole).max() > 1e-3 * np.ptp(frames)


def test_tile_spans_keep_every_pixel_once_with_its_halo():
    for length, tile, halo in [(50, 13, 2), (70, 24, 8), (7, 7, 3), (100, 21, 10), (33, 9, 0)]:
        spans = _tile_spans(length, tile, halo)
        kept = np.concatenate([np.arange(s.keep_from, s.keep_to) for s in spans])
        np.testing.assert_array_equal(kept, np.arange(length))
        for span in spans:
            end = span.start + min(tile, length)
            assert span.start >= 0 and end <= length
            assert span.start == 0 or span.keep_from - span.start >= halo
            assert end == length or end - span.keep_to >= halo


def test_bad_tiling_settings_are_clear_errors(frames):
    with pytest.raises(ValueError, match="larger than 2 × overlap"):
        super_resolve(frames, nn.Identity(), device="cpu", tile=32, overlap=16)
    with pytest.raises(ValueError, match=r"2 × the halo \(2 pixels, the receptive-field radius"):
        super_resolve(frames, local_net(), device="cpu", tile=4)
    with pytest.raises(ValueError, match="batch_size"):
        super_resolve(frames, nn.Identity(), device="cpu", batch_size=0)
    with pytest.raises(ValueError, match="overlap must be a whole number >= 0"):
        super_resolve(frames, nn.Identity(), device="cpu", overlap=-1)


def test_whole_frame_methods_and_unknown_receptive_fields_are_not_tiled_blindly(frames):
    with pytest.raises(ValueError, match="wiener needs the whole frame"):
        super_resolve(frames, "wiener", device="cpu", tile=32)

    class Pooled(nn.Module):  # a layer whose reach cannot be derived
        def __init__(self):
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(1)

        def forward(self, x):
            return x - self.pool(x)

    with pytest.raises(ValueError, match="receptive field of Pooled is unknown"):
        super_resolve(frames, Pooled(), device="cpu", tile=32)
    # Untiled, or with a halo given explicitly, it runs.
    assert super_resolve(frames, Pooled(), device="cpu").shape == frames.shape
    assert super_resolve(frames, Pooled(), device="cpu", tile=40, overlap=4).shape == frames.shape


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
        result = super_resolve(frames, flaky, device="cpu", batch_size=2)
    np.testing.assert_allclose(result, expected, atol=1e-5 * np.ptp(frames))
    assert flaky.calls[0] == (2, 1, 50, 70)  # whole frames first
    assert max(shape[2] for shape in flaky.calls[1:]) < 50  # then tiles


def test_out_of_memory_gives_up_with_a_clear_error(frames):
    always = RunsOutOfMemory(local_net(), limit=0)
    with (
        pytest.raises(torch.cuda.OutOfMemoryError, match="even with"),
        pytest.warns(RuntimeWarning),
    ):
        super_resolve(frames, always, device="cpu")


# -- sources and inputs -------------------------------------------------------------------------


def test_missing_checkpoint_and_unknown_names_are_clear_errors(frames, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        super_resolve(frames, tmp_path / "missing.pt", device="cpu")
    with pytest.raises(ValueError, match="neither a checkpoint file nor a baseline"):
        super_resolve(frames, "no-such-method", device="cpu")
    with pytest.raises(ValueError, match="must be a checkpoint path"):
        super_resolve(frames, 42, device="cpu")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").touch()
    with pytest.raises(IsADirectoryError, match=r"is a folder, not a checkpoint.*holds last\.pt"):
        super_resolve(frames, tmp_path / "run", device="cpu")


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
        super_resolve(frames, nn.Identity(), device="cpu", fov_mask=np.zeros((50, 70), bool))
    with_nan = frames.copy()
    with_nan[2, 3, 4] = np.nan
    with pytest.raises(ValueError, match=r"frames \(frames 2–2\) contains NaN"):
        super_resolve(with_nan, nn.Identity(), device="cpu", batch_size=2)
    with pytest.raises(ValueError, match="RGB"):
        super_resolve(np.zeros((20, 30, 3)), nn.Identity(), device="cpu")


def test_constant_and_all_zero_frames_are_returned_unchanged(frames):
    net = local_net()  # its output for a blank input is not blank
    stack = frames.copy()
    mask = disc((50, 70), 24)
    stack[0] = 0
    stack[1] = np.where(mask, 7.5, 0)
    result = super_resolve(stack, net, device="cpu")
    np.testing.assert_array_equal(result[0], 0)
    np.testing.assert_allclose(result[1], stack[1], rtol=1e-6)
    np.testing.assert_allclose(result[2], super_resolve(stack[2], net, device="cpu"), rtol=1e-6)
    assert np.ptp(result[2]) > 0
    np.testing.assert_array_equal(super_resolve(np.zeros((4, 8, 8)), net, device="cpu"), 0)


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


# -- streaming ----------------------------------------------------------------------------------


class Recorder(nn.Module):
    """Wraps a network and records the shape of every batch it gets."""

    def __init__(self, net):
        super().__init__()
        self.net, self.scale = net, net.scale
        self.calls = []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        return self.net(x)


def lazy_stack(stack):
    loads = []

    def load(indices):
        loads.append(list(indices))
        return stack[list(indices)]

    return LazyFrames(load, len(stack), stack.shape[1:], stack.dtype), loads


def test_iter_batches_streams_a_lazy_stack_reading_each_frame_once(frames):
    stack = np.concatenate([frames] * 7)  # 21 frames
    lazy, loads = lazy_stack(stack)
    resolver = SuperResolver(local_net(2), device="cpu", batch_size=4)
    batches = list(resolver.iter_batches(lazy))
    assert [b.start for b in batches] == [0, 4, 8, 12, 16, 20]
    assert [b.progress.done for b in batches] == [4, 8, 12, 16, 20, 21]
    assert all(b.progress.total == 21 and b.frames.shape[1:] == (100, 140) for b in batches)
    assert batches[-1].progress.eta_s == 0
    # The default FoV of a lazy stack comes from a sample; this stack's FoV is fixed, so the
    # result is that of the whole stack in memory.
    expected = super_resolve(stack, local_net(2), device="cpu")
    np.testing.assert_allclose(np.concatenate([b.frames for b in batches]), expected, rtol=1e-6)
    loaded = [index for call in loads for index in call]
    assert sorted(loaded) == list(range(21)), "every frame is read exactly once"
    assert max(len(call) for call in loads) <= 8


def test_iter_batches_checks_its_input_at_once(frames):
    resolver = SuperResolver(nn.Identity(), device="cpu")
    with pytest.raises(ValueError, match="fov_mask has shape"):
        resolver.iter_batches(frames, fov_mask=np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="must be a 2-D frame"):
        resolver.iter_batches(np.zeros((2, 3, 4, 5)))


def test_a_batch_too_large_for_memory_is_reduced_with_a_warning(frames, monkeypatch):
    expected = super_resolve(frames, local_net(), device="cpu")
    monkeypatch.setattr(infer, "PASS_MEMORY_BYTES", 3 * 2**19)  # 1.5 MiB
    recorder = Recorder(local_net())
    with pytest.warns(RuntimeWarning, match=r"a batch of 3 frames .* using batches of 2"):
        result = super_resolve(frames, recorder, device="cpu", batch_size=100_000)
    assert [call[0] for call in recorder.calls[1:]] == [2, 1]  # after the width probe
    np.testing.assert_allclose(result, expected, rtol=1e-6)


@pytest.fixture
def recording(tmp_path, frames):
    """A 9-frame .mkt with a frame rate and a field of view."""
    from napari_pclesr.io import write_mkt

    stack = np.concatenate([frames] * 3).round().astype(np.int16)
    path = write_mkt(tmp_path / "rec.mkt", stack, frame_rate=12.0, metadata={"fovx": 350})
    return path, stack


def test_super_resolve_recording_streams_into_a_tiff_with_metadata(recording, checkpoint_path):
    from napari_pclesr.io import read_sequence

    source, stack = recording
    output = source.with_name("sr.tif")
    seen = []
    result = super_resolve_recording(
        source, output, checkpoint_path, device="cpu", batch_size=2, progress=seen.append
    )
    assert [p.done for p in seen] == [2, 4, 6, 8, 9] and result.n_frames == 9
    assert (result.frame_shape, result.output_shape) == ((50, 70), (100, 140))
    _, meta_in = read_sequence(source)
    written, meta = read_sequence(output)
    expected = super_resolve(stack, checkpoint_path, device="cpu", fov_mask=meta_in["fov_mask"])
    np.testing.assert_allclose(written, expected, rtol=1e-6, atol=1e-3)
    assert meta["frame_rate"] == 12.0 and meta["pixel_size_um"] == pytest.approx(350 / 70 / 2)
    row, col, radius = meta_in["fov_circle"]
    np.testing.assert_allclose(meta["fov_circle"], (2 * row + 0.5, 2 * col + 0.5, 2 * radius))
    saved = meta["raw"]["pclesr"]
    assert saved["model"] == "model.pt" and saved["source"] == str(source)


def test_super_resolve_recording_frame_ranges_and_refusals(recording, tmp_path):
    source, _ = recording
    output = tmp_path / "part.tif"
    resolver = SuperResolver(local_net(), device="cpu")
    super_resolve_recording(source, output, resolver, frames=slice(2, 7))
    assert tifffile.imread(output).shape == (5, 50, 70)
    before = output.read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        super_resolve_recording(source, output, resolver)
    assert output.read_bytes() == before
    super_resolve_recording(source, output, resolver, frames=slice(0, 1), overwrite=True)
    assert tifffile.imread(output).shape == (50, 70)
    with pytest.raises(ValueError, match="selects none of its 9 frames"):
        super_resolve_recording(source, tmp_path / "none.tif", resolver, frames=slice(20, 30))
    with pytest.raises(TypeError, match="cannot change a ready SuperResolver"):
        super_resolve_recording(source, tmp_path / "x.tif", resolver, batch_size=2)


def test_nan_in_a_recording_is_named_and_nothing_is_written(tmp_path, frames):
    source = tmp_path / "nan.tif"
    bad = frames.copy()
    bad[1, 10, 10] = np.nan
    tifffile.imwrite(source, np.concatenate([bad, frames]))
    with pytest.raises(ValueError, match=r"nan\.tif \(frames 0–5\) contains NaN"):
        super_resolve_recording(source, tmp_path / "out.tif", nn.Identity(), device="cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.tif"]


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
