"""Commands over latent spaces, which call a server (`sample`, `reconstruct`, `interpolate`, `direction`, `traverse`,
`inpaint`, `anomaly`), writing PNG files and grids. The training commands are in `training.py`."""

from __future__ import annotations

import argparse
import io
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np

from embedsvc.cli.output import emit, fail


def register(sub: Any, common: argparse.ArgumentParser) -> None:
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
