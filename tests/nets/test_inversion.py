"""GAN inversion: it finds a latent that remakes an image the generator made, fits only the known pixels when masked,
lets its caller stop it between steps, and gives each image the same answer whatever else shares its batch."""

from __future__ import annotations

import math

import pytest
import torch

from embedsvc.nets.gan import GANConfig, Generator
from embedsvc.nets.inversion import InversionOptions, Prior, complete, invert, prior_nll, starting_latents

LATENT = 4


@pytest.fixture(scope="module")
def generator() -> Generator:
    """A small random generator in eval mode (BatchNorm statistics moved off their initial values)."""
    torch.manual_seed(0)
    net = Generator(GANConfig(latent_dim=LATENT, generator_channels=(16, 8)))
    net.train()
    with torch.no_grad():
        net(torch.randn(128, LATENT))
    return net.eval().requires_grad_(False)


def made_by(generator: Generator, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.randn(n, LATENT, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return z, generator(z)


def test_recovers_the_latent_of_a_generated_image(generator: Generator) -> None:
    z, images = made_by(generator, 3, seed=7)
    found = invert(generator, images, LATENT, InversionOptions(steps=200, restarts=3, pixel_noise=0.01))
    assert found.latents.shape == (3, LATENT) and found.reconstructions.shape == images.shape
    assert float(found.errors.max()) < 1e-4
    torch.testing.assert_close(found.errors, (found.reconstructions - images).pow(2).flatten(1).mean(dim=1))
    # The image is remade, and by (nearly) the latent that made it.
    assert float((found.latents - z).norm(dim=1).max()) < 0.1


def test_more_steps_fit_better_and_zero_steps_return_the_best_start(generator: Generator) -> None:
    _, images = made_by(generator, 4, seed=8)
    options = [InversionOptions(steps=s, restarts=2) for s in (0, 10, 60)]
    errors = [float(invert(generator, images, LATENT, o).errors.mean()) for o in options]
    assert errors[0] > errors[1] > errors[2]
    start = invert(generator, images, LATENT, InversionOptions(steps=0, restarts=3))
    starts = starting_latents(LATENT, 3, 0)
    assert all(any(torch.equal(z, s) for s in starts) for z in start.latents)


def test_a_good_guess_is_kept(generator: Generator) -> None:
    z, images = made_by(generator, 3, seed=9)
    found = invert(generator, images, LATENT, InversionOptions(steps=0, restarts=2), guesses=z)
    torch.testing.assert_close(found.latents, z)
    assert float(found.errors.max()) < 1e-12


def test_masked_inversion_uses_only_the_known_pixels(generator: Generator) -> None:
    _, images = made_by(generator, 3, seed=10)
    mask = torch.ones(1, 1, 28, 28)
    mask[..., 14:, :] = 0.0  # bottom half unknown
    scribbled = images.clone()
    scribbled[..., 14:, :] = torch.rand(3, 1, 14, 28, generator=torch.Generator().manual_seed(1))
    options = InversionOptions(steps=20, restarts=2)
    a = invert(generator, images, LATENT, options, mask=mask)
    b = invert(generator, scribbled, LATENT, options, mask=mask)
    assert torch.equal(a.latents, b.latents) and torch.equal(a.errors, b.errors)
    known_error = ((a.reconstructions - images).pow(2) * mask).flatten(1).sum(dim=1) / mask.sum()
    torch.testing.assert_close(a.errors, known_error)
    completed = complete(scribbled, mask, b.reconstructions)
    assert torch.equal(completed[..., :14, :], scribbled[..., :14, :])
    assert torch.equal(completed[..., 14:, :], b.reconstructions[..., 14:, :])


def test_answers_do_not_depend_on_the_batch(generator: Generator) -> None:
    _, images = made_by(generator, 3, seed=11)
    options = InversionOptions(steps=10, restarts=2, seed=5)
    together = invert(generator, images, LATENT, options)
    again = invert(generator, images, LATENT, options)
    assert torch.equal(together.latents, again.latents)
    alone = torch.cat([invert(generator, images[i : i + 1], LATENT, options).latents for i in range(3)])
    torch.testing.assert_close(alone, together.latents, rtol=1e-4, atol=1e-4)


def test_check_runs_between_steps_and_stops_the_work(generator: Generator) -> None:
    _, images = made_by(generator, 2, seed=12)
    calls = []
    invert(generator, images, LATENT, InversionOptions(steps=25, check_every=10), check=lambda: calls.append(1))
    assert len(calls) == math.ceil(25 / 10) + 1  # before steps 0, 10 and 20, and before the answer

    class Stop(Exception):
        pass

    def stop_on_second() -> None:
        calls.append(2)
        if calls.count(2) == 2:
            raise Stop

    with pytest.raises(Stop):
        invert(generator, images, LATENT, InversionOptions(steps=100, check_every=5), check=stop_on_second)
    assert calls.count(2) == 2


def test_priors() -> None:
    z = torch.randn(5, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(prior_nll(z, Prior.GAUSSIAN), 0.5 * z.pow(2).sum(dim=1))
    # The chi prior is lowest on the shell of radius sqrt(d - 1), and the same in every direction.
    radii = torch.tensor([1.0, math.sqrt(15), 8.0]).unsqueeze(1)
    values = prior_nll(radii * torch.nn.functional.normalize(torch.ones(3, 16), dim=1), Prior.CHI)
    assert values[1] < values[0] and values[1] < values[2]
    turned = prior_nll(math.sqrt(15) * torch.nn.functional.normalize(z, dim=1), Prior.CHI)
    torch.testing.assert_close(turned, torch.full((5,), float(values[1])), rtol=1e-5, atol=1e-4)


def test_bad_options_and_no_candidates(generator: Generator) -> None:
    for bad in (dict(steps=-1), dict(restarts=-1), dict(check_every=0), dict(learning_rate=0.0), dict(pixel_noise=0)):
        with pytest.raises(ValueError):
            InversionOptions(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no candidates"):
        invert(generator, torch.zeros(1, 1, 28, 28), LATENT, InversionOptions(restarts=0))
