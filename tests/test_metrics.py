"""Known answers, agreement with skimage/scipy and invariants of napari_pclesr.metrics."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy import stats
from skimage import data, filters
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from napari_pclesr.metrics import (
    NOISE_RATIO_LIMIT,
    NOISE_SPACING_PX,
    ComparisonTable,
    compare,
    evaluate,
    evaluate_methods,
    gcf,
    gcf_weights,
    noise_sigma,
    noisy_contrast,
    psnr,
    ssim,
    tot_cs,
)
from napari_pclesr.metrics._noise import IMMERKAER_MASK, IMMERKAER_SCALE


def skimage_ssim(image, reference, data_range=1.0, full=False):
    return structural_similarity(
        image,
        reference,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=data_range,
        full=full,
    )


@pytest.fixture(scope="module")
def camera():
    return data.camera() / 255.0


@pytest.fixture(scope="module")
def scene(camera):
    """HR-hat, LR and two SR stacks (3 frames of 64×64) with known orderings of quality."""
    rng = np.random.default_rng(7)
    hr = np.stack([camera[200:264, 220:284], camera[300:364, 100:164], camera[50:114, 300:364]])
    lr = filters.gaussian(hr, sigma=(0, 1.5, 1.5))
    sharpened = np.clip(lr + 1.0 * (lr - filters.gaussian(lr, sigma=(0, 1, 1))), 0, 1)
    noisy = np.clip(hr + 0.08 * rng.standard_normal(hr.shape), 0, 1)
    return hr, lr, sharpened, noisy


# --- GCF ----------------------------------------------------------------------------------


def reference_gcf(image, mask=None):
    """A direct, loop-based reading of the documented GCF rule, for small images."""
    linear = np.clip(image.astype(float), 0, 1) ** 2.2
    inside = np.ones(image.shape, bool) if mask is None else mask.copy()
    total = 0.0
    for weight in gcf_weights():
        perceptual = 100 * np.sqrt(linear)
        height, width = linear.shape
        contrasts = []
        for r in range(height):
            for c in range(width):
                if not inside[r, c]:
                    continue
                diffs = [
                    abs(perceptual[r, c] - perceptual[rr, cc])
                    for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1))
                    if 0 <= rr < height and 0 <= cc < width and inside[rr, cc]
                ]
                if diffs:
                    contrasts.append(np.mean(diffs))
        total += weight * (np.mean(contrasts) if contrasts else 0.0)
        new_shape = ((height + 1) // 2, (width + 1) // 2)
        next_linear, next_inside = np.zeros(new_shape), np.zeros(new_shape, bool)
        for r in range(new_shape[0]):
            for c in range(new_shape[1]):
                block = (slice(2 * r, 2 * r + 2), slice(2 * c, 2 * c + 2))
                next_linear[r, c] = linear[block].mean()
                next_inside[r, c] = inside[block].all()
        linear, inside = next_linear, next_inside
    return total


def test_gcf_weights_are_the_published_ones():
    i = np.arange(1, 10)
    expected = (-0.406385 * i / 9 + 0.334573) * i / 9 + 0.0877526
    np.testing.assert_allclose(gcf_weights(), expected, rtol=0, atol=1e-15)


def test_gcf_of_camera_is_the_known_value(camera):
    assert round(gcf(camera), 4) == 5.5771
    assert gcf(data.camera()) == pytest.approx(gcf(camera), abs=1e-12)  # uint8 is /255


@pytest.mark.parametrize("shape", [(2, 2), (8, 8), (64, 48), (512, 512)])
def test_gcf_of_a_checkerboard_is_100_w1(shape):
    board = (np.indices(shape).sum(axis=0) % 2).astype(float)
    assert gcf(board) == pytest.approx(11.99103, abs=5e-6)
    assert gcf(board) == pytest.approx(100 * gcf_weights()[0], abs=1e-12)


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (33, 31), (64, 64)])
def test_gcf_of_a_flat_image_is_zero(shape):
    assert gcf(np.full(shape, 0.37)) == 0.0


@pytest.mark.parametrize("shape", [(13, 9), (8, 8), (1, 6), (17, 2)])
def test_gcf_matches_a_direct_implementation_with_odd_sizes(shape):
    image = np.random.default_rng(shape[0] * 100 + shape[1]).random(shape)
    assert gcf(image) == pytest.approx(reference_gcf(image), rel=1e-12, abs=1e-12)


def test_masked_gcf_matches_a_direct_implementation():
    rng = np.random.default_rng(3)
    image = rng.random((15, 12))
    mask = np.hypot(*np.indices(image.shape) - np.array([7, 6])[:, None, None]) < 6
    assert gcf(image, mask=mask) == pytest.approx(reference_gcf(image, mask), rel=1e-12)


def test_gcf_grows_with_contrast_stretching(camera):
    centred = camera - camera.mean()
    values = [gcf(np.clip(camera.mean() + gain * centred, 0, 1)) for gain in (0.25, 0.5, 1.0)]
    assert values[0] < values[1] < values[2]


def test_gcf_of_a_stack_is_per_frame(camera):
    frames = np.stack([camera[:96, :96], camera[100:196, 200:296], np.zeros((96, 96))])
    result = gcf(frames)
    assert result.shape == (3,)
    np.testing.assert_allclose(result, [gcf(frame) for frame in frames], rtol=1e-13)


def test_gcf_mask_full_is_no_mask_and_excludes_the_mask_border(camera):
    image = camera[:100, :100]
    assert gcf(image, mask=np.ones(image.shape, bool)) == pytest.approx(gcf(image), rel=1e-13)
    # A flat inside next to a bright outside: the step lies on the mask border and is ignored.
    step = np.full((40, 40), 0.2)
    step[:, 20:] = 0.9
    inside = np.zeros(step.shape, bool)
    inside[:, :20] = True
    assert gcf(step) > 1
    assert gcf(step, mask=inside) == 0.0


def test_gcf_ignores_what_lies_outside_the_mask(camera):
    image = camera[:64, :64].copy()
    mask = np.zeros(image.shape, bool)
    mask[8:56, 8:56] = True
    changed = image.copy()
    changed[~mask] = np.random.default_rng(0).random(np.count_nonzero(~mask))
    assert gcf(changed, mask=mask) == pytest.approx(gcf(image, mask=mask), rel=1e-13)
    assert gcf(changed) != pytest.approx(gcf(image), rel=1e-3)


def test_gcf_clips_small_overshoots_and_refuses_other_scales(camera):
    image = camera[:64, :64] * 1.3 - 0.1
    assert gcf(image) == pytest.approx(gcf(np.clip(image, 0, 1)), rel=1e-13)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        gcf(data.camera().astype(float))
    with pytest.raises(ValueError, match="uint16"):
        gcf(data.camera().astype(np.uint16))


# --- SSIM and PSNR --------------------------------------------------------------------------


def ssim_pairs(camera):
    rng = np.random.default_rng(11)
    crop = camera[100:228, 150:278]
    random = rng.random((70, 90))
    return {
        "random": (random, rng.random((70, 90))),
        "blurred": (filters.gaussian(crop, 2), crop),
        "noisy": (np.clip(crop + 0.1 * rng.standard_normal(crop.shape), 0, 1), crop),
        "odd-size": (filters.gaussian(random[:37, :53], 1), random[:37, :53]),
        "almost flat": (
            np.full((40, 40), 0.5) + 1e-4 * rng.random((40, 40)),
            np.full((40, 40), 0.5),
        ),
    }


@pytest.mark.parametrize("kind", ["random", "blurred", "noisy", "odd-size", "almost flat"])
def test_ssim_agrees_with_skimage(camera, kind):
    image, reference = ssim_pairs(camera)[kind]
    assert ssim(image, reference) == pytest.approx(skimage_ssim(image, reference), abs=1e-6)
    scaled = ssim(255 * image, 255 * reference, data_range=255)
    assert scaled == pytest.approx(skimage_ssim(image, reference), abs=1e-6)


def test_ssim_of_an_image_with_itself_is_one(camera):
    assert ssim(camera, camera) == pytest.approx(1.0, abs=1e-12)
    assert ssim(camera.astype(np.float32), camera) == pytest.approx(1.0, abs=1e-12)


def test_ssim_of_a_stack_is_per_frame(camera):
    pairs = ssim_pairs(camera)
    images = np.stack([pairs["blurred"][0], pairs["noisy"][0]])
    references = np.stack([pairs["blurred"][1], pairs["noisy"][1]])
    values = ssim(images, references)
    assert values.shape == (2,)
    np.testing.assert_allclose(
        values, [skimage_ssim(a, b) for a, b in zip(images, references, strict=True)], atol=1e-6
    )


def test_masked_ssim_is_the_map_mean_over_the_eroded_mask(camera):
    image, reference = ssim_pairs(camera)["noisy"]
    mask = np.hypot(*(np.indices(image.shape) - 64)) < 50
    _, full_map = skimage_ssim(image, reference, full=True)
    eroded = ndi.binary_erosion(mask, structure=np.ones((11, 11)), border_value=0)
    assert ssim(image, reference, mask=mask) == pytest.approx(full_map[eroded].mean(), abs=1e-6)
    assert ssim(image, reference, mask=np.ones(mask.shape, bool)) == pytest.approx(
        skimage_ssim(image, reference), abs=1e-12
    )


def test_masked_ssim_ignores_the_outside(camera):
    image, reference = ssim_pairs(camera)["noisy"]
    mask = np.zeros(image.shape, bool)
    mask[20:100, 30:110] = True
    scrambled = image.copy()
    scrambled[~mask] = np.random.default_rng(1).random(np.count_nonzero(~mask))
    assert ssim(scrambled, reference, mask=mask) == ssim(image, reference, mask=mask)
    assert abs(ssim(scrambled, reference) - ssim(image, reference)) > 1e-3


def test_ssim_with_per_frame_masks(camera):
    image, reference = ssim_pairs(camera)["blurred"]
    masks = np.zeros((2, *image.shape), bool)
    masks[0, :64] = True
    masks[1, 64:] = True
    values = ssim(np.stack([image, image]), np.stack([reference, reference]), mask=masks)
    np.testing.assert_allclose(
        values, [ssim(image, reference, mask=m) for m in masks], rtol=0, atol=1e-15
    )


def test_ssim_refuses_bad_input(camera):
    image = camera[:64, :64]
    with pytest.raises(ValueError, match="same shape"):
        ssim(image, camera[:64, :63])
    with pytest.raises(ValueError, match="11×11"):
        ssim(image[:10, :40], image[:10, :40])
    with pytest.raises(ValueError, match="data_range"):
        ssim(image, image, data_range=0)
    with pytest.raises(ValueError, match="mask"):
        ssim(image, image, mask=np.ones((10, 10), bool))
    with pytest.raises(ValueError, match="no pixel whose whole"):
        ssim(image, image, mask=np.pad(np.ones((8, 8), bool), 28))
    with pytest.raises(ValueError, match="RGB"):
        ssim(np.zeros((32, 32, 3)), np.zeros((32, 32, 3)))


def test_psnr_agrees_with_skimage_and_uses_the_mask(camera):
    image, reference = ssim_pairs(camera)["noisy"]
    expected = peak_signal_noise_ratio(reference, image, data_range=1.0)
    assert psnr(image, reference) == pytest.approx(expected, abs=1e-10)
    mask = np.zeros(image.shape, bool)
    mask[10:50, 20:90] = True
    expected_masked = 10 * np.log10(1.0 / np.mean((image[mask] - reference[mask]) ** 2))
    assert psnr(image, reference, mask=mask) == pytest.approx(expected_masked, abs=1e-10)
    assert psnr(reference, reference) == math.inf


# --- Tot_cs ----------------------------------------------------------------------------------


def test_tot_cs_definition_and_properties():
    assert tot_cs(0.8, 0.5) == pytest.approx(0.5 * (0.8 + 1 / (1 + math.exp(-1.0))), abs=1e-15)
    assert tot_cs(0.7, 0.0) == pytest.approx(0.6)  # the LR baseline: ΔGCF = 0 gives ½
    ssim_grid = np.linspace(-0.2, 1.0, 13)
    delta_grid = np.linspace(-5, 5, 41)
    values = tot_cs(ssim_grid[:, None], delta_grid[None, :])
    assert np.all(np.diff(values, axis=1) > 0)  # strictly increasing in ΔGCF
    assert np.all(np.diff(values, axis=0) >= 0)  # non-decreasing in SSIM ...
    assert np.all(np.diff(values[2:], axis=0) > 0)  # ... and strictly so for SSIM > 0
    assert values.min() >= 0 and values.max() <= 1


def test_tot_cs_of_a_method_does_not_depend_on_the_other_methods(scene):
    hr, lr, sharpened, noisy = scene
    alone = compare(evaluate_methods({"sharp": sharpened}, hr, lr))
    together = compare(evaluate_methods({"noisy": noisy, "sharp": sharpened}, hr, lr))
    for key in ("tot_cs", "ssim", "delta_gcf_lr"):
        assert alone["sharp"].mean[key] == together["sharp"].mean[key]
        assert alone["LR"].mean[key] == together["LR"].mean[key]


# --- noise (Immerkær) ------------------------------------------------------------------------


def smooth_image(shape=(256, 256)):
    """A smooth blob on a ramp: structure the Immerkær mask almost entirely cancels."""
    rows, cols = np.indices(shape) / np.array(shape)[:, None, None]
    return 0.2 + 0.1 * cols + 0.5 * np.exp(-((rows - 0.4) ** 2 + (cols - 0.5) ** 2) / 0.08)


@pytest.mark.parametrize("spacing", [1, 2, 4])
@pytest.mark.parametrize("sigma", [0.005, 0.02, 0.05])
def test_noise_estimate_recovers_the_sigma_of_gaussian_noise(sigma, spacing):
    rng = np.random.default_rng(11)
    noise = rng.normal(0.0, sigma, (4, 256, 256))
    for background in (np.full((256, 256), 0.5), smooth_image()):
        estimate = noise_sigma(background + noise, spacing=spacing)
        # 4 × ~62,000 samples: the estimate's own spread is about 0.3 % of sigma.
        np.testing.assert_allclose(estimate, sigma, rtol=0.02)
    assert noise_sigma(smooth_image(), spacing=spacing) < 0.01 * sigma  # structure cancels


def test_noise_estimate_is_the_published_3x3_filter_inside_the_mask():
    rng = np.random.default_rng(5)
    image = smooth_image((80, 96)) + rng.normal(0, 0.03, (80, 96))
    response = np.abs(ndi.correlate(image, IMMERKAER_MASK))[1:-1, 1:-1]
    # Immerkær 1996, eq. (2) and (4): the mask and σ = √(π/2) · mean|I ∗ N| / 6.
    np.testing.assert_array_equal(IMMERKAER_MASK, [[1, -2, 1], [-2, 4, -2], [1, -2, 1]])
    assert math.isclose(IMMERKAER_SCALE, math.sqrt(math.pi / 2) / 6, rel_tol=1e-12)
    assert noise_sigma(image) == pytest.approx(IMMERKAER_SCALE * response.mean(), rel=1e-12)
    mask = np.hypot(*(np.indices(image.shape) - np.array([[[40]], [[48]]]))) < 30
    # Only pixels whose whole 3×3 window lies inside the mask count.
    whole = ndi.binary_erosion(mask, np.ones((3, 3)), border_value=0)[1:-1, 1:-1]
    expected = IMMERKAER_SCALE * response[whole].mean()
    assert noise_sigma(image, mask) == pytest.approx(expected, rel=1e-12)
    # With taps 3 px apart, the same mask dilated: taps at 0, ±3.
    dilated = np.zeros((7, 7))
    dilated[::3, ::3] = IMMERKAER_MASK
    spaced = np.abs(ndi.correlate(image, dilated))[3:-3, 3:-3]
    assert noise_sigma(image, spacing=3) == pytest.approx(IMMERKAER_SCALE * spaced.mean())
    # Nothing outside the mask matters.
    outside = image.copy()
    outside[~mask] = rng.random(int((~mask).sum()))
    assert noise_sigma(outside, mask) == pytest.approx(noise_sigma(image, mask), rel=1e-12)


def test_noise_estimate_of_a_stack_is_per_frame_and_scales_with_intensity():
    rng = np.random.default_rng(2)
    stack = 0.5 + rng.normal(0, 1, (3, 64, 64)) * np.array([0.01, 0.02, 0.04])[:, None, None]
    estimates = noise_sigma(stack)
    assert estimates.shape == (3,)
    assert [noise_sigma(frame) for frame in stack] == pytest.approx(estimates, rel=1e-12)
    np.testing.assert_allclose(noise_sigma(0.5 * stack), 0.5 * estimates, rtol=1e-12)
    assert np.all(np.diff(estimates) > 0)


def test_noise_estimate_refuses_what_it_cannot_measure():
    with pytest.raises(ValueError, match="spacing"):
        noise_sigma(np.zeros((16, 16)), spacing=0)
    with pytest.raises(ValueError, match="at least 9×9"):
        noise_sigma(np.zeros((8, 16)), spacing=4)
    mask = np.zeros((16, 16), bool)
    mask[4:6, 4:10] = True
    with pytest.raises(ValueError, match="neighbourhood"):
        noise_sigma(np.zeros((16, 16)), mask)


def test_noise_ratio_is_relative_to_the_lr_and_flags_contrast_bought_with_noise(scene):
    hr, lr, sharpened, noisy = scene
    results = evaluate_methods({"sharp": sharpened, "noisy": noisy}, hr, lr)
    lr_noise = noise_sigma(lr, spacing=NOISE_SPACING_PX)
    np.testing.assert_allclose(results["LR"].noise, lr_noise)
    np.testing.assert_array_equal(results["LR"].noise_ratio, 1.0)
    expected = noise_sigma(noisy, spacing=NOISE_SPACING_PX) / lr_noise
    np.testing.assert_allclose(results["noisy"].noise_ratio, expected, rtol=1e-12)
    table = compare(results)
    assert table["noisy"].noisy_contrast and not table["sharp"].noisy_contrast
    assert not table["LR"].noisy_contrast
    assert "noisy ⚠" in table.to_text() and "⚠ = contrast gain" in table.to_text()
    # The flag needs both: a contrast gain and noise above the limit.
    assert noisy_contrast(0.1, NOISE_RATIO_LIMIT + 0.1)
    assert not noisy_contrast(-0.1, 10 * NOISE_RATIO_LIMIT)
    assert not noisy_contrast(2.0, NOISE_RATIO_LIMIT)


def test_wiener_is_flagged_on_the_demos_data_and_a_mildly_smoothing_model_is_not():
    """The calibration of NOISE_RATIO_LIMIT (docs/metrics.md) on one of the demo's test frames:
    a 576×576 phantom (seed 1000) through a 30,000-fibre bundle with seed 000's noise."""
    from napari_pclesr import FibreLayout, Simulator
    from napari_pclesr.baselines import create
    from napari_pclesr.data import phantom_sequence
    from napari_pclesr.fibre import fibre_count_for
    from napari_pclesr.infer import super_resolve

    shape = (576, 576)
    hr = phantom_sequence(1, shape, seed=1000).frames
    simulator = Simulator(FibreLayout.synthetic(shape, fibre_count_for(shape), seed=1000))
    lr = simulator.simulate(hr, sigma_mult=0.05, sigma_add=0.01, seed=1000)
    mask = simulator.fov_mask
    assert create("wiener").params["sigma"] == 2.0  # the seed paper's baseline
    methods = {
        "Wiener": super_resolve(lr, "wiener", device="cpu", fov_mask=mask),
        "unsharp": super_resolve(lr, "unsharp", device="cpu", fov_mask=mask),
        "mild smoothing": ndi.gaussian_filter(lr, (0, 0.7, 0.7)) * mask,
        "truth": hr * mask,
    }
    table = compare(evaluate_methods(methods, hr * mask, lr, mask=mask))
    assert table["Wiener"].noisy_contrast
    assert table["Wiener"].mean["noise_ratio"] > 1.1 * NOISE_RATIO_LIMIT  # not a near miss
    for name in ("unsharp", "mild smoothing", "truth"):
        assert not table[name].noisy_contrast, name
    assert table["truth"].mean["noise_ratio"] < 0.8 * NOISE_RATIO_LIMIT
    # Tot_cs keeps its definition: Wiener still tops it, the flag only shows why.
    assert table["Wiener"].mean["tot_cs"] > table["unsharp"].mean["tot_cs"]


