"""The VAE's loss is the true negative ELBO: KL and likelihoods checked against torch.distributions."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from embedsvc.nets.vae import ConvVAE, Likelihood, VAEConfig, kl_to_standard_normal


def test_kl_equals_torch_distributions() -> None:
    torch.manual_seed(0)
    mean, log_var = torch.randn(8, 16) * 2, torch.randn(8, 16)
    expected = kl_divergence(Normal(mean, (0.5 * log_var).exp()), Normal(0.0, 1.0)).sum(dim=1)
    torch.testing.assert_close(kl_to_standard_normal(mean, log_var), expected)
    # The formula in circulation, 0.5 * sum(log_var - mean^2), is a different (wrong) quantity.
    broken = 0.5 * (log_var - mean.pow(2)).sum(dim=1)
    assert not torch.allclose(broken, expected, atol=1.0)
    assert (kl_to_standard_normal(torch.zeros(1, 4), torch.zeros(1, 4)) == 0).all()


@pytest.mark.parametrize("likelihood", list(Likelihood))
def test_loss_is_negative_elbo(likelihood: Likelihood) -> None:
    torch.manual_seed(1)
    net = ConvVAE(VAEConfig(latent_dim=4, likelihood=likelihood, beta=2.0)).eval()
    x = torch.rand(3, 1, 28, 28)
    loss = net.loss(x, sample=False)
    mean, log_var = net.encode(x)
    params = net.decode_params(mean)
    if likelihood is Likelihood.BERNOULLI:
        nll = -Bernoulli(logits=params, validate_args=False).log_prob(x).flatten(1).sum(dim=1)
    else:
        nll = -Normal(params, net.log_sigma.exp().view(1, -1, 1, 1)).log_prob(x).flatten(1).sum(dim=1)
    kl = kl_divergence(Normal(mean, (0.5 * log_var).exp()), Normal(0.0, 1.0)).sum(dim=1)
    torch.testing.assert_close(loss.reconstruction, nll, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(loss.kl, kl, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(loss.loss, nll + 2.0 * kl, rtol=1e-5, atol=1e-3)


def test_shapes_and_config_round_trip() -> None:
    config = VAEConfig(image_size=32, channels=3, latent_dim=8, hidden_channels=(16, 32, 64))
    net = ConvVAE(config)
    x = torch.rand(2, 3, 32, 32)
    mean, log_var = net.encode(x)
    assert mean.shape == log_var.shape == (2, 8)
    assert net.decode(mean).shape == (2, 3, 32, 32)
    assert VAEConfig.from_json(config.to_json()) == config
    for bad in (dict(image_size=30), dict(channels=2), dict(latent_dim=0), dict(beta=math.nan)):
        with pytest.raises(ValueError):
            VAEConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown"):
        VAEConfig.from_json({**config.to_json(), "surprise": 1})
