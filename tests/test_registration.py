"""Registration, mosaics and HR-hat against phantoms whose true offsets and HR are known."""

import dataclasses
import json
import warnings

import numpy as np
import pytest

from napari_pclesr import FibreLayout, Simulator
from napari_pclesr.data import phantom, phantom_sequence
from napari_pclesr.fibre import fibre_count_for
from napari_pclesr.metrics import psnr, ssim
from napari_pclesr.registration import (
    Registration,
    SegmentWarning,
    build_mosaic,
    canvas_geometry,
    hr_hat_sequence,
    iter_register,
    refine_affine,
    register_sequence,
)
from napari_pclesr.simulate.noise import add_fibre_noise

SIZE = 160


@pytest.fixture(scope="module")
def simulator():
    return Simulator(FibreLayout.synthetic((SIZE, SIZE), fibre_count_for((SIZE, SIZE)), seed=0))


@pytest.fixture(scope="module")
def noisy_sequence(simulator):
    """12 phantom frames through one bundle with seed 000's noise: the hard case, where every
    frame carries the same fibre pattern. Returns (truth, noisy signals, LR frames)."""
    truth = phantom_sequence(12, (SIZE, SIZE), seed=3, speed=3.0)
    signals = add_fibre_noise(
        simulator.fibre_signals(truth.frames), 0.05, 0.01, np.random.default_rng(0)
    )
    return truth, signals, simulator.interpolate(signals)


@pytest.fixture(scope="module")
def registration(noisy_sequence, simulator):
    return register_sequence(noisy_sequence[2], simulator.fov_mask, device="cpu")


def true_offsets(truth):
    # phantom_sequence gives each frame's top-left in canvas coordinates: frame t at (r, c)
    # shows the canvas at (r, c) + offsets[t], so relative to frame 0 the offset is the
    # difference (the issue's convention: frame t (r, c) = frame 0 (r + dr, c + dc)).
    return truth.offsets - truth.offsets[0]


def mean_scores(images, references, mask):
    return np.mean(
        [
            [ssim(x, y, mask=mask), psnr(x, y, mask=mask)]
            for x, y in zip(images, references, strict=True)
        ],
        axis=0,
    )


# -- offsets ---------------------------------------------------------------------------------------


def test_offsets_follow_the_issue_sign_convention():
    canvas = phantom((260, 260), seed=5)
    corners = [(40, 50), (47, 43), (55, 39)]  # frame t is the canvas from corners[t]
    frames = np.stack([canvas[r : r + 192, c : c + 192] for r, c in corners])
    result = register_sequence(frames, np.ones((192, 192), bool), device="cpu")
    # pixel (r, c) of frame t shows canvas (r + corner_t) = frame 0 at (r, c) + corner_t - corner_0
    expected = np.array(corners, float) - corners[0]
    np.testing.assert_allclose(result.offsets, expected, atol=0.05)
    assert frames[1][10, 10] == frames[0][10 + 7, 10 - 7]


def test_offsets_on_the_noisy_phantom_are_within_a_quarter_pixel(noisy_sequence, registration):
    truth, _, _ = noisy_sequence
    error = registration.offsets - true_offsets(truth)
    rms = np.sqrt(np.mean(np.sum(error**2, axis=1)))
    assert rms < 0.25
    assert not registration.rejected.any() and len(registration.segments) == 1
    # Redundant pairs (gaps 1, 2, 4) agree with the solved offsets to a small fraction of a pixel.
    assert registration.pairs.used.all()
    assert np.nanmax(registration.pairs.residual) < 0.25
    assert np.all(registration.quality.ncc > 0.9)


def test_lucas_kanade_is_more_accurate_than_correlation_peaks(noisy_sequence, simulator):
    truth, _, lr = noisy_sequence
    errors = {}
    for refine in ("lk", "parabola", "upsample"):
        result = register_sequence(
            lr[:6], simulator.fov_mask, refine=refine, gaps=(1,), device="cpu"
        )
        error = result.offsets - true_offsets(truth)[:6]
        errors[refine] = np.sqrt(np.mean(np.sum(error**2, axis=1)))
    # Correlation peaks of windowed frames are biased (by tenths of a pixel per pair, which add
    # up along a chain of consecutive pairs); Lucas-Kanade is not.
    assert errors["lk"] < 0.5 * min(errors["parabola"], errors["upsample"])


