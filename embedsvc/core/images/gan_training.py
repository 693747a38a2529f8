"""Training a GAN on an image data set (and the small encoder that starts its inversion).

The recipe: hinge loss, a spectrally normalised discriminator, the same random translations applied to real and
generated images before the discriminator sees them (DiffAugment: with 3,500 digits an unaugmented discriminator
memorises them), Adam with beta1 = 0.5, and an exponential moving average of the generator's weights (what is saved
and served; its samples are sharper than the last step's). Optional: several critic steps per generator step
(`discriminator_steps`) and the R1 penalty on real images (`r1_gamma`); both off by default (the committed mnist-gan
trained without them). The data split is the VAE's (`training._three_way`): the same seed gives the same held-out test
digits, which no model trains on.

After the GAN, a latent encoder E is fitted with the generator frozen: ||E(G(z)) - z||^2 on generated images plus
||G(E(x)) - x||^2 on real training images, so that E(x) is a good first guess for inverting G at x.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from embedsvc.core.images.datasets import ImageDataset
from embedsvc.core.images.training import split_three_way
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
from embedsvc.nets.inversion import InversionOptions


@dataclass(frozen=True)
class GANTrainOptions:
    epochs: int = 60
    batch_size: int = 64
    generator_learning_rate: float = 2e-4
    discriminator_learning_rate: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    # Weight of the moving average of the generator: ema <- decay * ema + (1 - decay) * generator, every step.
    ema_decay: float = 0.999
    # Random translation (pixels each way) of every image the discriminator sees; 0 turns augmentation off.
    augment_shift: int = 2
    # Critic updates per generator update: the generator steps on every n-th batch (each batch is one critic step).
    discriminator_steps: int = 1
    # Weight gamma of the R1 penalty gamma / 2 * E||grad D(x_real)||^2 on the critic (Mescheder et al. 2018); 0: off.
    r1_gamma: float = 0.0
    # With labelled data: weight of the critic's class head's cross-entropy on the real images' labels, and of the
    # generator's class term (`class_confidence_loss`: each image clearly one class, the classes equally common).
    # Both 0: no class head (unlabelled data needs both 0).
    class_weight: float = 0.0
    confidence_weight: float = 0.0
    encoder_epochs: int = 20
    encoder_learning_rate: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    test_fraction: float = 0.2
    validation_fraction: float = 0.1


@dataclass(frozen=True)
class GANEpochReport:
    epoch: int
    discriminator_loss: float
    generator_loss: float
    # Mean discriminator scores of real and generated images (hinge margins are at +1 and -1).
    real_score: float
    fake_score: float
    seconds: float


@dataclass(frozen=True)
class EncoderEpochReport:
    epoch: int
    latent_loss: float
    pixel_loss: float
    seconds: float


@dataclass
class GANTrainResult:
    generator: Generator  # the moving average, eval mode
    discriminator: Discriminator
    encoder: LatentEncoder | None
    history: list[GANEpochReport]
    encoder_history: list[EncoderEpochReport]
    train: ImageDataset
    validation: ImageDataset
    test: ImageDataset


def _batches(n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A seeded permutation cut into full batches (the last, partial one dropped: BatchNorm wants equal batches)."""
    order = rng.permutation(n)
    return [order[i : i + size] for i in range(0, n - size + 1, size)] or [order]


