"""Data pipeline: normalisation, patches, splits, paired sequences, augmentation and batches."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_pclesr.data.patches import (
    Normalisation,
    PairedSequences,
    extract_patches,
    fill_outside_fov,
    fov_from_frames,
    patch_corners,
)
from napari_pclesr.data.splits import split_sequences


def disc(shape, radius):
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - (shape[0] - 1) / 2) ** 2 + (cols - (shape[1] - 1) / 2) ** 2 <= radius**2


def smooth_stack(frames, shape, seed):
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random((frames, *shape)), (0, 2, 2)).astype(np.float32)


# -- normalisation ------------------------------------------------------------------------------


def test_normalisation_round_trips_exactly_inside_fov():
    mask = disc((40, 40), 17)
    frames = (smooth_stack(3, (40, 40), 0) * 900 + 100) * mask
    norm = Normalisation()
    normalised, low, high = norm.normalise(frames, mask)
    back = norm.denormalise(normalised, low, high, mask)
    np.testing.assert_allclose(back[:, mask], frames[:, mask], rtol=1e-6)
    assert np.all(back[:, ~mask] == 0)


def test_percentiles_of_the_fov_pixels_map_to_zero_and_one():
    mask = disc((32, 32), 14)
    frames = smooth_stack(2, (32, 32), 1) * 50 - 7
    frames[:, ~mask] = 1e6  # outside the FoV: must not set the scale
    normalised, low, high = Normalisation().normalise(frames, mask)
    for index in range(2):
        inside = frames[index][mask].astype(np.float64)
        assert low[index] == pytest.approx(np.percentile(inside, 1))
        assert high[index] == pytest.approx(np.percentile(inside, 99))
        expected = (inside - low[index]) / (high[index] - low[index])
        np.testing.assert_allclose(normalised[index][mask], expected, atol=1e-6)


def test_seed000_is_the_per_frame_minmax():
    mask = disc((32, 32), 14)
    frames = smooth_stack(2, (32, 32), 5) * 30 + 2
    normalised, _, _ = Normalisation.seed000().normalise(frames, mask)
    for index in range(2):
        inside = normalised[index][mask]
        assert inside.min() == pytest.approx(0) and inside.max() == pytest.approx(1)
        assert np.all(normalised[index][~mask] == 0)


def test_outside_the_fov_takes_the_nearest_fov_value():
    mask = np.zeros((6, 6), bool)
    mask[2:4, 2:4] = True
    frame = np.arange(36, dtype=np.float32).reshape(6, 6)
    filled = fill_outside_fov(frame, mask)
    assert filled[0, 0] == frame[2, 2] and filled[5, 5] == frame[3, 3]
    assert filled[0, 2] == frame[2, 2] and filled[3, 5] == frame[3, 3]
    np.testing.assert_array_equal(filled[mask], frame[mask])
    normalised, _, _ = Normalisation(percentiles=(0, 100)).normalise(frame, mask)
    assert normalised[0, 0] == normalised[2, 2] == 0


def test_target_mapped_with_the_input_map_keeps_an_identity_exact():
    """A network that learned the identity gives back its input, whatever the noise range."""
    rng = np.random.default_rng(3)
    mask = disc((24, 24), 10)
    lr = smooth_stack(1, (24, 24), 6)[0] + 0.05 * rng.standard_normal((24, 24))
    norm = Normalisation()
    lr_n, low, high = norm.normalise(lr, mask)
    hr_n, _, _ = norm.normalise(lr, mask, low, high)  # target = input
    np.testing.assert_array_equal(hr_n, lr_n)
    np.testing.assert_allclose(norm.denormalise(lr_n, low, high, mask)[mask], lr[mask], rtol=1e-5)


def test_denormalise_maps_a_scaled_output_with_the_input_range():
    frame = smooth_stack(1, (16, 16), 2)[0] * 10 + 5
    norm = Normalisation()
    normalised, low, high = norm.normalise(frame)
    upscaled = np.kron(normalised, np.ones((2, 2), dtype=np.float32))
    back = norm.denormalise(upscaled, low, high, np.ones((16, 16), bool))
    np.testing.assert_allclose(back, np.kron(frame, np.ones((2, 2))), rtol=1e-6)


def test_constant_frame_normalises_to_zero_and_back():
    frame = np.full((8, 8), 4.0, dtype=np.float32)
    norm = Normalisation()
    normalised, low, high = norm.normalise(frame)
    assert np.all(normalised == 0)
    np.testing.assert_allclose(norm.denormalise(normalised, low, high), frame)


def test_normalisation_settings_round_trip_and_reject_bad_values():
    norm = Normalisation(percentiles=(0.5, 99.5), target_range="own", fill_outside=False)
    assert Normalisation.from_dict(norm.to_dict()) == norm
    # Format-1 checkpoints stored z-score statistics: a per-frame min-max, exactly.
    old = {"lr_mean": 1.0, "lr_std": 2.0, "hr_mean": 3.0, "hr_std": 4.0}
    assert Normalisation.from_dict(old) == Normalisation.seed000()
    with pytest.raises(ValueError, match="low < high"):
        Normalisation(percentiles=(50, 50))
    with pytest.raises(ValueError, match="target_range"):
        Normalisation(target_range="hr")
    with pytest.raises(ValueError, match="incomplete or unknown"):
        Normalisation.from_dict({"target_range": "input"})


# -- patches ------------------------------------------------------------------------------------


def test_patch_corners_keep_exactly_the_patches_inside_the_fov():
    mask = disc((70, 70), 30)
    corners = patch_corners(mask, 16)
    # Brute force over the centred grid: 4 x 4 patches starting at offset 3.
    expected = [
        (r, c)
        for r in range(3, 67, 16)
        for c in range(3, 67, 16)
        if mask[r : r + 16, c : c + 16].all()
    ]
    assert sorted(map(tuple, corners.tolist())) == sorted(expected)
    assert 0 < len(expected) < 16


def test_extract_patches_matches_slicing_frame_major():
    stack = np.arange(2 * 10 * 12, dtype=np.float32).reshape(2, 10, 12)
    corners = np.array([[0, 0], [4, 6]])
    patches = extract_patches(stack, corners, 4)
    assert patches.shape == (4, 4, 4)
    np.testing.assert_array_equal(patches[0], stack[0, 0:4, 0:4])
    np.testing.assert_array_equal(patches[1], stack[0, 4:8, 6:10])
    np.testing.assert_array_equal(patches[3], stack[1, 4:8, 6:10])


def test_patch_larger_than_frame_is_a_clear_error():
    with pytest.raises(ValueError, match="does not fit the 32x32 frames"):
        patch_corners(np.ones((32, 32), bool), 64)


def test_fov_from_frames_marks_pixels_nonzero_in_some_frame():
    stack = np.zeros((2, 5, 5))
    stack[0, 1, 1] = 3
    stack[1, 2, 3] = -1
    mask = fov_from_frames(stack)
    assert mask.sum() == 2 and mask[1, 1] and mask[2, 3]


# -- splits -------------------------------------------------------------------------------------


def test_split_is_by_sequence_disjoint_complete_and_reproducible():
    split = split_sequences(20, seed=3)
    assert (len(split.train), len(split.val), len(split.test)) == (14, 3, 3)
    everything = split.train + split.val + split.test
    assert sorted(everything) == list(range(20))
    assert split == split_sequences(20, seed=3)
    assert split != split_sequences(20, seed=4)


def test_small_split_keeps_every_part_non_empty():
    split = split_sequences(3)
    assert (len(split.train), len(split.val), len(split.test)) == (1, 1, 1)
    assert len(split_sequences(2, (0.5, 0.5, 0.0)).test) == 0


def test_too_few_sequences_or_bad_fractions_are_clear_errors():
    with pytest.raises(ValueError, match="at least 3 sequences"):
        split_sequences(2)
    with pytest.raises(ValueError, match="sum to 1"):
        split_sequences(10, (0.5, 0.2, 0.2))


# -- paired sequences ---------------------------------------------------------------------------


def recorded_pairs(n_sequences=4, frames=2, shape=(24, 24)):
    hr = [smooth_stack(frames, shape, seed) for seed in range(n_sequences)]
    lr = [ndi.gaussian_filter(stack, (0, 1, 1)) for stack in hr]
    return PairedSequences(hr, lr)


def test_recorded_pairs_give_aligned_normalised_patches():
    data = recorded_pairs()
    norm = Normalisation(percentiles=(0, 100))
    lr, hr, fov = data.patches(norm, 8)
    assert lr.shape == hr.shape == fov.shape == (4 * 2 * 9, 8, 8)
    assert lr.min() >= 0 and lr.max() <= 1 and fov.all()
    # The first patches are the top-left 8x8 of the first frames, HR mapped like its LR.
    lr_frame, low, high = norm.normalise(data.lr(0)[0])
    hr_frame, _, _ = norm.normalise(data.hr(0)[0], None, low, high)
    np.testing.assert_allclose(lr[0], lr_frame[:8, :8])
    np.testing.assert_allclose(hr[0], hr_frame[:8, :8])


def test_rim_patches_come_with_their_fov():
    shape = (48, 48)
    mask = disc(shape, 20)
    hr = [smooth_stack(2, shape, 7) * mask]
    data = PairedSequences(hr, [stack * 0.9 for stack in hr], fov_masks=[mask])
    inner = data.patches(Normalisation(), 16)
    rim = data.patches(Normalisation(), 16, min_inside=0.5)
    assert len(inner[0]) < len(rim[0]) == 2 * len(data.patch_corners(0, 16, 0.5))
    assert inner[2].all() and not rim[2].all()
    assert rim[2].reshape(len(rim[2]), -1).mean(axis=1).min() >= 0.5


def test_split_of_pairs_keeps_names_and_data_together():
    data = recorded_pairs(n_sequences=6)
    train, val, test = data.split(seed=1)
    assert len(train) + len(val) + len(test) == 6
    assert not set(train.names) & set(val.names)
    index = data.names.index(val.names[0])
    np.testing.assert_array_equal(val.hr(0), data.hr(index))
    np.testing.assert_array_equal(val.lr(0), data.lr(index))


def test_simulated_lr_is_reproducible_and_redrawn_per_epoch():
    data = PairedSequences([smooth_stack(2, (48, 48), 5)])
    first = data.lr(0, seed=1, epoch=0)
    assert first.shape == (2, 48, 48)
    np.testing.assert_array_equal(first, data.lr(0, seed=1, epoch=0))
    assert not np.array_equal(first, data.lr(0, seed=1, epoch=1))
    # The FoV is the simulator's: LR is zero outside it.
    assert np.all(first[:, ~data.fov_mask(0)] == 0)
    assert data.fov_mask(0).sum() > 0.5 * 48 * 48


def test_simulated_lr_at_scale_two_is_the_block_mean():
    hr = smooth_stack(1, (32, 32), 6)
    data = PairedSequences([hr], scale=2)
    lr = data.lr(0, sigma_mult=0, sigma_add=0)
    full = PairedSequences([hr]).lr(0, sigma_mult=0, sigma_add=0)
    np.testing.assert_allclose(lr, full.reshape(1, 16, 2, 16, 2).mean(axis=(2, 4)), atol=1e-6)
    lr_patches, hr_patches, fov = data.patches(Normalisation(), 4)
    assert lr_patches.shape[1:] == (4, 4) and hr_patches.shape[1:] == fov.shape[1:] == (8, 8)


def test_mismatched_pairs_are_clear_errors():
    with pytest.raises(ValueError, match="2 HR frames but 1 LR"):
        PairedSequences([np.ones((2, 8, 8))], [np.ones((1, 8, 8))])
    with pytest.raises(ValueError, match="at scale 2 the LR must be"):
        PairedSequences([np.ones((1, 8, 8))], [np.ones((1, 8, 8))], scale=2)


def test_from_folder_reads_pairs_and_reports_missing_files(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    (tmp_path / "hr").mkdir()
    (tmp_path / "lr").mkdir()
    hr = smooth_stack(2, (16, 16), 7)
    tifffile.imwrite(tmp_path / "hr" / "a.tif", hr)
    tifffile.imwrite(tmp_path / "lr" / "a.tif", hr * 2)
    data = PairedSequences.from_folder(tmp_path)
    assert data.names == ("a",) and not data.simulated
    np.testing.assert_allclose(data.lr(0), hr * 2)
    tifffile.imwrite(tmp_path / "hr" / "b.tif", hr)
    with pytest.raises(FileNotFoundError, match=r"b\.tif"):
        PairedSequences.from_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="no 'hr' sub-folder"):
        PairedSequences.from_folder(tmp_path / "hr")


# -- augmentation and batches (torch) -----------------------------------------------------------


def test_augmentation_applies_one_symmetry_per_sample_to_lr_and_hr_alike():
    torch = pytest.importorskip("torch")
    from napari_pclesr.train.batches import dihedral_augment

    lr = torch.arange(64 * 16, dtype=torch.float32).reshape(64, 1, 4, 4)
    hr = torch.repeat_interleave(torch.repeat_interleave(lr, 2, dim=2), 2, dim=3)
    generator = torch.Generator().manual_seed(0)
    out_lr, out_hr = dihedral_augment((lr, hr), generator, flips=True, rot90=True)
    seen = set()
    for index in range(64):
        symmetries = [torch.rot90(lr[index], k, (-2, -1)) for k in range(4)]
        symmetries += [s.flip(-1) for s in symmetries]
        matches = [k for k, s in enumerate(symmetries) if torch.equal(s, out_lr[index])]
        assert len(matches) == 1
        seen.add(matches[0])
        up = torch.repeat_interleave(torch.repeat_interleave(out_lr[index], 2, 1), 2, 2)
        assert torch.equal(up, out_hr[index])
    assert seen == set(range(8))
    unchanged = dihedral_augment((lr,), generator, flips=False, rot90=False)[0]
    assert torch.equal(unchanged, lr)


def test_sampler_shards_are_disjoint_and_epochs_cover_each_shard_once():
    torch = pytest.importorskip("torch")
    from napari_pclesr.train.batches import PatchSampler

    ids = torch.arange(41, dtype=torch.float32).reshape(41, 1, 1, 1)
    seen = []
    for rank in range(2):
        sampler = PatchSampler(
            ids, ids, ids >= 0, 4, torch.device("cpu"), seed=2, rank=rank, world_size=2
        )
        assert sampler.iterations_per_epoch == 5
        epoch = torch.cat([sampler.next_batch()[0].flatten() for _ in range(5)])
        assert len(set(epoch.tolist())) == 20  # 20 of the shard's patches, each once
        seen.append(set(sampler.shard.tolist()))
        next_epoch = torch.cat([sampler.next_batch()[0].flatten() for _ in range(5)])
        assert sampler.epoch == 1 and not torch.equal(epoch, next_epoch)
    assert not seen[0] & seen[1] and len(seen[0]) == len(seen[1]) == 20


def test_sampler_state_restores_the_batch_stream():
    torch = pytest.importorskip("torch")
    from napari_pclesr.train.batches import PatchSampler

    ids = torch.arange(10, dtype=torch.float32).reshape(10, 1, 1, 1)
    options = {"seed": 5, "flips": True, "rot90": True}
    first = PatchSampler(ids, ids, ids >= 0, 3, torch.device("cpu"), **options)
    for _ in range(4):
        first.next_batch()
    state = first.state_dict()
    expected = [first.next_batch()[0] for _ in range(5)]
    second = PatchSampler(ids, ids, ids >= 0, 3, torch.device("cpu"), **options)
    second.load_state_dict(state)
    for batch in expected:
        assert torch.equal(second.next_batch()[0], batch)


def test_sampler_augments_the_fov_with_its_patches():
    torch = pytest.importorskip("torch")
    from napari_pclesr.train.batches import PatchSampler

    hr = torch.rand(12, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    fov = hr > 0.5  # a mask that follows the pixels, whatever the flips and turns
    sampler = PatchSampler(
        hr[..., ::2, ::2], hr, fov, 4, torch.device("cpu"), seed=1, flips=True, rot90=True
    )
    for _ in range(6):
        _, hr_batch, fov_batch = sampler.next_batch()
        assert fov_batch.dtype == torch.bool
        assert torch.equal(fov_batch, hr_batch > 0.5)


# -- mixed training data ------------------------------------------------------------------------


def test_mixed_data_vary_bundle_and_noise_and_keep_evaluation_images_out():
    from napari_pclesr.data.natural import EVALUATION_IMAGES, TRAINING_IMAGES

    assert not set(EVALUATION_IMAGES) & set(TRAINING_IMAGES)
    data = PairedSequences.mixed(6, 2, (64, 64), seed=3, natural_share=0.5, bundles=3)
    assert len(data) == 6 and data.simulated
    assert sum(name.startswith(TRAINING_IMAGES) for name in data.names) == 3
    assert not any(name.startswith(EVALUATION_IMAGES) for name in data.names)
    degradations = [data.degradation(i) for i in range(6)]
    assert len({(d.bundle_seed, d.density) for d in degradations}) > 1
    # Same seed, same data; the split keeps each sequence's degradation.
    again = PairedSequences.mixed(6, 2, (64, 64), seed=3, natural_share=0.5, bundles=3)
    np.testing.assert_array_equal(data.lr(4, seed=1), again.lr(4, seed=1))
    part = data.subset([4])
    assert part.degradation(0) == degradations[4]
    np.testing.assert_array_equal(part.lr(0, seed=1), data.lr(4, seed=1))


def test_degradation_sets_the_bundle_density_and_noise():
    from napari_pclesr.data.patches import Degradation

    hr = [np.full((1, 64, 64), 0.5, np.float32)] * 2
    quiet, noisy = Degradation(noise_scale=(0, 0)), Degradation(density=0.5, noise_scale=(4, 4))
    data = PairedSequences(hr, degradations=[quiet, noisy])
    lr_quiet, lr_noisy = data.lr(0), data.lr(1)
    assert np.allclose(lr_quiet[:, data.fov_mask(0)], 0.5, atol=1e-6)
    assert lr_noisy[:, data.fov_mask(1)].std() > 0.05
    with pytest.raises(ValueError, match="density"):
        Degradation(density=0)
    with pytest.raises(ValueError, match="one Degradation per sequence"):
        PairedSequences(hr, degradations=[quiet])


def test_mixed_data_shrink_natural_images_without_aliasing():
    from napari_pclesr.data.patches import _zoomed_to_fit

    class FixedZoom:
        def __init__(self, zoom):
            self.zoom = zoom

        def uniform(self, low, high):
            return self.zoom

    board = (np.indices((400, 400)).sum(0) % 2).astype(np.float32)  # detail at Nyquist
    shrunk = _zoomed_to_fit(board, (64, 64), FixedZoom(0.7))
    assert shrunk.shape == (280, 280)
    assert shrunk[20:-20, 20:-20].std() < 0.02  # unresolvable detail is gone, not aliased
    assert _zoomed_to_fit(board, (64, 64), FixedZoom(1.0))[20:-20, 20:-20].std() > 0.45
