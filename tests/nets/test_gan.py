"""The GAN's networks: shapes, configs, eval-mode determinism, the hinge losses and the differentiable translation."""

from __future__ import annotations

import math

import pytest
import torch

from embedsvc.nets.gan import (
    Discriminator,
    GANConfig,
    Generator,
    LatentEncoder,
    class_confidence_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    r1_penalty,
    random_translation,
)


def test_shapes_ranges_and_config_round_trip() -> None:
    torch.manual_seed(0)
    for config in (GANConfig(), GANConfig(image_size=32, channels=3, latent_dim=8, generator_channels=(64, 32, 16))):
        generator, discriminator, encoder = Generator(config), Discriminator(config), LatentEncoder(config)
        z = torch.randn(5, config.latent_dim)
        with torch.no_grad():
            images = generator(z)
            assert discriminator(images).shape == (5,)
            assert encoder(images).shape == (5, config.latent_dim)
        assert images.shape == (5, config.channels, config.image_size, config.image_size)
        assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
        assert GANConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize(
    "bad",
    [
        dict(image_size=30),
        dict(channels=2),
        dict(latent_dim=0),
        dict(generator_channels=()),
        dict(discriminator_channels=(32, 0)),
        dict(encoder_channels=()),
        dict(encoder_units=-1),
        dict(architecture="dcgan-v0"),
    ],
)
def test_bad_configs_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        GANConfig(**bad)


def test_unknown_config_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown"):
        GANConfig.from_json({**GANConfig().to_json(), "surprise": 1})


def test_eval_generator_is_deterministic_and_per_image() -> None:
    """In eval mode each image depends on its own latent only: a batch gives what the latents give one by one."""
    torch.manual_seed(1)
    generator = Generator(GANConfig(latent_dim=8))
    generator.train()
    generator(torch.randn(64, 8))  # move the BatchNorm running statistics off their initial values
    generator.eval()
    z = torch.randn(6, 8)
    with torch.no_grad():
        batch = generator(z)
        torch.testing.assert_close(generator(z), batch, rtol=0, atol=0)
        alone = torch.cat([generator(z[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(alone, batch, rtol=1e-5, atol=1e-6)


def test_hinge_losses() -> None:
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # relu(1 - real) = [0, 0.5], relu(1 + fake) = [0, 1]
    assert float(hinge_discriminator_loss(real, fake)) == pytest.approx(0.25 + 0.5)
    assert float(hinge_generator_loss(fake)) == pytest.approx(1.0)


def test_r1_penalty_is_the_squared_gradient_norm_and_trains_the_critic() -> None:
    # D(x) = sum(w * x^2) / 2 has gradient w * x, so the penalty is the batch mean of ||w * x||^2.
    w = torch.tensor([[1.0, 2.0], [3.0, 0.5]], requires_grad=True)
    x = torch.tensor([[[[1.0, 1.0], [0.0, 2.0]]], [[[0.5, 0.0], [1.0, 1.0]]]], requires_grad=True)
    score = (w * x.pow(2)).flatten(1).sum(1) / 2
    penalty = r1_penalty(score, x)
    expected = ((w * x).pow(2).flatten(1).sum(1)).mean()
    assert float(penalty.detach()) == pytest.approx(float(expected.detach()))
    penalty.backward()  # create_graph: the penalty reaches the critic's weights
    assert w.grad is not None and float(w.grad.abs().sum()) > 0


def test_random_translation_moves_whole_images_and_passes_gradients() -> None:
    x = torch.zeros(4, 1, 6, 6)
    x[:, :, 2:4, 2:4] = 1.0
    x.requires_grad_(True)
    moved = random_translation(x, 1, torch.Generator().manual_seed(0))
    assert moved.shape == x.shape
    for image in moved.detach():
        assert float(image.sum()) == 4.0  # a 2x2 block one pixel from the border stays whole
        rows, cols = torch.nonzero(image[0], as_tuple=True)
        assert int(rows.max() - rows.min()) == 1 and int(cols.max() - cols.min()) == 1
    moved.sum().backward()
    assert x.grad is not None and float(x.grad.sum()) > 0
    assert random_translation(x, 0) is x


def test_the_critics_class_head_shares_its_features() -> None:
    torch.manual_seed(2)
    config = GANConfig(latent_dim=8)
    critic = Discriminator(config, classes=10).eval()  # eval: spectral norm's power iteration holds still
    images = Generator(config)(torch.randn(4, 8)).detach()
    score, logits = critic.score_and_logits(images)
    assert score.shape == (4,) and logits.shape == (4, 10)
    assert torch.allclose(score, critic(images))  # the same score as the plain pass
    with pytest.raises(ValueError, match="no class head"):
        Discriminator(config).score_and_logits(images)
    with pytest.raises(ValueError):
        Discriminator(config, classes=-1)


def test_class_confidence_loss_rewards_clear_and_balanced_classes() -> None:
    """Per-image entropy minus the batch's class entropy: -ln(k) at best (each image sure of one class, every class
    equally common), 0 for a uniform guess per image, and 0 for sure images all of one class (collapse)."""
    k = 10
    sure_balanced = torch.eye(k) * 50
    uniform = torch.zeros(k, k)
    sure_collapsed = torch.zeros(k, k)
    sure_collapsed[:, 3] = 50
    assert float(class_confidence_loss(sure_balanced)) == pytest.approx(-math.log(k), abs=1e-4)
    assert float(class_confidence_loss(uniform)) == pytest.approx(0.0, abs=1e-6)
    assert float(class_confidence_loss(sure_collapsed)) == pytest.approx(0.0, abs=1e-4)
    logits = torch.randn(16, k, requires_grad=True)
    class_confidence_loss(logits).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