def test_progress_is_reported_per_batch(noisy_sequence, simulator):
    from napari_pclesr.registration._register import drain

    events = []
    runner = iter_register(noisy_sequence[2], simulator.fov_mask, batch_frames=5, device="cpu")
    result = drain(runner, events.append)
    assert [(e.done, e.total) for e in events] == [(5, 12), (10, 12), (12, 12)]
    assert isinstance(result, Registration)


# -- mosaic and HR-hat ---------------------------------------------------------------------------


def test_mosaic_of_true_frames_reproduces_the_phantom_canvas():
    from scipy import ndimage

    truth = phantom_sequence(6, (128, 128), seed=4, speed=5.0)
    result = register_sequence(truth.frames, np.ones((128, 128), bool), device="cpu")
    mosaic, weight = build_mosaic(truth.frames, result)
    origin, shape = canvas_geometry(result, 0)
    assert mosaic.shape == weight.shape == shape
    assert weight.max() == pytest.approx(6, abs=0.01)  # six frames overlap somewhere
    # Canvas pixel p is frame-0 point p + origin, i.e. phantom canvas point p + origin + o_0
    # (sampled like the frames were: a cubic spline).
    rows, cols = np.nonzero(weight > 0.99)
    where = np.stack([rows, cols]) + (origin + truth.offsets[0])[:, None]
    reference = ndimage.map_coordinates(truth.canvas, where, order=3)
    difference = np.abs(mosaic[rows, cols] - reference)
    assert np.median(difference) < 0.02 and np.percentile(difference, 99) < 0.15


def test_hr_hat_is_closer_to_the_true_hr_than_the_lr(noisy_sequence, registration, simulator):
    truth, _, lr = noisy_sequence
    hr_hat = hr_hat_sequence(lr, registration)
    assert hr_hat.shape == lr.shape and hr_hat.dtype == np.float32
    frames = np.asarray(hr_hat)
    mask = simulator.fov_mask
    assert np.all(frames[:, ~mask] == 0)
    lr_ssim, lr_psnr = mean_scores(lr, truth.frames, mask)
    hat_ssim, hat_psnr = mean_scores(frames, truth.frames, mask)
    assert hat_ssim > lr_ssim + 0.01
    assert hat_psnr > lr_psnr + 0.3


def test_the_gain_grows_with_the_number_of_fused_frames(simulator):
    truth = phantom_sequence(16, (SIZE, SIZE), seed=2, speed=2.0)
    lr = simulator.simulate(truth.frames, seed=1)
    mask = simulator.fov_mask
    gains = []
    for count in (4, 16):
        result = register_sequence(lr[:count], mask, device="cpu")
        hat = np.asarray(hr_hat_sequence(lr[:count], result))
        # Scored on the same four frames, fused with more or fewer neighbours.
        gains.append(
            mean_scores(hat[:4], truth.frames[:4], mask)
            - mean_scores(lr[:4], truth.frames[:4], mask)
        )
    assert gains[0][0] > 0 and gains[0][1] > 0
    assert gains[1][0] > gains[0][0] and gains[1][1] > gains[0][1]


def test_fibre_level_pooling_is_sharper_than_the_mosaic_average(
    noisy_sequence, registration, simulator
):
    truth, signals, lr = noisy_sequence
    mask = simulator.fov_mask
    mosaic_hat = np.asarray(hr_hat_sequence(lr, registration))
    fibre_hat = np.asarray(
        hr_hat_sequence(lr, registration, method="fibre", layout=simulator.layout, signals=signals)
    )
    assert (
        mean_scores(fibre_hat, truth.frames, mask)[0]
        > mean_scores(mosaic_hat, truth.frames, mask)[0] + 0.05
    )
    with pytest.raises(ValueError, match="needs the fibre layout"):
        build_mosaic(lr, registration, method="fibre")


