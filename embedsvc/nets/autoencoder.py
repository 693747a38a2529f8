"""A deterministic convolutional autoencoder: the VAE's encoder and decoder shapes (`embedsvc/nets/vae.py`), one latent
head instead of a mean and a log-variance, and no prior: it is trained on reconstruction error alone, so nothing can
be sampled from it and nothing about its latents is Gaussian.

Encoder: [Conv(4, stride 2) -> ReLU] -> Linear -> ReLU -> Linear(latent_dim). Decoder: Linear -> ReLU -> Linear -> ReLU
-> [ConvTranspose(4, stride 2) (-> ReLU)] -> logits; images are the logits' sigmoid, in [0, 1]. The loss is the binary
cross-entropy per pixel, summed over an image's pixels (the VAE's Bernoulli reconstruction term, without the KL).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURE = "conv-ae-v1"


@dataclass(frozen=True)
class AEConfig:
    """Everything needed to rebuild the network; saved as JSON next to the weights."""

    image_size: int = 28
    channels: int = 1
    latent_dim: int = 16
    hidden_channels: tuple[int, ...] = (32, 64)
    hidden_units: int = 256
    architecture: str = ARCHITECTURE

    def __post_init__(self) -> None:
        if self.architecture != ARCHITECTURE:
            raise ValueError(f"architecture {self.architecture!r} is not {ARCHITECTURE!r}")
        if self.latent_dim < 1 or self.channels not in (1, 3) or self.hidden_units < 1 or not self.hidden_channels:
            raise ValueError("latent_dim and hidden_units must be positive, channels 1 or 3, hidden_channels non-empty")
        if min(self.hidden_channels) < 1:
            raise ValueError("channel counts must be positive")
        if self.image_size % (2 ** len(self.hidden_channels)) or self.image_size < 2 ** len(self.hidden_channels):
            raise ValueError(
                f"image_size {self.image_size} must be a multiple of {2 ** len(self.hidden_channels)} "
                f"({len(self.hidden_channels)} stride-2 convolutions)"
            )

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["hidden_channels"] = list(self.hidden_channels)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AEConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown autoencoder config key(s): {', '.join(sorted(unknown))}")
        values = dict(data)
        if "hidden_channels" in values:
            values["hidden_channels"] = tuple(int(c) for c in values["hidden_channels"])
        return cls(**values)


class ConvAutoencoder(nn.Module):
    def __init__(self, config: AEConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        in_channels = config.channels
        for out_channels in config.hidden_channels:
            layers += [nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1), nn.ReLU()]
            in_channels = out_channels
        self._side = config.image_size // 2 ** len(config.hidden_channels)
        flat = in_channels * self._side * self._side
        self.encoder = nn.Sequential(
            *layers,
            nn.Flatten(),
            nn.Linear(flat, config.hidden_units),
            nn.ReLU(),
            nn.Linear(config.hidden_units, config.latent_dim),
        )
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

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) in [0, 1] -> latents (N, latent_dim)."""
        return self.encoder(x)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        top = self.decoder_fc(z).view(-1, self.config.hidden_channels[-1], self._side, self._side)
        return self.decoder(top)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (N, latent_dim) -> images (N, C, H, W) in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Per image: the binary cross-entropy of its reconstruction, summed over pixels (nats)."""
        logits = self.decode_logits(self.encode(x))
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
