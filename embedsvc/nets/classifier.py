"""A small convolutional image classifier: the judge of generated digits (`embedsvc/core/images/quality.py`).

Conv(3x3) -> ReLU -> MaxPool, twice, then a fully connected penultimate layer (its activations are the features the
Fréchet distance is measured in) and the class logits.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvClassifier(nn.Module):
    def __init__(
        self, classes: int, *, channels: int = 1, image_size: int = 28, width: int = 32, features: int = 128
    ) -> None:
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size {image_size} must be a multiple of 4 (two 2x2 poolings)")
        side = image_size // 4
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * side * side, features),
            nn.ReLU(),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(features, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (N, features) of images (N, C, H, W) in [0, 1]."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, classes)."""
        return self.head(self.dropout(self.body(x)))
