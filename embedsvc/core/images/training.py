"""Training a VAE or a plain autoencoder on an image data set, and the held-out figures their model cards report.

Splits are seeded: the data set is shuffled once with `seed` and cut into test, validation and training parts, so the
same command on the same data gives the same split (and, on the same machine and torch build, the same weights).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from embedsvc.backends.capabilities import AnomalyScorer, LatentInpainter
from embedsvc.core.images.datasets import ImageDataset, split
from embedsvc.nets.autoencoder import AEConfig, ConvAutoencoder
from embedsvc.nets.vae import ConvVAE, VAEConfig


@dataclass(frozen=True)
class TrainOptions:
    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    # Fractions of the whole data set held out for the final test figures and for per-epoch validation.
    test_fraction: float = 0.2
    validation_fraction: float = 0.1


@dataclass(frozen=True)
class EpochReport:
    epoch: int
    train_loss: float
    validation_loss: float
    validation_reconstruction: float
    validation_kl: float
    seconds: float


@dataclass
class TrainResult:
    net: ConvVAE
    history: list[EpochReport]
    train: ImageDataset
    validation: ImageDataset
    test: ImageDataset


def train_vae(
    dataset: ImageDataset,
    config: VAEConfig,
    options: TrainOptions,
    *,
    on_batch: Callable[[], None] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> TrainResult:
    """Adam on the negative ELBO (one reparameterised sample per image), mean over the batch."""
    test, validation, train = _three_way(dataset, options)
    torch.manual_seed(options.seed)
    net = ConvVAE(config).to(options.device)
    optimiser = torch.optim.Adam(net.parameters(), lr=options.learning_rate)
    images = torch.from_numpy(train.images).to(options.device)
    rng = np.random.default_rng(options.seed)
    history = []
    for epoch in range(1, options.epochs + 1):
        started = time.monotonic()
        net.train()
        total = 0.0
        for batch in np.array_split(rng.permutation(len(images)), max(1, math.ceil(len(images) / options.batch_size))):
            loss = net.loss(images[torch.from_numpy(batch).to(options.device)]).loss.mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
            if on_batch:
                on_batch()
        v = evaluate_elbo(net, validation.images, device=options.device, seed=options.seed)
        report = EpochReport(
            epoch, total / len(images), v["negative_elbo"], v["reconstruction"], v["kl"], time.monotonic() - started
        )
        history.append(report)
        if on_epoch:
            on_epoch(report)
    net.eval()
    return TrainResult(net, history, train, validation, test)


def _three_way(dataset: ImageDataset, options: TrainOptions) -> tuple[ImageDataset, ImageDataset, ImageDataset]:
    return split_three_way(dataset, options.test_fraction, options.validation_fraction, options.seed)


def split_three_way(
    dataset: ImageDataset, test_fraction: float, validation_fraction: float, seed: int
) -> tuple[ImageDataset, ImageDataset, ImageDataset]:
    """(test, validation, train): the split every image model's training uses, so that the same seed and fractions
    hold out the same test images from the VAE, the GAN and the autoencoder."""
    if len(dataset.images) < 10:
        raise ValueError(f"{len(dataset.images)} images are too few to train on (at least 10)")
    rest, test, validation = split(dataset, (test_fraction, validation_fraction), seed)
    return test, validation, rest


def evaluate_elbo(net: ConvVAE, images: np.ndarray, *, device: str = "cpu", seed: int = 0) -> dict[str, float]:
    """Mean per-image negative ELBO (beta = 1, one seeded sample), reconstruction NLL and KL, in nats."""
    net.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    sums = np.zeros(3)
    with torch.inference_mode():
        for start in range(0, len(images), 1024):
            x = torch.from_numpy(images[start : start + 1024]).to(device)
            loss = net.loss(x, generator=generator)
            sums += [
                float((loss.reconstruction + loss.kl).sum()),
                float(loss.reconstruction.sum()),
                float(loss.kl.sum()),
            ]
    mean = sums / max(1, len(images))
    return {"negative_elbo": float(mean[0]), "reconstruction": float(mean[1]), "kl": float(mean[2])}


class Generative(AnomalyScorer, LatentInpainter, Protocol):
    """What the generation figures use: anomaly scores and inpainting (a trained VAE, served as the server would)."""


def held_out_metrics(
    result: TrainResult, served: Generative, *, device: str = "cpu", seed: int = 0, k: int = 5
) -> dict[str, Any]:
    """The model card's figures on the test split: negative ELBO (nats), reconstruction MSE against the mean-image
    baseline, and kNN accuracy of latent means (neighbours from the training split) when there are labels; then the
    generation figures of `served`, the trained network as the server runs it."""
    net, train, test = result.net, result.train, result.test
    elbo = evaluate_elbo(net, test.images, device=device, seed=seed)
    with torch.inference_mode():
        test_x = torch.from_numpy(test.images).to(device)
        test_mean, _ = net.encode(test_x)
        reconstruction = net.decode(test_mean).cpu().numpy()
        train_mean, _ = net.encode(torch.from_numpy(train.images).to(device))
    mse = float(np.mean((reconstruction - test.images) ** 2))
    baseline = float(np.mean((train.images.mean(axis=0, keepdims=True) - test.images) ** 2))
    metrics: dict[str, Any] = {
        "test_images": len(test.images),
        "test_negative_elbo_nats": round(elbo["negative_elbo"], 2),
        "test_reconstruction_nll_nats": round(elbo["reconstruction"], 2),
        "test_kl_nats": round(elbo["kl"], 2),
        "test_reconstruction_mse": round(mse, 5),
        "mean_image_baseline_mse": round(baseline, 5),
    }
    if train.labels is not None and test.labels is not None:
        from sklearn.neighbors import KNeighborsClassifier

        knn = KNeighborsClassifier(n_neighbors=k).fit(train_mean.cpu().numpy(), train.labels)
        metrics[f"knn{k}_accuracy"] = round(float(knn.score(test_mean.cpu().numpy(), test.labels)), 4)
    metrics.update(generation_metrics(served, train, test, seed))
    return metrics


def generation_metrics(
    model: Generative, train: ImageDataset, test: ImageDataset, seed: int = 0, inpaint_images: int = 200
) -> dict[str, Any]:
    """Anomaly AUROC of held-out images against uniform noise and against inverted held-out images (negative ELBO as
    the score), and inpainting MSE on the missing pixels (bottom half masked) against filling them with the mean
    training image."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    digits = test.images
    noise = rng.uniform(0.0, 1.0, size=digits.shape).astype(np.float32)
    inverted = (1.0 - digits).astype(np.float32)

    def score(images: np.ndarray) -> np.ndarray:
        recon, kl = model.anomaly_terms(images, samples=0, seed=0)
        return recon + kl

    normal = score(digits)
    metrics: dict[str, Any] = {}
    for name, unusual in (("uniform_noise", noise), ("inverted", inverted)):
        labels = np.r_[np.zeros(len(normal)), np.ones(len(unusual))]
        metrics[f"anomaly_auroc_vs_{name}"] = round(float(roc_auc_score(labels, np.r_[normal, score(unusual)])), 4)
    chosen = digits[:inpaint_images]
    known = np.ones_like(chosen[:1])
    known[..., known.shape[-2] // 2 :, :] = 0.0  # the bottom half is missing
    known = np.broadcast_to(known, chosen.shape).copy()
    completed, _ = model.inpaint(chosen, known, steps=200, seed=seed)
    hole = known == 0
    mean_fill = np.broadcast_to(train.images.mean(axis=0, keepdims=True), chosen.shape)
    metrics["inpaint_bottom_half_mse"] = round(float(np.mean((completed[hole] - chosen[hole]) ** 2)), 5)
    metrics["inpaint_mean_image_fill_mse"] = round(float(np.mean((mean_fill[hole] - chosen[hole]) ** 2)), 5)
    return metrics


# ---- the plain autoencoder ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AEEpochReport:
    epoch: int
    train_loss: float  # binary cross-entropy per image, nats
    validation_loss: float
    validation_mse: float
    seconds: float


@dataclass
class AETrainResult:
    net: ConvAutoencoder
    history: list[AEEpochReport]
    train: ImageDataset
    validation: ImageDataset
    test: ImageDataset


def train_autoencoder(
    dataset: ImageDataset,
    config: AEConfig,
    options: TrainOptions,
    *,
    on_batch: Callable[[], None] | None = None,
    on_epoch: Callable[[AEEpochReport], None] | None = None,
) -> AETrainResult:
    """Adam on the reconstruction's binary cross-entropy (summed over pixels, mean over the batch), on the VAE's
    split: the same seed holds out the same test images."""
    test, validation, train = _three_way(dataset, options)
    torch.manual_seed(options.seed)
    net = ConvAutoencoder(config).to(options.device)
    optimiser = torch.optim.Adam(net.parameters(), lr=options.learning_rate)
    images = torch.from_numpy(train.images).to(options.device)
    rng = np.random.default_rng(options.seed)
    history = []
    for epoch in range(1, options.epochs + 1):
        started = time.monotonic()
        net.train()
        total = 0.0
        for batch in np.array_split(rng.permutation(len(images)), max(1, math.ceil(len(images) / options.batch_size))):
            loss = net.loss(images[torch.from_numpy(batch).to(options.device)]).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
            if on_batch:
                on_batch()
        v_loss, v_mse = evaluate_autoencoder(net, validation.images, device=options.device)
        report = AEEpochReport(epoch, total / len(images), v_loss, v_mse, time.monotonic() - started)
        history.append(report)
        if on_epoch:
            on_epoch(report)
    net.eval()
    return AETrainResult(net, history, train, validation, test)


def evaluate_autoencoder(net: ConvAutoencoder, images: np.ndarray, *, device: str = "cpu") -> tuple[float, float]:
    """(mean binary cross-entropy per image in nats, mean squared pixel error) of the reconstructions."""
    net.eval()
    loss_sum, squared_sum = 0.0, 0.0
    with torch.inference_mode():
        for start in range(0, len(images), 1024):
            x = torch.from_numpy(images[start : start + 1024]).to(device)
            loss_sum += float(net.loss(x).sum())
            squared_sum += float((net(x) - x).pow(2).sum())
    n = max(1, len(images))
    return loss_sum / n, squared_sum / (n * int(np.prod(images.shape[1:])))


def autoencoder_metrics(result: AETrainResult, *, device: str = "cpu", k: int = 5) -> dict[str, Any]:
    """The model card's figures on the test split: cross-entropy and MSE of the reconstructions (against the
    mean-image baseline), and the kNN accuracy of latents (neighbours from the training split) when there are
    labels."""
    net, train, test = result.net, result.train, result.test
    loss, mse = evaluate_autoencoder(net, test.images, device=device)
    baseline = float(np.mean((train.images.mean(axis=0, keepdims=True) - test.images) ** 2))
    metrics: dict[str, Any] = {
        "test_images": len(test.images),
        "test_reconstruction_bce_nats": round(loss, 2),
        "test_reconstruction_mse": round(mse, 5),
        "mean_image_baseline_mse": round(baseline, 5),
    }
    if train.labels is not None and test.labels is not None:
        from sklearn.neighbors import KNeighborsClassifier

        with torch.inference_mode():
            train_z = net.encode(torch.from_numpy(train.images).to(device)).cpu().numpy()
            test_z = net.encode(torch.from_numpy(test.images).to(device)).cpu().numpy()
        knn = KNeighborsClassifier(n_neighbors=k).fit(train_z, train.labels)
        metrics[f"knn{k}_accuracy"] = round(float(knn.score(test_z, test.labels)), 4)
    return metrics