# --- evaluate and compare --------------------------------------------------------------------


def test_evaluate_gives_the_papers_scores(scene):
    hr, lr, sharpened, _ = scene
    scores = evaluate(sharpened, hr, lr)
    np.testing.assert_allclose(
        scores.ssim, [skimage_ssim(s, h) for s, h in zip(sharpened, hr, strict=True)], atol=1e-6
    )
    np.testing.assert_allclose(scores.gcf, gcf(sharpened), rtol=1e-14)
    np.testing.assert_allclose(scores.delta_gcf_lr, gcf(sharpened) - gcf(lr), rtol=1e-12)
    np.testing.assert_allclose(scores.delta_gcf_hr, gcf(sharpened) - gcf(hr), rtol=1e-12)
    np.testing.assert_allclose(scores.tot_cs, tot_cs(scores.ssim, scores.delta_gcf_lr))
    assert np.all(scores.delta_gcf_lr > 0)  # sharpening raises the contrast of the blurred LR
    single = evaluate(sharpened[1], hr[1], lr[1])
    assert single.n_frames == 1
    assert single.ssim[0] == pytest.approx(scores.ssim[1], abs=1e-15)


def test_evaluate_uses_the_mask_everywhere(scene):
    hr, lr, sharpened, _ = scene
    mask = np.zeros(hr.shape[1:], bool)
    mask[5:60, 8:58] = True
    scores = evaluate(sharpened, hr, lr, mask=mask)
    np.testing.assert_allclose(scores.ssim, ssim(sharpened, hr, mask=mask), rtol=0, atol=0)
    np.testing.assert_allclose(scores.psnr, psnr(sharpened, hr, mask=mask), rtol=0, atol=0)
    np.testing.assert_allclose(scores.gcf, gcf(sharpened, mask=mask), rtol=0, atol=0)


