"""Pure conversions for image messages: ImageInput and LatentPoint in, GeneratedImage and Direction out."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import numpy as np

from embedsvc.core.images.codec import ImageInput, PixelType, RawImage, to_png
from embedsvc.core.images.directions import Direction
from embedsvc.core.images.latents import Generated, Point, TaggedVector
from embedsvc.errors import invalid, missing
from embedsvc.v1 import common_pb2, latent_pb2

_PIXEL_TYPES = {
    common_pb2.PIXEL_TYPE_UNSPECIFIED: PixelType.UINT8,
    common_pb2.PIXEL_TYPE_UINT8: PixelType.UINT8,
    common_pb2.PIXEL_TYPE_FLOAT32: PixelType.FLOAT32,
}


def image(message: common_pb2.ImageInput, field: str) -> ImageInput:
    which = message.WhichOneof("source")
    if which == "data":
        return message.data  # emptiness is reported by the decoder, with the field
    if which == "raw":
        raw = message.raw
        if raw.dtype not in _PIXEL_TYPES:
            raise invalid(field + ".raw.dtype", f"unknown pixel type {raw.dtype}")
        if raw.channels not in (1, 3):
            raise invalid(field + ".raw.channels", f"channels must be 1 or 3, got {raw.channels}")
        if raw.height <= 0 or raw.width <= 0:
            raise invalid(field + ".raw", f"height and width must be positive, got {raw.height}x{raw.width}")
        return RawImage(raw.pixels, raw.height, raw.width, raw.channels, _PIXEL_TYPES[raw.dtype])
    raise missing(field, "an image (data or raw)")


def images(messages: Iterable[common_pb2.ImageInput], field: str = "images") -> list[ImageInput]:
    return [image(m, f"{field}[{i}]") for i, m in enumerate(messages)]


def tagged(message: common_pb2.Vector) -> TaggedVector:
    return TaggedVector(np.array(list(message.values), dtype=np.float32), message.space)


def point(message: latent_pb2.LatentPoint, present: bool, field: str) -> Point | None:
    if not present:
        return None
    which = message.WhichOneof("point")
    if which == "image":
        return image(message.image, field + ".image")
    if which == "latent":
        return tagged(message.latent)
    raise missing(field, "an image or a latent")


def pngs(result: Generated) -> list[bytes]:
    return [to_png(picture) for picture in result.images]


def generated(result: Generated, space: str) -> list[latent_pb2.GeneratedImage]:
    return [
        latent_pb2.GeneratedImage(png=to_png(picture), latent=common_pb2.Vector(values=z, space=space))
        for picture, z in zip(result.images, result.latents.tolist(), strict=True)
    ]


def direction_message(d: Direction, space: str, *, with_vector: bool = True) -> latent_pb2.Direction:
    message = latent_pb2.Direction(
        name=d.name,
        model=d.model,
        model_version=d.model_version,
        from_label=d.from_label,
        to_label=d.to_label,
        from_count=d.from_count,
        to_count=d.to_count,
        norm=d.norm,
        description=d.description,
    )
    message.create_time.FromDatetime(datetime.fromisoformat(d.created_at.replace("Z", "+00:00")))
    if with_vector:
        message.vector.CopyFrom(common_pb2.Vector(values=list(d.vector), space=space))
    return message
