"""A convolutional variational autoencoder and its negative ELBO.

Encoder q(z|x) = N(m(x), diag(s^2(x))) from stride-2 convolutions; decoder p(x|z) from transposed convolutions, with a
Bernoulli likelihood (logits per pixel, for images in [0, 1] such as digits) or a Gaussian one (a mean per pixel and one
learned log standard deviation per channel). The prior is N(0, I).

The loss is the negative ELBO per image, in nats: the reconstruction negative log-likelihood summed over pixels plus
beta * KL(q(z|x) || N(0, I)), with KL = -1/2 * sum(1 + log s^2 - m^2 - s^2). (A version in circulation adds
0.5 * sum(log_var - mean^2): that misses the variance and the constant and has the wrong sign, and trains a broken
model; `tests/nets/test_vae.py` checks this KL against torch.distributions.)
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURE = "conv-vae-v1"


class Likelihood(StrEnum):
    BERNOULLI = "bernoulli"
    GAUSSIAN = "gaussian"


@dataclass(frozen=True)
class VAEConfig:
    """Everything needed to rebuild the network; saved as JSON next to the weights."""

    image_size: int = 28
    channels: int = 1
    latent_dim: int = 16
    beta: float = 1.0
    likelihood: Likelihood = Likelihood.BERNOULLI
    # Output channels of each stride-2 convolution; image_size must be divisible by 2 ** len(hidden_channels).
    hidden_channels: tuple[int, ...] = (32, 64)
    hidden_units: int = 256
    architecture: str = ARCHITECTURE

    def __post_init__(self) -> None:
        if self.architecture != ARCHITECTURE:
            raise ValueError(f"architecture {self.architecture!r} is not {ARCHITECTURE!r}")
        if self.latent_dim < 1 or self.channels not in (1, 3) or self.hidden_units < 1 or not self.hidden_channels:
            raise ValueError("latent_dim and hidden_units must be positive, channels 1 or 3, hidden_channels non-empty")
        if self.image_size % (2 ** len(self.hidden_channels)) or self.image_size < 2 ** len(self.hidden_channels):
            raise ValueError(
                f"image_size {self.image_size} must be a multiple of {2 ** len(self.hidden_channels)} "
                f"({len(self.hidden_channels)} stride-2 convolutions)"
            )
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError("beta must be finite and >= 0")

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["likelihood"] = self.likelihood.value
        out["hidden_channels"] = list(self.hidden_channels)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VAEConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown VAE config key(s): {', '.join(sorted(unknown))}")
        values = dict(data)
        if "likelihood" in values:
            values["likelihood"] = Likelihood(values["likelihood"])
        if "hidden_channels" in values:
            values["hidden_channels"] = tuple(int(c) for c in values["hidden_channels"])
        return cls(**values)


class Loss(NamedTuple):
    """Per-image terms, in nats; `loss` is what training minimises (reconstruction + beta * kl)."""

    loss: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor


def kl_to_standard_normal(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_var)) || N(0, I)) per row: -1/2 * sum(1 + log s^2 - m^2 - s^2)."""
    return -0.5 * torch.sum(1 + log_var - mean.pow(2) - log_var.exp(), dim=1)


class ConvVAE(nn.Module):
    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        in_channels = config.channels
        for out_channels in config.hidden_channels:
            layers += [nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1), nn.ReLU()]
            in_channels = out_channels
        self.encoder = nn.Sequential(*layers, nn.Flatten())
        self._side = config.image_size // 2 ** len(config.hidden_channels)
        flat = in_channels * self._side * self._side
        self.encoder_fc = nn.Sequential(nn.Linear(flat, config.hidden_units), nn.ReLU())
        self.to_mean = nn.Linear(config.hidden_units, config.latent_dim)
        self.to_log_var = nn.Linear(config.hidden_units, config.latent_dim)
        self.decoder_fc = nn.Sequential(
            nn.Linear(config.latent_dim, config.hidden_units),
            nn.ReLU(),
            nn.Linear(config.hidden_units, flat),
            nn.ReLU(),
        )
        back: list[nn.Module] = []
        reversed_channels = [*reversed(config.hidden_channels), config.channels]
        for i, (c_in, c_out) in enumerate(itertools.pairwise(reversed_channels)):
            back.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
            if i < len(reversed_channels) - 2:
                back.append(nn.ReLU())
        self.decoder = nn.Sequential(*back)
        # Gaussian likelihood: one log standard deviation per channel, learned (unused for Bernoulli).
        self.log_sigma = nn.Parameter(torch.full((config.channels,), -1.0))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (N, C, H, W) in [0, 1] -> (mean, log variance), each (N, latent_dim)."""
        hidden = self.encoder_fc(self.encoder(x))
        return self.to_mean(hidden), self.to_log_var(hidden).clamp(-30.0, 20.0)

    def decode_params(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (N, latent_dim) -> the decoder's output: logits (Bernoulli) or means (Gaussian), (N, C, H, W)."""
        top = self.decoder_fc(z).view(-1, self.config.hidden_channels[-1], self._side, self._side)
        return self.decoder(top)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents -> the mean image E[x|z] in [0, 1]."""
        out = self.decode_params(z)
        if self.config.likelihood is Likelihood.BERNOULLI:
            return torch.sigmoid(out)
        return out.clamp(0.0, 1.0)

    def reconstruction_nll(
        self, params: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """-log p(x|z) per image, summed over pixels (only where `mask` is 1, when given)."""
        if self.config.likelihood is Likelihood.BERNOULLI:
            per_pixel = F.binary_cross_entropy_with_logits(params, x, reduction="none")
        else:
            log_sigma = self.log_sigma.view(1, -1, 1, 1)
            per_pixel = 0.5 * ((x - params) / log_sigma.exp()).pow(2) + log_sigma + 0.5 * math.log(2 * math.pi)
        if mask is not None:
            per_pixel = per_pixel * mask
        return per_pixel.flatten(1).sum(dim=1)

    def loss(self, x: torch.Tensor, *, sample: bool = True, generator: torch.Generator | None = None) -> Loss:
        """The negative ELBO per image (one reparameterised sample of z, or z = mean with sample=False)."""
        mean, log_var = self.encode(x)
        z = mean
        if sample:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            z = mean + noise * (0.5 * log_var).exp()
        reconstruction = self.reconstruction_nll(self.decode_params(z), x)
        kl = kl_to_standard_normal(mean, log_var)
        return Loss(reconstruction + self.config.beta * kl, reconstruction, kl)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])