def test_affine_refinement_recovers_rotated_frames(simulator):
    """Frames cut from the canvas with small rotations and scale changes (a distorting probe):
    translation alone fuses them badly, the affine refinement does not."""
    from scipy import ndimage

    truth = phantom_sequence(8, (SIZE, SIZE), seed=6, speed=3.0)
    rng = np.random.default_rng(1)
    centre = (SIZE - 1) / 2
    frames = []
    for offset in truth.offsets:
        angle, scale = rng.normal(0, 0.03), 1 + rng.normal(0, 0.01)
        matrix = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        shift = centre + offset - matrix @ np.array([centre, centre])
        frames.append(
            ndimage.affine_transform(truth.canvas, matrix, offset=shift, output_shape=(SIZE, SIZE))
        )
    hr = np.clip(np.stack(frames), 0, 1).astype(np.float32)
    lr = simulator.simulate(hr, seed=2)
    mask = simulator.fov_mask
    translation = register_sequence(lr, mask, device="cpu")
    affine = refine_affine(lr, translation, device="cpu")
    assert affine.transforms.shape == (8, 2, 3)
    assert affine.parameters["model"] == "affine"
    translated = mean_scores(np.asarray(hr_hat_sequence(lr, translation)), hr, mask)
    refined = mean_scores(np.asarray(hr_hat_sequence(lr, affine)), hr, mask)
    assert refined[0] > translated[0] + 0.02 and refined[1] > translated[1]


# -- flags, segments and bad input -----------------------------------------------------------------


def test_scene_cut_and_dark_frame_are_flagged(simulator):
    first = phantom_sequence(8, (SIZE, SIZE), seed=1).frames
    second = phantom_sequence(8, (SIZE, SIZE), seed=7, kind="oesophagus").frames
    hr = np.concatenate([first, second])
    hr[4] = 0.02  # the probe lifted off: a dark frame
    lr = simulator.simulate(hr, seed=0)
    with pytest.warns(SegmentWarning, match="2 segment"):
        result = register_sequence(lr, simulator.fov_mask, device="cpu")
    assert result.rejected.tolist() == [i == 4 for i in range(16)]
    assert result.reasons[4].startswith("dark")
    assert [members.tolist() for members in result.segments] == [
        [0, 1, 2, 3, 5, 6, 7],
        list(range(8, 16)),
    ]
    assert np.isnan(result.offsets[4]).all()
    assert np.allclose(result.offsets[[0, 8]], 0)
    cut_pairs = (result.pairs.first < 8) & (result.pairs.second >= 8)
    assert not result.pairs.used[cut_pairs].any()
    # Frames next to the dark one are linked through the pairs that skip it.
    hat = hr_hat_sequence(lr, result)
    assert np.isnan(hat[4]).all() and np.isfinite(hat[3]).all()


def test_frames_that_overlap_nothing_are_each_their_own_segment(simulator):
    # Different places of one tissue type (the probe jumping around faster than the frame rate).
    frames = np.stack([phantom((SIZE, SIZE), kind="oesophagus", seed=seed) for seed in range(6)])
    with pytest.warns(SegmentWarning, match="no frame of the 6 overlaps"):
        result = register_sequence(
            simulator.simulate(frames, seed=1), simulator.fov_mask, device="cpu"
        )
    assert len(result.segments) == 6 and result.rejected.all()
    assert all(reason.startswith("unmatched") for reason in result.reasons)
    with pytest.raises(ValueError, match="no frame of the sequence was kept"):
        build_mosaic(frames, result)


def test_a_jump_beyond_max_shift_splits_the_sequence():
    canvas = phantom((260, 260), seed=5)
    corners = [(0, 0), (3, 2), (6, 4), (60, 50), (63, 52), (66, 54)]  # a 54-px jump at frame 3
    frames = np.stack([canvas[r : r + 192, c : c + 192] for r, c in corners])
    mask = np.ones((192, 192), bool)
    # By default (half the FoV), the jump is plausible motion and the frames stay together.
    assert len(register_sequence(frames, mask, device="cpu").segments) == 1
    with pytest.warns(SegmentWarning, match="2 segment"):
        result = register_sequence(frames, mask, max_shift=10, device="cpu")
    assert [members.tolist() for members in result.segments] == [[0, 1, 2], [3, 4, 5]]
    assert not result.rejected.any()
    jump = np.flatnonzero((result.pairs.first == 2) & (result.pairs.second == 3))[0]
    assert result.pairs.failure[jump].startswith("jump: moved")
    np.testing.assert_allclose(result.offsets[3:], np.subtract(corners[3:], corners[3]), atol=0.05)