def test_evaluate_refuses_mismatched_and_unscaled_input(scene):
    hr, lr, sharpened, _ = scene
    with pytest.raises(ValueError, match="same shape"):
        evaluate(sharpened[:2], hr, lr)
    with pytest.raises(ValueError, match="uint16"):
        evaluate((sharpened * 4095).astype(np.uint16), hr, lr)
    with pytest.raises(ValueError, match="baseline"):
        evaluate_methods({"LR": sharpened}, hr, lr)


def test_compare_statistics_match_numpy_and_scipy(scene):
    hr, lr, sharpened, noisy = scene
    results = evaluate_methods({"sharp": sharpened, "noisy": noisy}, hr, lr)
    table = compare(results)
    assert isinstance(table, ComparisonTable)
    assert [row.name for row in table.rows] == ["LR", "sharp", "noisy"]
    baseline = results["LR"]
    np.testing.assert_array_equal(baseline.delta_gcf_lr, 0.0)
    for name in ("sharp", "noisy"):
        row = table[name]
        for key in ("ssim", "gcf", "tot_cs", "delta_gcf_hr"):
            values = results[name].values(key)
            assert row.mean[key] == pytest.approx(np.mean(values), rel=1e-14)
            assert row.std[key] == pytest.approx(np.std(values, ddof=1), rel=1e-12)
        for key in ("ssim", "gcf", "tot_cs"):
            expected = stats.ttest_rel(results[name].values(key), baseline.values(key)).pvalue
            assert row.p_value[key] == pytest.approx(expected, rel=1e-12)
    assert all(math.isnan(p) for p in table["LR"].p_value.values())
    # Noise inflates GCF but not Tot_cs, which SSIM holds back (the papers' argument).
    assert table["noisy"].mean["delta_gcf_lr"] > table["sharp"].mean["delta_gcf_lr"] > 0
    assert table["noisy"].mean["tot_cs"] < table["LR"].mean["tot_cs"]
    assert table["sharp"].mean["tot_cs"] > table["LR"].mean["tot_cs"]