def train_gan(
    dataset: ImageDataset,
    config: GANConfig,
    options: GANTrainOptions,
    *,
    on_batch: Callable[[], None] | None = None,
    on_epoch: Callable[[GANEpochReport], None] | None = None,
    on_encoder_epoch: Callable[[EncoderEpochReport], None] | None = None,
) -> GANTrainResult:
    if options.discriminator_steps < 1 or not 0 <= options.r1_gamma < math.inf:
        raise ValueError("discriminator_steps must be >= 1 and r1_gamma a finite number >= 0")
    if not (0 <= options.class_weight < math.inf and 0 <= options.confidence_weight < math.inf):
        raise ValueError("class_weight and confidence_weight must be finite numbers >= 0")
    classes = 0
    if options.class_weight or options.confidence_weight:
        if dataset.labels is None:
            raise ValueError("a class head needs labelled images: this data set has no labels")
        classes = max(len(dataset.class_names or ()), int(dataset.labels.max()) + 1)
    test, validation, train = split_three_way(dataset, options.test_fraction, options.validation_fraction, options.seed)
    device = options.device
    torch.manual_seed(options.seed)
    generator, discriminator = Generator(config).to(device), Discriminator(config, classes).to(device)
    ema = copy.deepcopy(generator).eval().requires_grad_(False)
    betas = (options.beta1, options.beta2)
    g_opt = torch.optim.Adam(generator.parameters(), lr=options.generator_learning_rate, betas=betas)
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=options.discriminator_learning_rate, betas=betas)
    images = torch.from_numpy(train.images).to(device)
    labels = torch.from_numpy(train.labels).long().to(device) if classes and train.labels is not None else None
    rng = np.random.default_rng(options.seed)
    noise = torch.Generator(device=device).manual_seed(options.seed)
    shift = options.augment_shift
    history = []
    step = 0
    for epoch in range(1, options.epochs + 1):
        started = time.monotonic()
        generator.train()
        sums = np.zeros(3)
        g_sum, g_count = 0.0, 0
        batches = _batches(len(images), options.batch_size, rng)
        for index in batches:
            step += 1
            real = images[torch.from_numpy(index).to(device)]
            z = torch.randn(len(real), config.latent_dim, generator=noise, device=device)
            generator_step = step % options.discriminator_steps == 0
            with torch.set_grad_enabled(generator_step):
                fake = generator(z)
            real_input = random_translation(real, shift, noise)
            if options.r1_gamma:
                real_input = real_input.detach().requires_grad_(True)
            fake_input = random_translation(fake.detach(), shift, noise)
            if labels is None:
                real_score, fake_score = discriminator(real_input), discriminator(fake_input)
                class_loss = None
            else:
                real_score, real_logits = discriminator.score_and_logits(real_input)
                fake_score = discriminator(fake_input)
                class_loss = F.cross_entropy(real_logits, labels[torch.from_numpy(index).to(device)])
            d_loss = hinge_discriminator_loss(real_score, fake_score)
            d_total = d_loss if class_loss is None else d_loss + options.class_weight * class_loss
            if options.r1_gamma:
                d_total = d_total + options.r1_gamma / 2 * r1_penalty(real_score, real_input)
            d_opt.zero_grad(set_to_none=True)
            d_total.backward()
            d_opt.step()
            if generator_step:
                fake_input = random_translation(fake, shift, noise)
                if labels is None:
                    g_loss = hinge_generator_loss(discriminator(fake_input))
                else:
                    score, logits = discriminator.score_and_logits(fake_input)
                    g_loss = hinge_generator_loss(score) + options.confidence_weight * class_confidence_loss(logits)
                g_opt.zero_grad(set_to_none=True)
                g_loss.backward()
                g_opt.step()
                _ema_update(ema, generator, options.ema_decay)
                g_sum += float(g_loss.detach())
                g_count += 1
            sums += [float(v.detach().mean()) for v in (d_loss, real_score, fake_score)]
            if on_batch:
                on_batch()
        d_mean, real_mean, fake_mean = (float(v) for v in sums / len(batches))
        g_mean = g_sum / max(1, g_count)
        report = GANEpochReport(epoch, d_mean, g_mean, real_mean, fake_mean, time.monotonic() - started)
        history.append(report)
        if on_epoch:
            on_epoch(report)
    discriminator.eval()
    encoder: LatentEncoder | None = None
    encoder_history: list[EncoderEpochReport] = []
    if config.encoder_units and options.encoder_epochs:
        encoder, encoder_history = train_latent_encoder(
            ema, train.images, options, on_batch=on_batch, on_epoch=on_encoder_epoch
        )
    return GANTrainResult(ema, discriminator, encoder, history, encoder_history, train, validation, test)


@torch.no_grad()
def _ema_update(ema: Generator, live: Generator, decay: float) -> None:
    for weight, source in zip(ema.parameters(), live.parameters(), strict=True):
        weight.lerp_(source, 1.0 - decay)
    for buffer, value in zip(ema.buffers(), live.buffers(), strict=True):
        if buffer.dtype.is_floating_point:
            buffer.lerp_(value, 1.0 - decay)
        else:
            buffer.copy_(value)