def test_blurred_frame_is_flagged_against_its_neighbours(noisy_sequence, simulator):
    from scipy import ndimage

    lr = noisy_sequence[2].copy()
    lr[6] = ndimage.gaussian_filter(lr[6], 5) * simulator.fov_mask
    result = register_sequence(lr, simulator.fov_mask, device="cpu")
    assert result.rejected.tolist() == [i == 6 for i in range(12)]
    assert result.reasons[6].startswith("blurred")


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (np.zeros((1, 64, 64)), "at least 2 frames"),
        (np.zeros((64, 64)), "single frame"),
        ([np.zeros((64, 64)), np.zeros((64, 80))], "frame 1 has shape"),
        (np.zeros((4, 64, 64, 3)), "RGB"),
        (np.zeros((5, 64, 64)), "all 5 frames are dark"),
        (np.full((5, 64, 64), 7.0), "all 5 frames are dark"),
        (np.full((3, 64, 64), np.nan), "NaN"),
    ],
)
def test_bad_input_gets_a_clear_error(frames, message):
    with pytest.raises(ValueError, match=message):
        register_sequence(frames, device="cpu")


def test_bad_settings_get_a_clear_error(noisy_sequence):
    lr = noisy_sequence[2]
    with pytest.raises(ValueError, match="mask has shape"):
        register_sequence(lr, np.ones((10, 10), bool), device="cpu")
    with pytest.raises(ValueError, match="gaps must include 1"):
        register_sequence(lr, gaps=(2, 4), device="cpu")
    with pytest.raises(ValueError, match="refine must be one of"):
        register_sequence(lr, refine="nope", device="cpu")
    with pytest.raises(ValueError, match="min_ncc"):
        register_sequence(lr, min_ncc=2, device="cpu")


# -- saving --------------------------------------------------------------------------------------


def assert_same(first: Registration, second: Registration):
    for name in ("offsets", "rejected", "reasons", "fov_mask"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert [s.tolist() for s in first.segments] == [s.tolist() for s in second.segments]
    for group in ("quality", "pairs"):
        for field in dataclasses.fields(getattr(first, group)):
            np.testing.assert_array_equal(
                getattr(getattr(first, group), field.name),
                getattr(getattr(second, group), field.name),
            )
    assert first.parameters == second.parameters


def test_json_round_trip(tmp_path, registration, noisy_sequence):
    path = registration.save(tmp_path / "registration.json")
    loaded = Registration.load(path)
    assert_same(registration, loaded)
    assert loaded.transforms is None
    text = json.loads(path.read_text())
    assert text["summary"]["kept"] == 12 and text["version"] == 1
    # NaN (dark frames, unused pairs) survives as JSON null; affine maps survive too.
    changed = dataclasses.replace(
        registration,
        offsets=np.where(np.arange(12)[:, None] == 3, np.nan, registration.offsets),
        transforms=registration.frame_maps() * 1.01,
    )
    again = Registration.load(changed.save(tmp_path / "changed.json"))
    assert np.isnan(again.offsets[3]).all()
    np.testing.assert_array_equal(again.transforms, changed.transforms)


def test_loading_a_wrong_file_says_so(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Registration.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a napari-pclesr registration"):
        Registration.load(tmp_path / "other.json")


# -- the real recording ---------------------------------------------------------------------------


def test_real_recording_registers_with_small_residuals(shared_dir):
    from napari_pclesr.io import read_sequence

    path = shared_dir / "data" / "pcle_colorectal_S01V01.mpeg"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    frames, meta = read_sequence(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SegmentWarning)
        result = register_sequence(frames[:32], meta["fov_mask"], device="cpu")
    summary = result.summary()
    assert summary["kept_fraction"] > 0.8
    # The export repeats every frame (24 frames/s container, ~12 frames/s recording).
    assert summary["duplicates"] >= 12
    assert summary["pair_residual_px"]["median"] < 0.5
