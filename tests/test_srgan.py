"""SRGAN generator and discriminator, and the adversarial and cycle-consistency loss terms."""

from __future__ import annotations

import math

import pytest
import torch

from napari_pclesr import losses, models


def test_srgan_generator_has_ledigs_1231186_parameters_at_x1():
    generator = models.create("srgan")
    assert models.count_parameters(generator) == 1_231_186
    # Each ×2 step adds a 3×3 conv 64→256 with bias and a one-slope PReLU.
    step = 3 * 3 * 64 * 256 + 256 + 1
    assert models.count_parameters(models.create("srgan", scale=2)) == 1_231_186 + step
    assert models.count_parameters(models.create("srgan", scale=4)) == 1_231_186 + 2 * step


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_srgan_maps_frames_to_scaled_frames(scale):
    torch.manual_seed(0)
    generator = models.create("srgan", scale=scale, blocks=2, features=8).eval()
    out = generator(torch.rand(2, 1, 12, 10))
    assert out.shape == (2, 1, 12 * scale, 10 * scale)
    assert generator.hparams == {"scale": scale, "blocks": 2, "features": 8}


def test_srgan_receptive_field_matches_the_measured_reach_of_one_pixel():
    torch.manual_seed(0)
    generator = models.create("srgan", blocks=2, features=4).eval()
    # 9×9 head (4) + 2 blocks × 2 convs (4) + body conv (1) + 9×9 tail (4) = 13 pixels.
    assert generator.receptive_field == 13
    size = 41
    image = torch.zeros(1, 1, size, size, requires_grad=True)
    generator(image)[0, 0, size // 2, size // 2].backward()
    rows, cols = torch.nonzero(image.grad[0, 0], as_tuple=True)
    assert int((rows - size // 2).abs().max()) == 13 == int((cols - size // 2).abs().max())
    assert models.create("srgan").receptive_field == 41


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_discriminator_gives_one_logit_per_patch_of_any_size(spectral_norm):
    torch.manual_seed(0)
    discriminator = models.create_discriminator(spectral_norm=spectral_norm)
    for size in (64, 96, 40):
        assert discriminator(torch.rand(3, 1, size, size)).shape == (3,)
    batch_norms = [m for m in discriminator.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    convs = [m for m in discriminator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 8
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1, 2, 1, 2]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert len(batch_norms) == (0 if spectral_norm else 7)  # BN from the second conv on
    wrapped = [m for m in discriminator.modules() if hasattr(m, "parametrizations")]
    assert len(wrapped) == (10 if spectral_norm else 0)  # 8 convs and 2 dense layers


def test_discriminator_on_64_patches_is_ledigs_flatten():
    # Four stride-2 convs reduce 64×64 to 4×4, the pooling size: the pooling changes nothing.
    torch.manual_seed(0)
    discriminator = models.create_discriminator(features=4, dense=8).eval()
    features = discriminator.features(torch.rand(2, 1, 64, 64))
    assert features.shape == (2, 32, 4, 4)
    torch.testing.assert_close(discriminator.pool(features), features)


def test_bad_discriminator_settings_are_clear_errors():
    with pytest.raises(ValueError, match="unknown discriminator hyper-parameter"):
        models.create_discriminator(width=3)
    with pytest.raises(ValueError, match="features must be a whole number"):
        models.create_discriminator(features=0)
    with pytest.raises(ValueError, match="spectral_norm must be True or False"):
        models.create_discriminator(spectral_norm="yes")


# -- loss terms ---------------------------------------------------------------------------------


def test_gan_losses_have_their_closed_forms():
    zeros = torch.zeros(4)
    # sigmoid(0) = 1/2: each cross-entropy term is log 2.
    assert float(losses.discriminator_loss(zeros, zeros)) == pytest.approx(2 * math.log(2))
    assert float(losses.generator_adversarial_loss(zeros)) == pytest.approx(math.log(2))
    confident = torch.full((4,), 20.0)
    assert float(losses.discriminator_loss(confident, -confident)) < 1e-8
    # One-sided smoothing: a perfect real logit now costs the cross-entropy to 0.9.
    smoothed = losses.discriminator_loss(confident, -confident, label_smoothing=0.1)
    assert float(smoothed) == pytest.approx(0.1 * 20, rel=1e-3)
    # Relativistic: only differences to the other batch's mean matter.
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([0.0, -2.0])
    ragan = losses.discriminator_loss(real, fake, "ragan")
    torch.testing.assert_close(ragan, losses.discriminator_loss(real + 5, fake + 5, "ragan"))
    expected = (
        -torch.log(torch.sigmoid(real - fake.mean())).mean()
        - torch.log(1 - torch.sigmoid(fake - real.mean())).mean()
    )
    torch.testing.assert_close(ragan, expected)
    with pytest.raises(ValueError, match="needs the logits of real patches"):
        losses.generator_adversarial_loss(fake, kind="ragan")


def test_row_column_loss_is_zero_for_identical_images_and_sees_row_shifts():
    image = torch.rand(3, 1, 16, 16)
    assert float(losses.row_column_loss(image, image)) == 0.0
    brighter_row = image.clone()
    brighter_row[:, :, 5] += 0.4
    # Row 5's mean rises by 0.4 (1/16 of the rows); every column mean by 0.4 / 16.
    expected = 0.4**2 / 16 + (0.4 / 16) ** 2
    assert float(losses.row_column_loss(brighter_row, image)) == pytest.approx(expected, rel=1e-5)
    # An SR twice as large is compared through its 2 × 2 block means.
    upscaled = torch.repeat_interleave(torch.repeat_interleave(image, 2, -1), 2, -2)
    assert float(losses.row_column_loss(upscaled, image)) == pytest.approx(0.0, abs=1e-12)


def test_fibre_vector_loss_ignores_padding_and_normalises_by_the_lr_range():
    generator = torch.Generator().manual_seed(0)
    lr = torch.rand(2, 5, generator=generator)
    sr = torch.rand(2, 5, generator=generator)
    valid = torch.ones(2, 5, dtype=torch.bool)
    loss = losses.fibre_vector_loss(lr, sr, valid)
    low = lr.amin(1, keepdim=True)
    span = lr.amax(1, keepdim=True) - low
    torch.testing.assert_close(loss, (((lr - low) - (sr - low)) / span).square().mean())
    # Padding with arbitrary values that are marked invalid changes nothing.
    padded = [torch.cat([v, 100 * torch.rand(2, 3, generator=generator)], 1) for v in (lr, sr)]
    mask = torch.cat([valid, torch.zeros(2, 3, dtype=torch.bool)], 1)
    torch.testing.assert_close(losses.fibre_vector_loss(*padded, mask), loss)
    # "lr": a brighter, higher-contrast SR costs; "separate": it does not.
    stretched = 2 * lr + 0.3
    assert float(losses.fibre_vector_loss(lr, stretched, valid)) > 0.1
    separate = losses.fibre_vector_loss(lr, stretched, valid, "separate")
    assert float(separate) == pytest.approx(0.0, abs=1e-10)


def test_fibre_vector_loss_gradient_flows_to_the_sr_only_through_real_entries():
    lr = torch.rand(1, 4)
    sr = torch.rand(1, 4, requires_grad=True)
    valid = torch.tensor([[True, True, False, True]])
    losses.fibre_vector_loss(lr, sr, valid).backward()
    assert sr.grad[0, 2] == 0 and torch.all(sr.grad[0, [0, 1, 3]] != 0)
