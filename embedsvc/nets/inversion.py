"""GAN inversion ("encode by optimisation"): the latent z whose decoded image G(z) best matches an image.

For each image, `restarts` candidates z_1..z_R are optimised together by Adam (the learning rate decays on a cosine
to zero over `steps`) on the negative log posterior

    sum over known pixels of (G(z) - x)^2 / (2 * pixel_noise^2)  +  prior(z),

where prior(z) is the negative log density of ||z|| under the generator's N(0, I) prior (a chi distribution with
latent_dim degrees of freedom: r^2/2 - (d - 1) log r; it keeps z on the shell where the generator was trained without
pulling it to the origin, as the Gaussian's ||z||^2/2 would) or, with `Prior.GAUSSIAN`, ||z||^2 / 2. The candidate with
the lowest final objective wins; its mean squared error over the known pixels is the reconstruction error (the
residual an anomaly score can use).

The starts are the same for every image (drawn once from the seed), optionally with a learned encoder's guess E(x) as
one more candidate, so an image's result does not depend on which other images share its batch. A mask (1 known,
0 missing) restricts the objective to the known pixels: inpainting. `check` is called before the first step and
every `check_every` steps after, so that a server can stop the work when its caller's deadline passes or it goes
away (it raises to stop); nothing here knows about servers. Pure torch; the generator is only called, never changed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import torch


class Prior(StrEnum):
    CHI = "chi"  # on the norm only
    GAUSSIAN = "gaussian"  # ||z||^2 / 2


@dataclass(frozen=True)
class InversionOptions:
    steps: int = 300
    restarts: int = 4
    learning_rate: float = 0.1
    # The assumed standard deviation of pixel noise: smaller trusts the pixels more against the prior.
    pixel_noise: float = 0.1
    prior: Prior = Prior.CHI
    seed: int = 0
    check_every: int = 10

    def __post_init__(self) -> None:
        if self.steps < 0 or self.restarts < 0 or self.check_every < 1:
            raise ValueError("steps and restarts must be >= 0, check_every >= 1")
        if not (self.learning_rate > 0 and self.pixel_noise > 0):
            raise ValueError("learning_rate and pixel_noise must be positive")


@dataclass(frozen=True)
class Inversion:
    """Per image: the best latent (N, latent_dim), its decoded image (N, C, H, W), the mean squared error over the
    known pixels (N,) and the final objective (N,)."""

    latents: torch.Tensor
    reconstructions: torch.Tensor
    errors: torch.Tensor
    objectives: torch.Tensor


def prior_nll(z: torch.Tensor, prior: Prior) -> torch.Tensor:
    """Per row, up to a constant: -log p(||z||) for the chi prior, ||z||^2 / 2 for the Gaussian."""
    squared = z.pow(2).sum(dim=1)
    if prior is Prior.GAUSSIAN:
        return 0.5 * squared
    d = z.shape[1]
    return 0.5 * squared - 0.5 * (d - 1) * torch.log(squared + 1e-12)


def starting_latents(latent_dim: int, restarts: int, seed: int) -> torch.Tensor:
    """The (restarts, latent_dim) random starts every image shares: draws from N(0, I) with the given seed."""
    return torch.randn(restarts, latent_dim, generator=torch.Generator().manual_seed(seed))


def invert(
    generator: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    latent_dim: int,
    options: InversionOptions = InversionOptions(),
    *,
    mask: torch.Tensor | None = None,
    guesses: torch.Tensor | None = None,
    check: Callable[[], None] | None = None,
) -> Inversion:
    """Invert `generator` (z (M, latent_dim) -> images (M, C, H, W), in eval mode) at `images` (N, C, H, W).

    `mask` (broadcastable to images; 1 = known) restricts the fit to the known pixels; `guesses` (N, latent_dim),
    e.g. a learned encoder's, are one more candidate per image. At least one candidate is needed (restarts or
    guesses); with steps = 0 the best start is returned as it is.
    """
    n = images.shape[0]
    device = images.device
    known = torch.ones_like(images) if mask is None else mask.to(images).expand_as(images)
    counts = known.flatten(1).sum(dim=1).clamp_min(1.0)
    starts = starting_latents(latent_dim, options.restarts, options.seed).to(device)
    candidates = [starts.unsqueeze(0).expand(n, -1, -1)]
    if guesses is not None:
        candidates.append(guesses.detach().to(device).reshape(n, 1, latent_dim))
    per_image = sum(c.shape[1] for c in candidates)
    if per_image == 0:
        raise ValueError("no candidates: restarts = 0 and no guesses")
    z = torch.cat(candidates, dim=1).reshape(n * per_image, latent_dim).clone().requires_grad_(True)
    target = images.repeat_interleave(per_image, dim=0)
    weights = known.repeat_interleave(per_image, dim=0)
    scale = 1.0 / (2 * options.pixel_noise**2)

    def objective() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        decoded = generator(z)
        squared = ((decoded - target).pow(2) * weights).flatten(1).sum(dim=1)
        return squared * scale + prior_nll(z, options.prior), squared, decoded

    optimiser = torch.optim.Adam([z], lr=options.learning_rate)
    with torch.enable_grad():
        for step in range(options.steps):
            if check is not None and step % options.check_every == 0:
                check()
            for group in optimiser.param_groups:
                group["lr"] = options.learning_rate * 0.5 * (1 + math.cos(math.pi * step / options.steps))
            optimiser.zero_grad(set_to_none=True)
            loss, _, _ = objective()
            loss.sum().backward()
            optimiser.step()
    if check is not None:
        check()
    with torch.no_grad():
        loss, squared, decoded = objective()
        best = loss.view(n, per_image).argmin(dim=1)
        pick = torch.arange(n, device=device) * per_image + best
        return Inversion(
            latents=z.detach()[pick],
            reconstructions=decoded[pick],
            errors=squared[pick] / counts,
            objectives=loss[pick],
        )


def complete(images: torch.Tensor, mask: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    """Inpainting's answer: the known pixels as they were, the generated ones elsewhere."""
    known = mask.to(images).expand_as(images)
    return images * known + reconstructions * (1 - known)
