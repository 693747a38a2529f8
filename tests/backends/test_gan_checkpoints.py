"""GAN and autoencoder checkpoints: safetensors + config.json round trips that unpickle nothing, and the errors a bad
folder gives; the served GAN's numpy surface (decode, sample, invert, inpaint, anomaly scores) on a tiny generator;
both kinds from the kinds table, their parts honouring the capability protocols."""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from embedsvc import calls
from embedsvc.backends.autoencoder import AEModel, save_autoencoder
from embedsvc.backends.base import Capability, ImageShape, LoadContext, ModelSpec
from embedsvc.backends.checkpoints import CheckpointError
from embedsvc.backends.gan import GANModel, save_gan
from embedsvc.backends.kinds import KINDS, parse_model
from embedsvc.errors import ConfigError, EmbedsvcError, Reason
from embedsvc.nets.autoencoder import AEConfig, ConvAutoencoder
from embedsvc.nets.gan import GANConfig, Generator, LatentEncoder
from embedsvc.nets.inversion import InversionOptions, Prior

CONFIG = GANConfig(
    latent_dim=4, generator_channels=(16, 8), discriminator_channels=(8, 16), encoder_channels=(8, 16), encoder_units=32
)
META = {"data": {"spec": "test"}, "training": {"seed": 3}, "metrics": {"inversion_mse": 0.5}}


@pytest.fixture
def no_pickles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading must not unpickle anything: every way to do so raises."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a checkpoint was unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)


def tiny_gan(tmp_path: Path, *, encoder: bool = True) -> tuple[Path, Generator]:
    torch.manual_seed(0)
    generator = Generator(CONFIG)
    generator.train()
    with torch.no_grad():
        generator(torch.randn(64, 4))  # BatchNorm statistics off their initial values: they must be saved too
    generator.eval()
    folder = tmp_path / "gan"
    options = InversionOptions(steps=20, restarts=2, prior=Prior.GAUSSIAN, seed=4)
    save_gan(folder, generator, LatentEncoder(CONFIG) if encoder else None, options, META)
    return folder, generator


def test_gan_round_trip_without_pickle(tmp_path: Path, no_pickles: None) -> None:
    folder, generator = tiny_gan(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    document = json.loads((folder / "config.json").read_text())
    assert document["format"] == "embedsvc-gan" and document["model"] == CONFIG.to_json()
    assert document["inversion"] == {
        "steps": 20,
        "restarts": 2,
        "learning_rate": 0.1,
        "pixel_noise": 0.1,
        "prior": "gaussian",
        "seed": 4,
        "check_every": 10,
    }
    model = GANModel.load("mine", folder)
    assert model.meta == META and model.encoder is not None and model.version.startswith("sha256:")
    assert model.inversion == InversionOptions(steps=20, restarts=2, prior=Prior.GAUSSIAN, seed=4)
    z = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    with torch.no_grad():
        expected = generator(torch.from_numpy(z)).numpy()
    np.testing.assert_allclose(model.decode(z), expected, rtol=0, atol=1e-6)
    assert model.decode(np.zeros((0, 4), np.float32)).shape == (0, 1, 28, 28)
    assert GANModel.load("again", folder).version == model.version
    without = GANModel.load("plain", tiny_gan(tmp_path / "b", encoder=False)[0])
    assert without.encoder is None and without.memory_bytes() < model.memory_bytes()


def test_gan_sample_is_seeded(tmp_path: Path) -> None:
    model = GANModel.load("mine", tiny_gan(tmp_path)[0])
    images, z = model.sample(5, seed=9)
    again, z_again = model.sample(5, seed=9)
    assert np.array_equal(images, again) and np.array_equal(z, z_again)
    np.testing.assert_array_equal(z, np.random.default_rng(9).standard_normal((5, 4)).astype(np.float32))
    _, z_cold = model.sample(5, seed=9, temperature=0.5)
    np.testing.assert_allclose(z_cold, z * 0.5)


def test_gan_invert_inpaint_and_scores(tmp_path: Path) -> None:
    model = GANModel.load("mine", tiny_gan(tmp_path)[0])
    target, _ = model.sample(3, seed=1)
    checks = []
    found = model.invert(target, check=lambda: checks.append(1))
    assert found.latents.shape == (3, 4) and found.images.shape == (3, 1, 28, 28) and found.errors.shape == (3,)
    assert len(checks) == 3  # 20 steps, checked every 10, and before the answer
    noise = np.random.default_rng(0).uniform(size=(3, 1, 28, 28)).astype(np.float32)
    assert model.anomaly_scores(noise).min() > model.anomaly_scores(target).max()
    known = np.ones((1, 1, 28, 28), np.float32)
    known[..., 14:, :] = 0
    scribbled = target.copy()
    scribbled[..., 14:, :] = noise[..., 14:, :]
    completed, latents = model.inpaint(scribbled, known)
    assert np.array_equal(completed[..., :14, :], scribbled[..., :14, :])
    _, clean_latents = model.inpaint(target, known)
    np.testing.assert_array_equal(latents, clean_latents)  # the missing pixels played no part
    assert model.invert(np.zeros((0, 1, 28, 28), np.float32)).latents.shape == (0, 4)


def test_bad_gan_folders(tmp_path: Path) -> None:
    folder, _ = tiny_gan(tmp_path)
    with pytest.raises(CheckpointError, match="missing"):
        GANModel.load("x", tmp_path / "nowhere")
    document = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**document, "format": "embedsvc-vae"}))
    with pytest.raises(CheckpointError, match="format"):
        GANModel.load("x", folder)
    (folder / "config.json").write_text(json.dumps({**document, "model": {**document["model"], "latent_dim": 5}}))
    with pytest.raises(CheckpointError, match="do not fit"):
        GANModel.load("x", folder)
    (folder / "config.json").write_text(json.dumps({**document, "inversion": {"steps": -1}}))
    with pytest.raises(CheckpointError, match=r"config\.json"):
        GANModel.load("x", folder)
    (folder / "config.json").write_text(json.dumps(document))
    (folder / "model.safetensors").write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        GANModel.load("x", folder)