def test_compare_with_one_frame_gives_nan_p_values_and_std(scene):
    hr, lr, sharpened, _ = scene
    table = compare(evaluate_methods({"sharp": sharpened[0]}, hr[0], lr[0]))
    row = table["sharp"]
    assert row.n_frames == 1
    assert all(math.isnan(p) for p in row.p_value.values())
    assert math.isnan(row.std["ssim"])
    assert "±" not in table.to_text().splitlines()[2]


def test_compare_refuses_a_missing_baseline_and_unequal_frames(scene):
    hr, lr, sharpened, _ = scene
    results = evaluate_methods({"sharp": sharpened}, hr, lr)
    with pytest.raises(ValueError, match="baseline"):
        compare({"sharp": results["sharp"]})
    with pytest.raises(ValueError, match="different numbers of frames"):
        compare({"LR": results["LR"], "short": results["sharp"].take(slice(0, 2))})


def test_table_text_csv_and_json(scene, tmp_path):
    hr, lr, sharpened, noisy = scene
    table = compare(evaluate_methods({"sharp": sharpened, "noisy": noisy}, hr, lr))
    text = table.to_text()
    assert "Tot_cs = ½·[clip(SSIM, 0, 1) + 1/(1 + exp(−ΔGCF_LR / 0.5))]" in text
    assert f"{table['sharp'].mean['tot_cs']:.4f} ± {table['sharp'].std['tot_cs']:.4f}" in text

    path = table.to_csv(tmp_path / "table.csv", frame=2)
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    assert [row["method"] for row in rows] == ["LR", "sharp", "noisy"]
    assert float(rows[1]["tot_cs_mean"]) == pytest.approx(table["sharp"].mean["tot_cs"])
    assert float(rows[2]["ssim_frame"]) == pytest.approx(table.scores["noisy"].ssim[2])
    assert any(line.startswith("# Tot_cs =") for line in lines)
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind

    payload = json.loads(json.dumps(table.to_dict(), allow_nan=False))
    assert payload["per_frame"]["noisy"]["ssim"] == pytest.approx(table.scores["noisy"].ssim)
    assert payload["summary"][0]["ssim_p"] is None  # NaN p-value of the baseline
