"""A DCGAN-style generator and discriminator for small square images (28x28 grey digits by default).

Generator G(z): z ~ N(0, I) (latent_dim) -> Linear -> (C0, s, s) -> [ConvTranspose(4, stride 2) -> BatchNorm -> ReLU]
-> ConvTranspose(4, stride 2) -> sigmoid, an image in [0, 1] (s = image_size / 2 ** len(generator_channels)).
Discriminator D(x): [Conv(4, stride 2) -> LeakyReLU(0.2)] -> Linear -> one unbounded score (real > fake), every layer
spectrally normalised (Miyato et al. 2018), trained with the hinge loss; optionally a class head on the same features
(trained on labelled real images) whose confidence on generated images the generator is rewarded for. Only G (its
exponential moving average, the one that samples best) is served; D exists for training.

The small `LatentEncoder` (x -> z) is trained after the GAN to start GAN inversion near the answer
(`embedsvc/nets/inversion.py`); it has the shape of the VAE's encoder.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from embedsvc.nets.augment import random_translation

__all__ = [
    "Discriminator",
    "GANConfig",
    "Generator",
    "LatentEncoder",
    "class_confidence_loss",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "r1_penalty",
    "random_translation",
]

ARCHITECTURE = "dcgan-v1"
CHANNELS = ("generator_channels", "discriminator_channels", "encoder_channels")


@dataclass(frozen=True)
class GANConfig:
    """Everything needed to rebuild the networks; saved as JSON next to the weights."""

    image_size: int = 28
    channels: int = 1
    latent_dim: int = 32
    # Channels of the generator's feature maps, coarsest first: (128, 64) maps z to 128x7x7, then 64x14x14, then
    # the image. image_size must be divisible by 2 ** len(generator_channels).
    generator_channels: tuple[int, ...] = (128, 64)
    # Output channels of the discriminator's stride-2 convolutions.
    discriminator_channels: tuple[int, ...] = (64, 128)
    # The latent encoder (the start of inversion): its stride-2 convolutions' channels, as the VAE's encoder, and
    # the hidden units of its fully connected layer (0: no encoder).
    encoder_channels: tuple[int, ...] = (32, 64)
    encoder_units: int = 256
    architecture: str = ARCHITECTURE

    def __post_init__(self) -> None:
        if self.architecture != ARCHITECTURE:
            raise ValueError(f"architecture {self.architecture!r} is not {ARCHITECTURE!r}")
        if self.latent_dim < 1 or self.channels not in (1, 3) or self.encoder_units < 0:
            raise ValueError("latent_dim must be positive, channels 1 or 3, encoder_units >= 0")
        stacks = {
            "generator": self.generator_channels,
            "discriminator": self.discriminator_channels,
            "encoder": self.encoder_channels,
        }
        if not all(stacks.values()) or min(min(layers) for layers in stacks.values()) < 1:
            raise ValueError("generator, discriminator and encoder channels must be non-empty and positive")
        for name, layers in stacks.items():
            if self.image_size % (2 ** len(layers)) or self.image_size < 2 ** len(layers):
                raise ValueError(
                    f"image_size {self.image_size} must be a multiple of {2 ** len(layers)} "
                    f"({len(layers)} stride-2 layers in the {name})"
                )

    @property
    def generator_side(self) -> int:
        return self.image_size // 2 ** len(self.generator_channels)

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in CHANNELS:
            out[key] = list(getattr(self, key))
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GANConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown GAN config key(s): {', '.join(sorted(unknown))}")
        values = dict(data)
        for key in CHANNELS:
            if key in values:
                values[key] = tuple(int(c) for c in values[key])
        return cls(**values)


class Generator(nn.Module):
    """z (N, latent_dim) -> images (N, C, H, W) in [0, 1]. Deterministic in eval mode (BatchNorm uses its running
    statistics), so each image depends on its own latent only."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        first = config.generator_channels[0]
        side = config.generator_side
        self.project = nn.Sequential(
            nn.Linear(config.latent_dim, first * side * side, bias=False),
            nn.Unflatten(1, (first, side, side)),
            nn.BatchNorm2d(first),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise(config.generator_channels):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out)]
            layers.append(nn.ReLU())
        layers.append(nn.ConvTranspose2d(config.generator_channels[-1], config.channels, 4, stride=2, padding=1))
        self.body = nn.Sequential(*layers)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """The pre-sigmoid output, (N, C, H, W)."""
        return self.body(self.project(z))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(z))


