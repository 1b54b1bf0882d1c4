"""Tests of the training losses against independent references (scikit-image, SciPy, NumPy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data
from skimage.metrics import structural_similarity

from napari_pclesr import losses


def _skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
    )


def _pairs():
    """(image, reference) pairs of several kinds and sizes, values in [0, 1]."""
    rng = np.random.default_rng(0)
    camera = data.camera()[120:184, 200:280] / 255.0
    noisy = np.clip(camera + rng.normal(0, 0.08, camera.shape), 0, 1)
    blurred = ndimage.gaussian_filter(camera, 2.0)
    return {
        "camera-noisy": (noisy, camera),
        "camera-blurred": (blurred, camera),
        "random": (rng.random((23, 31)), rng.random((23, 31))),
        "smallest": (rng.random((11, 11)), rng.random((11, 11))),
        "dark-flat": (np.full((16, 20), 0.02) + rng.normal(0, 1e-3, (16, 20)), np.zeros((16, 20))),
    }


def _tensor(array: np.ndarray, dtype=torch.float64) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype)[None, None]


@pytest.mark.parametrize("kind", sorted(_pairs()))
def test_ssim_equals_skimage(kind):
    image, reference = _pairs()[kind]
    expected = _skimage_ssim(image, reference)
    in_float64 = losses.ssim(_tensor(image), _tensor(reference)).item()
    in_float32 = losses.ssim(_tensor(image, torch.float32), _tensor(reference, torch.float32))
    assert in_float64 == pytest.approx(expected, abs=1e-10)
    assert in_float32.item() == pytest.approx(expected, abs=1e-5)


def test_ssim_is_per_image_over_a_batch():
    pairs = [p for k, p in sorted(_pairs().items()) if p[0].shape == (64, 80)]
    batch = torch.cat([_tensor(a) for a, _ in pairs])
    refs = torch.cat([_tensor(b) for _, b in pairs])
    values = losses.ssim(batch, refs)
    assert values.shape == (len(pairs),)
    np.testing.assert_allclose(values.numpy(), [_skimage_ssim(a, b) for a, b in pairs], atol=1e-10)


def test_ssim_equals_the_metrics_module():
    metrics = pytest.importorskip("napari_pclesr.metrics")
    rng = np.random.default_rng(3)
    stack = rng.random((3, 40, 36)).astype(np.float32)
    reference = np.clip(stack + rng.normal(0, 0.1, stack.shape), 0, 1).astype(np.float32)
    expected = metrics.ssim(stack, reference)
    ours = losses.ssim(torch.from_numpy(stack)[:, None], torch.from_numpy(reference)[:, None])
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-5)


def test_ssim_of_identical_frames_is_one_and_loss_zero():
    frames = torch.rand(2, 1, 20, 20, dtype=torch.float64)
    assert torch.allclose(losses.ssim(frames, frames), torch.ones(2, dtype=torch.float64))
    assert losses.create("ssim")(frames, frames).item() == pytest.approx(0.0, abs=1e-12)


def test_ssim_loss_gradient_is_correct():
    generator = torch.Generator().manual_seed(0)
    prediction = torch.rand(1, 1, 13, 12, dtype=torch.float64, generator=generator)
    target = torch.rand(1, 1, 13, 12, dtype=torch.float64, generator=generator)
    prediction.requires_grad_(True)
    loss = losses.create("ssim")
    assert torch.autograd.gradcheck(lambda p: loss(p, target), (prediction,))
    gaussian = losses.create("ssim+l1", l1="gaussian")
    # away from |e| = 0, where L1 has a kink that finite differences straddle
    assert torch.autograd.gradcheck(lambda p: gaussian(p, target + 2.0), (prediction,))


def test_ssim_under_autocast_keeps_float32_accuracy():
    image, reference = _pairs()["camera-noisy"]
    low = _tensor(image, torch.bfloat16)
    ref = _tensor(reference, torch.bfloat16)
    expected = _skimage_ssim(low.double()[0, 0].numpy(), ref.double()[0, 0].numpy())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = losses.ssim(low, ref)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("alpha", [0.84, 0.3, 0.0, 1.0])
def test_ssim_l1_is_the_weighted_sum(alpha):
    image, reference = _pairs()["camera-noisy"]
    expected = alpha * (1 - _skimage_ssim(image, reference)) + (1 - alpha) * np.mean(
        np.abs(image - reference)
    )
    value = losses.create("ssim+l1", alpha=alpha)(_tensor(image), _tensor(reference))
    assert value.item() == pytest.approx(expected, abs=1e-10)


def test_ssim_l1_default_alpha_and_mix_alias():
    mixed = losses.create("mix")
    assert isinstance(mixed, losses.SSIML1Loss)
    assert mixed.alpha == 0.84 and mixed.l1 == "plain"
    assert isinstance(losses.create("SSIM+L1"), losses.SSIML1Loss)


def test_gaussian_weighted_l1_follows_zhao():
    image, reference = _pairs()["camera-blurred"]
    weighted = ndimage.gaussian_filter(np.abs(image - reference), 1.5, truncate=3.5)[5:-5, 5:-5]
    expected = 0.5 * (1 - _skimage_ssim(image, reference)) + 0.5 * weighted.mean()
    loss = losses.create("ssim+l1", alpha=0.5, l1="gaussian")
    assert loss(_tensor(image), _tensor(reference)).item() == pytest.approx(expected, abs=1e-10)


def test_l1_and_mse_equal_numpy():
    rng = np.random.default_rng(1)
    a, b = rng.random((2, 3, 1, 9, 7))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    assert losses.create("l1")(ta, tb).item() == pytest.approx(np.abs(a - b).mean())
    assert losses.create("mse")(ta, tb).item() == pytest.approx(((a - b) ** 2).mean())


def test_available_names():
    assert losses.available() == ["l1", "mse", "ssim", "ssim+l1"]
    for name in losses.available():
        assert isinstance(losses.create(name), torch.nn.Module)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("l2", {}, "unknown loss 'l2'; available losses: l1, mse, ssim, ssim\\+l1, mix"),
        ("ssim", {"alpha": 0.5}, "'ssim' does not take the option\\(s\\) alpha"),
        ("l1", {"alpha": 0.5}, "accepts no options"),
        ("ssim+l1", {"alpha": 1.5}, "alpha must be a number in \\[0, 1\\]"),
        ("ssim+l1", {"l1": "huber"}, "l1 must be 'plain' or 'gaussian'"),
        ("ssim", {"data_range": 0}, "data_range must be a finite number > 0"),
    ],
)
def test_bad_loss_configurations(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        losses.create(name, **kwargs)


def test_bad_loss_inputs():
    loss = losses.create("ssim+l1")
    with pytest.raises(ValueError, match="shapes differ"):
        loss(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 17))
    with pytest.raises(ValueError, match="at least 11×11"):
        loss(torch.rand(1, 1, 10, 16), torch.rand(1, 1, 10, 16))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        losses.create("l1")(torch.rand(16, 16), torch.rand(16, 16))


# -- masks (patches at the rim of the field of view) -------------------------------------------


@pytest.mark.parametrize("name", ["l1", "mse", "ssim", "ssim+l1"])
def test_pixels_outside_the_mask_do_not_count(name):
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(2, 1, 32, 32, generator=generator)
    prediction = target + 0.1 * torch.rand(2, 1, 32, 32, generator=generator)
    mask = torch.zeros(2, 1, 32, 32)
    mask[..., :, :16] = 1
    changed = prediction.clone()
    # Wildly wrong, but outside the mask, beyond the 5-pixel radius of the SSIM windows.
    changed[..., :, 21:] = 5.0
    loss = losses.create(name)
    unchanged = float(loss(prediction, target, mask))
    assert float(loss(changed, target, mask)) == pytest.approx(unchanged)
    assert float(loss(changed, target)) > float(loss(prediction, target))


@pytest.mark.parametrize("name", ["l1", "mse", "ssim", "ssim+l1"])
def test_a_full_mask_changes_nothing(name):
    generator = torch.Generator().manual_seed(1)
    prediction, target = torch.rand(2, 2, 1, 20, 20, generator=generator)
    loss = losses.create(name)
    full = torch.ones(2, 1, 20, 20)
    assert float(loss(prediction, target, full)) == pytest.approx(float(loss(prediction, target)))


def test_masked_l1_is_the_mean_over_the_counted_pixels():
    prediction = torch.zeros(1, 1, 4, 4)
    target = torch.arange(16.0).reshape(1, 1, 4, 4)
    mask = (target % 2 == 0).float()
    assert float(losses.create("l1")(prediction, target, mask)) == pytest.approx(7.0)


def test_masked_ssim_is_the_mean_of_skimages_map_over_the_mask():
    rng = np.random.default_rng(2)
    reference = rng.random((32, 32))
    image = np.clip(reference + 0.2 * rng.standard_normal((32, 32)), 0, 1)
    mask = np.zeros((32, 32), bool)
    mask[4:28, 2:20] = True
    as_tensor = lambda a: torch.from_numpy(np.asarray(a, np.float64))[None, None]  # noqa: E731
    value = losses.ssim(as_tensor(image), as_tensor(reference), mask=as_tensor(mask))
    _, ssim_map = structural_similarity(
        image,
        reference,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
        full=True,
    )
    # The loss's map is the 'valid' region, 5 pixels (the window radius) in from each side.
    valid = (slice(5, -5), slice(5, -5))
    expected = ssim_map[valid][mask[valid]].mean()
    assert float(value[0]) == pytest.approx(expected, abs=1e-6)
