"""Judging generated digits: a classifier trained on real digits (the judge), its confidence and class spread over a
set of samples, and the Fréchet distance between real and generated images in its penultimate features (FID's
formula in a judge fitted to the data at hand, since no Inception network can be downloaded here).

The judge must be trained on real images that no generative model under test trained on (`benchmarks/generative.py`
says which split); otherwise it rewards copies of the training digits it has memorised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from embedsvc.nets.augment import random_translation
from embedsvc.nets.classifier import ConvClassifier

CHUNK = 1024


@dataclass(frozen=True)
class JudgeOptions:
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    # Random translations of up to this many pixels each way, so that a judge fitted on 1,000 digits generalises.
    shift: int = 2
    seed: int = 0


def train_judge(
    images: np.ndarray,
    labels: np.ndarray,
    classes: int,
    options: JudgeOptions = JudgeOptions(),
    *,
    on_batch: Callable[[], None] | None = None,
) -> ConvClassifier:
    """Adam on the cross-entropy of shifted copies of the images; returns the judge in eval mode."""
    torch.manual_seed(options.seed)
    generator = torch.Generator().manual_seed(options.seed)
    judge = ConvClassifier(classes, channels=images.shape[1], image_size=images.shape[-1])
    optimiser = torch.optim.Adam(judge.parameters(), lr=options.learning_rate)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    rng = np.random.default_rng(options.seed)
    judge.train()
    for _ in range(options.epochs):
        order = rng.permutation(len(images))
        for start in range(0, len(order), options.batch_size):
            index = torch.from_numpy(order[start : start + options.batch_size])
            loss = F.cross_entropy(judge(random_translation(x_all[index], options.shift, generator)), y_all[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if on_batch:
                on_batch()
    return judge.eval()


def judge_outputs(judge: ConvClassifier, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities (N, classes), penultimate features (N, features)), float64."""
    probabilities, features = [], []
    with torch.inference_mode():
        for start in range(0, len(images), CHUNK):
            hidden = judge.features(torch.from_numpy(np.ascontiguousarray(images[start : start + CHUNK])))
            probabilities.append(torch.softmax(judge.head(hidden), dim=1).double().numpy())
            features.append(hidden.double().numpy())
    return np.concatenate(probabilities), np.concatenate(features)


def confidence_and_spread(probabilities: np.ndarray) -> tuple[float, float]:
    """(mean top-class probability, entropy in nats of the histogram of top classes): sharp samples score a high
    first figure, samples spread over every class a second one near ln(classes)."""
    confident = float(probabilities.max(axis=1).mean())
    counts = np.bincount(probabilities.argmax(axis=1), minlength=probabilities.shape[1]).astype(np.float64)
    p = counts / counts.sum()
    entropy = float(-(p[p > 0] * np.log(p[p > 0])).sum())
    return confident, entropy


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussians fitted to two sets of feature rows.

    tr((S_a S_b)^(1/2)) is computed as the sum of the square roots of the eigenvalues of S_a^(1/2) S_b S_a^(1/2)
    (symmetric, the same eigenvalues), which stays real and finite when the covariances are singular (features that
    are always zero, as ReLU features can be)."""
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    s_a, s_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    values, vectors = np.linalg.eigh(s_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    middle = np.linalg.eigvalsh(root_a @ s_b @ root_a)
    trace_root = float(np.sqrt(np.clip(middle, 0.0, None)).sum())
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * trace_root)