class Discriminator(nn.Module):
    """Images (N, C, H, W) in [0, 1] -> one score per image (N,): higher means "real".

    With `classes` > 0 the critic also has a class head on the same features (a plain linear layer, not spectrally
    normalised, so that its logits can grow as confident as the data allow), trained on the real images' labels: the
    generator is then rewarded for images that head is sure of, with every class as common as the others (the
    categorical GAN's objective, Springenberg 2016; see `class_confidence_loss`)."""

    def __init__(self, config: GANConfig, classes: int = 0) -> None:
        super().__init__()
        if classes < 0:
            raise ValueError("classes must be >= 0")
        self.config = config
        layers: list[nn.Module] = []
        c_in = config.channels
        for c_out in config.discriminator_channels:
            layers += [spectral_norm(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            c_in = c_out
        side = config.image_size // 2 ** len(config.discriminator_channels)
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.score = spectral_norm(nn.Linear(c_in * side * side, 1))
        self.classes = nn.Linear(c_in * side * side, classes) if classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(self._features(x)).squeeze(1)

    def score_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The score (N,) and the class head's logits (N, classes) from one pass over the features."""
        if self.classes is None:
            raise ValueError("this critic has no class head (classes = 0)")
        features = self._features(x)
        return self.score(features).squeeze(1), self.classes(features)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        # Centred inputs: the same [0, 1] images as the generator's, mapped to [-1, 1].
        return self.features(x * 2 - 1)


class LatentEncoder(nn.Module):
    """Images -> a guess of the latent the generator would need (N, latent_dim): the start of GAN inversion."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        if config.encoder_units < 1:
            raise ValueError("this config has no latent encoder (encoder_units = 0)")
        self.config = config
        layers: list[nn.Module] = []
        c_in = config.channels
        for c_out in config.encoder_channels:
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]
            c_in = c_out
        side = config.image_size // 2 ** len(config.encoder_channels)
        self.net = nn.Sequential(
            *layers,
            nn.Flatten(),
            nn.Linear(c_in * side * side, config.encoder_units),
            nn.ReLU(),
            nn.Linear(config.encoder_units, config.latent_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def hinge_discriminator_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Mean of relu(1 - D(real)) + relu(1 + D(fake)) (Lim and Ye 2017; Miyato et al. 2018)."""
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def hinge_generator_loss(fake: torch.Tensor) -> torch.Tensor:
    """-mean D(G(z))."""
    return -fake.mean()


def class_confidence_loss(logits: torch.Tensor) -> torch.Tensor:
    """The generator's class term: the mean entropy of each image's class distribution (low: each image is clearly
    one class) minus the entropy of the batch's mean distribution (high: the classes are equally common), both from
    the critic's class head (the categorical GAN's generator objective, Springenberg 2016). Minimised."""
    log_p = F.log_softmax(logits, dim=1)
    p = log_p.exp()
    per_image = -(p * log_p).sum(1).mean()
    mean = p.mean(0)
    marginal = -(mean * mean.clamp_min(1e-12).log()).sum()
    return per_image - marginal


def r1_penalty(real_score: torch.Tensor, real_input: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ||grad_x D(x)||^2 at the real images x (R1, Mescheder et al. 2018), differentiable
    (for the critic's update): `real_input` must require grad and `real_score` be D(real_input)."""
    (gradient,) = torch.autograd.grad(real_score.sum(), real_input, create_graph=True)
    return gradient.pow(2).flatten(1).sum(1).mean()
