"""Data pipeline: normalisation, patches, splits, paired sequences, augmentation and batches."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_pclesr.data.patches import (
    Normalisation,
    PairedSequences,
    denormalise_frames,
    extract_patches,
    fov_from_frames,
    normalise_frames,
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
    normalised, low, high = normalise_frames(frames, 350.0, 80.0, mask)
    back = denormalise_frames(normalised, 350.0, 80.0, low, high, mask)
    np.testing.assert_allclose(back[:, mask], frames[:, mask], rtol=1e-6)
    assert np.all(back[:, ~mask] == 0)


def test_normalisation_is_minmax_of_zscore_per_frame():
    mask = disc((32, 32), 14)
    frames = smooth_stack(2, (32, 32), 1) * 50 - 7
    normalised, low, high = normalise_frames(frames, 3.0, 2.0, mask)
    for index in range(2):
        z = (frames[index].astype(np.float64) - 3.0) / 2.0
        inside = z[mask]
        assert low[index] == pytest.approx(inside.min())
        assert high[index] == pytest.approx(inside.max())
        expected = (z - inside.min()) / (inside.max() - inside.min())
        np.testing.assert_allclose(normalised[index][mask], expected[mask], atol=1e-6)
        assert normalised[index][mask].min() == 0 and normalised[index][mask].max() == 1
        assert np.all(normalised[index][~mask] == 0)


def test_denormalise_maps_a_scaled_output_with_the_input_range():
    frame = smooth_stack(1, (16, 16), 2)[0] * 10 + 5
    normalised, low, high = normalise_frames(frame, 0.0, 1.0)
    upscaled = np.kron(normalised, np.ones((2, 2), dtype=np.float32))
    back = denormalise_frames(upscaled, 0.0, 1.0, low, high, np.ones((16, 16), bool))
    np.testing.assert_allclose(back, np.kron(frame, np.ones((2, 2))), rtol=1e-6)


def test_constant_frame_normalises_to_zero_and_back():
    frame = np.full((8, 8), 4.0, dtype=np.float32)
    normalised, low, high = normalise_frames(frame, 1.0, 2.0)
    assert np.all(normalised == 0)
    np.testing.assert_allclose(denormalise_frames(normalised, 1.0, 2.0, low, high), frame)


def test_fit_uses_fov_pixels_of_every_frame():
    mask = disc((20, 20), 8)
    hr = [smooth_stack(2, (20, 20), 3) * 4, smooth_stack(3, (20, 20), 4) + 1]
    lr = [stack * 0.5 + 2 for stack in hr]
    stats = Normalisation.fit(hr, lr, [mask, mask])
    hr_pixels = np.concatenate([stack[:, mask].ravel() for stack in hr]).astype(np.float64)
    lr_pixels = np.concatenate([stack[:, mask].ravel() for stack in lr]).astype(np.float64)
    assert stats.hr_mean == pytest.approx(hr_pixels.mean())
    assert stats.hr_std == pytest.approx(hr_pixels.std())
    assert stats.lr_mean == pytest.approx(lr_pixels.mean())
    assert stats.lr_std == pytest.approx(lr_pixels.std())
    assert Normalisation.from_dict(stats.to_dict()) == stats


def test_normalisation_rejects_constant_data_and_bad_stats():
    with pytest.raises(ValueError, match="constant"):
        Normalisation.fit([np.ones((1, 4, 4))], [np.ones((1, 4, 4))], [np.ones((4, 4), bool)])
    with pytest.raises(ValueError, match="lr_std"):
        Normalisation(0.0, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="incomplete"):
        Normalisation.from_dict({"lr_mean": 1.0})


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
    stats = data.fit_normalisation()
    lr = data.lr_patches(stats, 8)
    hr = data.hr_patches(stats, 8)
    assert lr.shape == hr.shape == (4 * 2 * 9, 8, 8)
    assert lr.min() >= 0 and lr.max() <= 1
    # The first patch is the top-left 8x8 of the normalised first frame.
    normalised, _, _ = normalise_frames(data.hr(0)[0], stats.hr_mean, stats.hr_std)
    np.testing.assert_allclose(hr[0], normalised[:8, :8])


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
    stats = data.fit_normalisation()
    assert data.hr_patches(stats, 4).shape[1:] == (8, 8)


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
        sampler = PatchSampler(ids, ids, 4, torch.device("cpu"), seed=2, rank=rank, world_size=2)
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
    first = PatchSampler(ids, ids, 3, torch.device("cpu"), **options)
    for _ in range(4):
        first.next_batch()
    state = first.state_dict()
    expected = [first.next_batch()[0] for _ in range(5)]
    second = PatchSampler(ids, ids, 3, torch.device("cpu"), **options)
    second.load_state_dict(state)
    for batch in expected:
        assert torch.equal(second.next_batch()[0], batch)