def test_autoencoder_round_trip_without_pickle(tmp_path: Path, no_pickles: None) -> None:
    torch.manual_seed(0)
    net = ConvAutoencoder(AEConfig(latent_dim=6))
    save_autoencoder(tmp_path / "ae", net, META)
    model = AEModel.load("mine", tmp_path / "ae")
    assert model.meta == META and model.latent_dim == 6
    x = np.random.default_rng(0).uniform(size=(4, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        expected = net.eval()(torch.from_numpy(x)).numpy()
    z, log_variances = model.encode(x)
    assert z.shape == (4, 6) and log_variances is None
    np.testing.assert_allclose(model.decode(z), expected, rtol=0, atol=1e-6)
    errors = model.reconstruction_errors(x)
    np.testing.assert_allclose(errors, ((expected - x) ** 2).reshape(4, -1).mean(axis=1), rtol=1e-5)
    assert model.encode(np.zeros((0, 1, 28, 28), np.float32))[0].shape == (0, 6)
    with pytest.raises(CheckpointError, match="format"):
        GANModel.load("x", tmp_path / "ae")


# ---- the kinds ------------------------------------------------------------------------------------------------------


def test_the_gan_kind_is_one_part_under_five_capabilities(tmp_path: Path) -> None:
    kind = KINDS["gan"]
    folder, _ = tiny_gan(tmp_path)
    spec = ModelSpec("g", kind.parse("models[0]", {"path": str(folder), "inversion_steps": 7}))
    loaded = kind.load(spec, LoadContext(tmp_path))
    assert loaded.capabilities == kind.offers(spec) and loaded.unfit_parts() == []
    assert Capability.LATENT_ENCODER in loaded.capabilities and Capability.INPAINTING in loaded.capabilities
    (part,) = {id(p): p for p in loaded.parts.values()}.values()
    assert isinstance(part, GANModel) and part.has_prior and part.inversion.steps == 7 and part.inversion.restarts == 2
    assert (loaded.dimension, loaded.image_shape) == (4, ImageShape(1, 28))
    part.warm_up()
    target, _ = part.sample(2, seed=1)
    latents, log_variances = part.encode(target)
    assert log_variances is None
    np.testing.assert_array_equal(latents, part.invert(target).latents)
    np.testing.assert_array_equal(part.embed(target), latents)
    # The anomaly score's two terms are the inversion's final objective: residual / (2 noise^2) + prior.
    data, prior = part.anomaly_terms(target, samples=0, seed=0)
    found = part.invert(target)
    np.testing.assert_allclose(data, found.errors * 784 / (2 * 0.1**2), rtol=1e-5)
    np.testing.assert_allclose(prior, 0.5 * (found.latents**2).sum(axis=1), rtol=1e-5)  # this checkpoint: Gaussian
    known = np.ones((1, 1, 28, 28), np.float32)
    known[..., 14:, :] = 0
    completed, _ = part.inpaint(target, known, steps=3, seed=5)
    assert completed.shape == target.shape
    with pytest.raises(ConfigError, match="inversion_restarts"):
        kind.parse("models[0]", {"path": str(folder), "inversion_restarts": 65})


def test_gan_inversion_stops_at_the_calls_deadline(tmp_path: Path) -> None:
    """Served calls pass no check: inversion checks the bound call's control itself between steps."""
    part = GANModel.load("g", tiny_gan(tmp_path)[0])
    target, _ = part.sample(1, seed=1)
    control = calls.CallControl()
    control.cancel()
    with calls.bound(control), pytest.raises(EmbedsvcError) as info:
        part.encode(target)
    assert info.value.reason is Reason.CANCELLED
    with calls.bound(calls.CallControl(deadline=time.monotonic() - 1)), pytest.raises(EmbedsvcError) as info:
        part.anomaly_terms(target)
    assert info.value.reason is Reason.DEADLINE_EXCEEDED


def test_the_autoencoder_kind_has_no_prior_and_no_likelihood(tmp_path: Path) -> None:
    kind = KINDS["autoencoder"]
    torch.manual_seed(0)
    save_autoencoder(tmp_path / "ae", ConvAutoencoder(AEConfig(latent_dim=6)), META)
    spec = ModelSpec("a", kind.parse("models[0]", {"path": str(tmp_path / "ae")}))
    loaded = kind.load(spec, LoadContext(tmp_path))
    assert loaded.capabilities == {Capability.IMAGES, Capability.LATENT_DECODER, Capability.LATENT_ENCODER}
    assert loaded.unfit_parts() == []
    (part,) = {id(p): p for p in loaded.parts.values()}.values()
    assert isinstance(part, AEModel) and not part.has_prior
    part.warm_up()
    with pytest.raises(ConfigError, match="unknown key"):
        parse_model(0, {"name": "a", "kind": "autoencoder", "path": "x", "inversion_steps": 3})
