"""Tests of the non-learned baselines against independent references (SciPy, scikit-image,
OpenCV) and of their restoration quality on blurred images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data, filters, restoration
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from napari_pclesr import baselines
from napari_pclesr.baselines import _gradient, _gradient_adjoint, gaussian_blur


def _tensor(array: np.ndarray, dtype=torch.float64) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype)[None, None]


def _run(name: str, frame: np.ndarray, **params) -> np.ndarray:
    return baselines.create(name, **params)(_tensor(frame))[0, 0].numpy()


@pytest.fixture(scope="module")
def sharp():
    return data.camera()[96:160, 160:240] / 255.0


@pytest.fixture(scope="module")
def blurred(sharp):
    """The sharp image blurred by the default Gaussian PSF (σ=2) plus a little noise."""
    rng = np.random.default_rng(0)
    observed = ndimage.gaussian_filter(sharp, 2.0, mode="reflect")
    return np.clip(observed + rng.normal(0, 0.003, sharp.shape), 0, 1)


def _psnr(image, reference):
    return peak_signal_noise_ratio(reference, image, data_range=1.0)


def test_available():
    assert baselines.available() == [
        "bicubic",
        "bilinear",
        "nearest",
        "richardson_lucy",
        "tv",
        "unsharp",
        "wiener",
    ]


@pytest.mark.parametrize("name", baselines.available())
@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_every_baseline_runs_like_a_model(name, scale):
    params = {"iterations": 3} if "iterations" in baselines.default_params(name) else {}
    baseline = baselines.create(name, scale=scale, **params)
    frames = torch.rand(3, 1, 6, 7, generator=torch.Generator().manual_seed(0))
    out = baseline(frames)
    assert out.shape == (3, 1, 6 * scale, 7 * scale)
    assert out.dtype == frames.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert baseline.scale == scale and baseline.name == name
    assert not list(baseline.parameters())  # nothing to train
    # frame by frame as in a batch
    torch.testing.assert_close(baseline(frames[2:]), out[2:], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", ["nearest", "bilinear", "bicubic"])
def test_interpolation_at_scale_one_is_identity(name):
    frames = torch.rand(2, 1, 5, 9)
    assert torch.equal(baselines.create(name)(frames), frames)


def test_interpolations_equal_independent_implementations():
    rng = np.random.default_rng(1)
    frame = rng.random((7, 9)).astype(np.float32)
    nearest = baselines.create("nearest", scale=4)(_tensor(frame, torch.float32))[0, 0]
    np.testing.assert_array_equal(nearest.numpy(), np.kron(frame, np.ones((4, 4))))
    from skimage.transform import resize

    bilinear = baselines.create("bilinear", scale=2)(_tensor(frame))[0, 0].numpy()
    expected = resize(frame.astype(np.float64), (14, 18), order=1, mode="edge", anti_aliasing=False)
    np.testing.assert_allclose(bilinear, expected, atol=1e-12)
    bicubic = baselines.create("bicubic", scale=2)(_tensor(frame))[0, 0].numpy()
    rows, cols = _keys_cubic_matrix(7, 2), _keys_cubic_matrix(9, 2)
    np.testing.assert_allclose(bicubic, np.clip(rows @ frame @ cols.T, 0, 1), atol=1e-12)


def _keys_cubic_matrix(size: int, scale: int, a: float = -0.75) -> np.ndarray:
    """1-D resampling matrix of Keys' cubic convolution (OpenCV's INTER_CUBIC), edges clamped.

    Written out here rather than calling OpenCV: importing cv2 next to PyQt5 breaks Qt's
    platform plugins for the widget tests that follow.
    """

    def kernel(d):
        d = np.abs(d)
        near = ((a + 2) * d - (a + 3)) * d**2 + 1
        far = ((d - 5) * d + 8) * d * a - 4 * a
        return np.where(d <= 1, near, np.where(d < 2, far, 0.0))

    source = (np.arange(size * scale) + 0.5) / scale - 0.5
    base = np.floor(source).astype(int)
    matrix = np.zeros((size * scale, size))
    for tap in range(-1, 3):
        index = base + tap
        np.add.at(
            matrix, (np.arange(size * scale), np.clip(index, 0, size - 1)), kernel(source - index)
        )
    return matrix


@pytest.mark.parametrize("sigma", [0.0, 0.8, 2.0, 30.0])
def test_gaussian_blur_equals_scipy_reflect(sigma):
    rng = np.random.default_rng(2)
    frame = rng.random((13, 17))
    ours = gaussian_blur(_tensor(frame), sigma)[0, 0].numpy()
    expected = ndimage.gaussian_filter(frame, sigma, mode="reflect") if sigma else frame
    np.testing.assert_allclose(ours, expected, atol=1e-12)


def test_blur_and_gradient_adjoints():
    # <K a, b> = <a, K b>: the reflect-boundary blur is self-adjoint; and <∇a, p> = <a, ∇ᵀp>
    generator = torch.Generator().manual_seed(3)
    a = torch.rand(1, 1, 19, 23, dtype=torch.float64, generator=generator)
    b = torch.rand(1, 1, 19, 23, dtype=torch.float64, generator=generator)
    p = torch.rand(1, 2, 19, 23, dtype=torch.float64, generator=generator)
    for sigma in (1.0, 2.0, 12.0):
        left = (gaussian_blur(a, sigma) * b).sum()
        assert left.item() == pytest.approx((a * gaussian_blur(b, sigma)).sum().item(), rel=1e-12)
    assert (_gradient(a) * p).sum().item() == pytest.approx(
        (a * _gradient_adjoint(p)).sum().item(), rel=1e-12
    )


def test_unsharp_equals_skimage(sharp):
    ours = _run("unsharp", sharp, radius=1.5, amount=0.7)
    np.testing.assert_allclose(
        ours, filters.unsharp_mask(sharp, radius=1.5, amount=0.7), atol=1e-12
    )
    np.testing.assert_allclose(_run("unsharp", sharp, amount=0.0), sharp, atol=1e-12)


def test_wiener_equals_skimage_on_the_mirrored_frame(blurred):
    # skimage's Wiener filter is circular; on the half-sample-symmetric extension, circular
    # convolution is our reflect-boundary blur. reg=[[1]] makes its regulariser a constant.
    ours = _run("wiener", blurred, sigma=2.0, balance=0.02)
    kernel = np.exp(-0.5 * (np.arange(-8, 9) / 2.0) ** 2)
    psf = np.outer(kernel, kernel) / kernel.sum() ** 2
    height, width = blurred.shape
    mirrored = np.pad(blurred, ((0, height), (0, width)), mode="symmetric")
    expected = restoration.wiener(mirrored, psf, 0.02, reg=np.array([[1.0]]), clip=False)
    np.testing.assert_allclose(ours, np.clip(expected[:height, :width], 0, 1), atol=1e-10)


@pytest.mark.parametrize("init", ["image", 0.5])
def test_richardson_lucy_equals_a_scipy_implementation(blurred, init):
    estimate = blurred.copy() if init == "image" else np.full_like(blurred, init)
    for _ in range(5):
        ratio = blurred / (ndimage.gaussian_filter(estimate, 2.0, mode="reflect") + 1e-12)
        estimate = estimate * ndimage.gaussian_filter(ratio, 2.0, mode="reflect")
    ours = _run("richardson_lucy", blurred, sigma=2.0, iterations=5, init=init)
    np.testing.assert_allclose(ours, np.clip(estimate, 0, 1), atol=1e-9)


def test_tv_without_blur_is_skimage_rof_denoising(sharp):
    frame = sharp[:40, :40]
    noisy = np.clip(frame + np.random.default_rng(4).normal(0, 0.05, frame.shape), 0, 1)
    ours = _run("tv", noisy, sigma=0.0, lam=0.05, iterations=1500)
    expected = restoration.denoise_tv_chambolle(noisy, weight=0.05, eps=1e-12, max_num_iter=4000)
    assert np.abs(ours - np.clip(expected, 0, 1)).max() < 2e-3
    assert _psnr(ours, frame) > _psnr(noisy, frame)


def _tv_objective(x, y, lam):
    blurred = ndimage.gaussian_filter(x, 2.0, mode="reflect")
    gradient = _gradient(_tensor(x))[0].numpy()
    return 0.5 * ((blurred - y) ** 2).sum() + lam * np.sqrt((gradient**2).sum(axis=0)).sum()


def test_tv_decreases_its_objective(blurred):
    lam = 0.002
    short = _run("tv", blurred, lam=lam, iterations=20)
    long = _run("tv", blurred, lam=lam, iterations=200)
    start = _tv_objective(blurred, blurred, lam)
    assert _tv_objective(long, blurred, lam) < _tv_objective(short, blurred, lam) < start


@pytest.mark.parametrize(
    ("name", "params", "gain_db"),
    [
        ("wiener", {}, 2.0),
        ("richardson_lucy", {}, 2.0),
        ("tv", {}, 2.0),
        ("unsharp", {"radius": 2.0, "amount": 1.0}, 0.5),
    ],
)
def test_deconvolution_improves_a_blurred_image(sharp, blurred, name, params, gain_db):
    restored = _run(name, blurred, **params)
    assert _psnr(restored, sharp) > _psnr(blurred, sharp) + gain_db


@pytest.mark.parametrize("name", ["unsharp", "wiener", "richardson_lucy", "tv"])
def test_restoration_at_scale_two_is_bicubic_then_restoration(sharp, name):
    low = sharp.reshape(32, 2, 40, 2).mean(axis=(1, 3))
    params = {"iterations": 5} if "iterations" in baselines.default_params(name) else {}
    enlarged = baselines.create("bicubic", scale=2)(_tensor(low))
    expected = baselines.create(name, **params)(enlarged)[0, 0].numpy()
    np.testing.assert_allclose(_run(name, low, scale=2, **params), expected, atol=1e-12)


def test_tune_unsharp_finds_the_grid_maximum(sharp):
    # LR: the frames blurred (σ=1.5); HR: the frames. Check the chosen point against a brute
    # force over the same grid with scikit-image's unsharp_mask and SSIM.
    frames = np.stack([sharp[:, :64], sharp[:, 16:], data.moon()[200:264, 200:264] / 255.0])
    low = np.stack([ndimage.gaussian_filter(f, 1.5, mode="reflect") for f in frames])
    radii, amounts = (0.5, 1.5, 3.0), (0.0, 0.5, 1.0, 2.0)
    params, scores = baselines.tune_unsharp(
        low, frames, radii=radii, amounts=amounts, batch_size=2, return_scores=True
    )
    brute = np.array(
        [
            [
                np.mean(
                    [
                        structural_similarity(
                            filters.unsharp_mask(lr, radius=r, amount=a),
                            hr,
                            gaussian_weights=True,
                            sigma=1.5,
                            use_sample_covariance=False,
                            data_range=1.0,
                        )
                        for lr, hr in zip(low, frames, strict=True)
                    ]
                )
                for a in amounts
            ]
            for r in radii
        ]
    )
    np.testing.assert_allclose(scores, brute, atol=1e-5)
    best = np.unravel_index(np.argmax(brute), brute.shape)
    assert params == {"radius": radii[best[0]], "amount": amounts[best[1]]}
    assert params["amount"] > 0  # sharpening helps a blurred image
    tuned = baselines.create("unsharp", **params)
    assert tuned.params == params


def test_tune_unsharp_checks_its_input():
    with pytest.raises(ValueError, match="enlarged 2×"):
        baselines.tune_unsharp(np.zeros((2, 8, 8)), np.zeros((2, 8, 8)), scale=2)
    with pytest.raises(ValueError, match="at least one value"):
        baselines.tune_unsharp(np.zeros((8, 8)), np.zeros((8, 8)), radii=())
    with pytest.raises(ValueError, match="RGB"):
        baselines.tune_unsharp(np.zeros((16, 16, 3)), np.zeros((16, 16, 3)))


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("lanczos", {}, "unknown baseline 'lanczos'; available: bicubic, bilinear"),
        ("wiener", {"iterations": 3}, "'wiener' does not take iterations; it takes scale, sigma"),
        ("bicubic", {"mode": "nearest"}, "'bicubic' does not take mode"),
        ("wiener", {"sigma": -1.0}, "sigma must be a finite number >= 0"),
        ("wiener", {"balance": 0.0}, "balance must be a finite number > 0"),
        ("richardson_lucy", {"iterations": 0}, "iterations must be a whole number >= 1"),
        ("richardson_lucy", {"init": "flat"}, "init must be a finite number > 0"),
        ("tv", {"lam": -0.1}, "lam must be a finite number >= 0"),
        ("unsharp", {"radius": 0.0}, "radius must be a finite number > 0"),
        ("bicubic", {"scale": 3}, "scale must be one of 1, 2, 4, 8"),
    ],
)
def test_bad_baseline_configurations(name, params, message):
    with pytest.raises(ValueError, match=message):
        baselines.create(name, **params)


def test_bad_baseline_input():
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        baselines.create("wiener")(torch.rand(1, 3, 8, 8))