def train_latent_encoder(
    generator: Generator,
    images: np.ndarray,
    options: GANTrainOptions,
    *,
    on_batch: Callable[[], None] | None = None,
    on_epoch: Callable[[EncoderEpochReport], None] | None = None,
) -> tuple[LatentEncoder, list[EncoderEpochReport]]:
    """Fit E with G frozen: mean ||E(G(z)) - z||^2 / latent_dim on fresh samples plus the mean squared pixel error
    of G(E(x)) on the training images, each epoch one pass over the images (and as many samples)."""
    device = options.device
    config = generator.config
    torch.manual_seed(options.seed + 1)
    generator.eval().requires_grad_(False)
    encoder = LatentEncoder(config).to(device)
    optimiser = torch.optim.Adam(encoder.parameters(), lr=options.encoder_learning_rate)
    x_all = torch.from_numpy(images).to(device)
    rng = np.random.default_rng(options.seed + 1)
    noise = torch.Generator(device=device).manual_seed(options.seed + 1)
    history = []
    for epoch in range(1, options.encoder_epochs + 1):
        started = time.monotonic()
        encoder.train()
        sums = np.zeros(2)
        batches = np.array_split(rng.permutation(len(x_all)), max(1, math.ceil(len(x_all) / options.batch_size)))
        for index in batches:
            real = x_all[torch.from_numpy(index).to(device)]
            z = torch.randn(len(real), config.latent_dim, generator=noise, device=device)
            latent_loss = (encoder(generator(z)) - z).pow(2).mean()
            pixel_loss = (generator(encoder(real)) - real).pow(2).mean()
            loss = latent_loss + pixel_loss * 10.0
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            sums += [float(latent_loss.detach()), float(pixel_loss.detach())]
            if on_batch:
                on_batch()
        mean = sums / len(batches)
        report = EncoderEpochReport(epoch, float(mean[0]), float(mean[1]), time.monotonic() - started)
        history.append(report)
        if on_epoch:
            on_epoch(report)
    return encoder.eval().requires_grad_(False), history


class InvertibleGAN(Protocol):
    """What the model card's figures need of a trained GAN (backends.gan.GANModel is one): its networks, its
    default inversion, and inversion, inpainting and residual scores."""

    @property
    def generator(self) -> torch.nn.Module: ...

    @property
    def encoder(self) -> torch.nn.Module | None: ...

    @property
    def inversion(self) -> InversionOptions: ...

    def invert(self, images: np.ndarray) -> Any: ...

    def inpaint(self, images: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def anomaly_scores(self, images: np.ndarray) -> np.ndarray: ...


def gan_metrics(
    model: InvertibleGAN, train: ImageDataset, test: ImageDataset, *, images: int = 200, seed: int = 0
) -> dict[str, Any]:
    """The model card's figures on the first `images` test images (inversion costs restarts x steps generator passes
    per image, so not all of them): inversion MSE (the model's default inversion) against the encoder's guess alone
    and the mean-image baseline; inpainting MSE on the missing pixels (bottom half masked); anomaly AUROC of the
    inversion residual for held-out images against uniform noise and against inverted held-out images (half as many
    of each)."""
    from sklearn.metrics import roc_auc_score

    digits = test.images[:images]
    found = model.invert(digits)
    metrics: dict[str, Any] = {
        "inverted_test_images": len(digits),
        "inversion": {"steps": model.inversion.steps, "restarts": model.inversion.restarts},
        "inversion_mse": round(float(np.mean((found.images - digits) ** 2)), 5),
        "mean_image_baseline_mse": round(float(np.mean((train.images.mean(axis=0) - digits) ** 2)), 5),
    }
    if model.encoder is not None:
        with torch.inference_mode():
            guess = model.generator(model.encoder(torch.from_numpy(digits))).numpy()
        metrics["encoder_only_mse"] = round(float(np.mean((guess - digits) ** 2)), 5)
    half = digits[: max(1, len(digits) // 2)]
    known = np.ones_like(half[:1])
    known[..., known.shape[-2] // 2 :, :] = 0.0
    completed, _ = model.inpaint(half, known)
    hole = np.broadcast_to(known, half.shape) == 0
    mean_fill = np.broadcast_to(train.images.mean(axis=0, keepdims=True), half.shape)
    metrics["inpaint_bottom_half_mse"] = round(float(np.mean((completed[hole] - half[hole]) ** 2)), 5)
    metrics["inpaint_mean_image_fill_mse"] = round(float(np.mean((mean_fill[hole] - half[hole]) ** 2)), 5)
    normal = found.errors[: len(half)]
    rng = np.random.default_rng(seed)
    unusual = {
        "uniform_noise": rng.uniform(0.0, 1.0, size=half.shape).astype(np.float32),
        "inverted": (1.0 - half).astype(np.float32),
    }
    for name, x in unusual.items():
        labels = np.r_[np.zeros(len(normal)), np.ones(len(x))]
        scores = np.r_[normal, model.anomaly_scores(x)]
        metrics[f"anomaly_auroc_vs_{name}"] = round(float(roc_auc_score(labels, scores)), 4)
    return metrics
