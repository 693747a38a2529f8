"""The plain autoencoder: shapes, the config, determinism and its loss (the Bernoulli reconstruction term alone)."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Bernoulli

from embedsvc.nets.autoencoder import AEConfig, ConvAutoencoder


def test_shapes_and_config_round_trip() -> None:
    config = AEConfig(image_size=32, channels=3, latent_dim=8, hidden_channels=(16, 32, 64))
    net = ConvAutoencoder(config)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        z = net.encode(x)
        decoded = net.decode(z)
    assert z.shape == (2, 8)
    assert decoded.shape == (2, 3, 32, 32) and float(decoded.min()) >= 0.0 and float(decoded.max()) <= 1.0
    assert AEConfig.from_json(config.to_json()) == config
    for bad in (dict(image_size=30), dict(channels=2), dict(latent_dim=0), dict(hidden_channels=())):
        with pytest.raises(ValueError):
            AEConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown"):
        AEConfig.from_json({**config.to_json(), "surprise": 1})


def test_deterministic_encoding_and_bernoulli_loss() -> None:
    torch.manual_seed(0)
    net = ConvAutoencoder(AEConfig(latent_dim=4)).eval()
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(net.encode(x), net.encode(x), rtol=0, atol=0)
    logits = net.decode_logits(net.encode(x))
    expected = -Bernoulli(logits=logits, validate_args=False).log_prob(x).flatten(1).sum(dim=1)
    torch.testing.assert_close(net.loss(x), expected, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(net(x), torch.sigmoid(logits))
