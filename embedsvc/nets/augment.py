"""Differentiable image augmentation for training on few images."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_translation(x: torch.Tensor, shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image moved by its own random whole-pixel offset in [-shift, shift]^2, zeros coming in; differentiable
    (the "translation" of DiffAugment, Zhao et al. 2020, which keeps a discriminator fed few images from memorising
    them when applied to real and generated images alike)."""
    if shift == 0:
        return x
    n, _, h, w = x.shape
    offsets = torch.randint(-shift, shift + 1, (2, n, 1, 1), generator=generator, device=x.device)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + shift - offsets[0]).expand(n, h, w)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + shift - offsets[1]).expand(n, h, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, h, w)
    padded = F.pad(x, (shift, shift, shift, shift)).permute(0, 2, 3, 1)
    return padded[batch, rows, cols].permute(0, 3, 1, 2)
