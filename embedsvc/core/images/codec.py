"""Images in and out: validating and decoding PNG/JPEG bytes or raw pixel arrays into model input, and PNG out.

Policy (documented in the README and the proto):
- encoded images must be PNG or JPEG; their dimensions are checked against `max_image_pixels` from the header, before
  any pixel is decoded, and Pillow's decompression-bomb warning is an error;
- encoded images are converted to the model's channels (grey or RGB; alpha is dropped) and resized to its size
  (bilinear), so a user's photo of a digit works without preparation;
- raw arrays are taken as prepared: their height, width and channels must equal the model's (DIMENSION_MISMATCH
  otherwise), float32 values must be finite and within [0, 1].
Model input is float32 (N, C, H, W) in [0, 1].
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from PIL import Image, UnidentifiedImageError

from embedsvc.backends.capabilities import ImageShape
from embedsvc.errors import EmbedsvcError, Reason, missing

ACCEPTED_FORMATS = ("PNG", "JPEG")
# Pillow warns about a decompression bomb (and refuses one over twice its limit) at open, from the header. The warning
# is an error everywhere in the process: a process-wide filter, because catch_warnings() is not thread-safe.
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


class PixelType(StrEnum):
    UINT8 = "uint8"  # 0..255
    FLOAT32 = "float32"  # 0.0..1.0, little-endian


@dataclass(frozen=True)
class RawImage:
    """Pixels in row-major height x width x channels order."""

    pixels: bytes
    height: int
    width: int
    channels: int
    dtype: PixelType = PixelType.UINT8


ImageInput = bytes | RawImage


def to_model_input(
    images: list[ImageInput], shape: ImageShape, *, max_pixels: int, field: str = "images"
) -> np.ndarray:
    """Every image as float32 (N, C, H, W) in [0, 1]; the first bad one raises with its position in `field`."""
    out = np.empty((len(images), shape.channels, shape.size, shape.size), dtype=np.float32)
    for i, image in enumerate(images):
        where = f"{field}[{i}]"
        if isinstance(image, RawImage):
            out[i] = _from_raw(image, shape, where)
        else:
            out[i] = _from_bytes(image, shape, max_pixels, where)
    return out


def decode_pil(data: bytes, *, max_pixels: int, field: str = "image") -> Image.Image:
    """Validate and fully decode PNG or JPEG bytes (see the module policy)."""
    if not data:
        raise missing(field, "the image bytes")
    try:
        image = Image.open(io.BytesIO(data))
        _check_image(image, field, max_pixels)
        image.load()
    except EmbedsvcError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise EmbedsvcError(
            Reason.LIMIT_EXCEEDED,
            f"decompression bomb refused: {exc}",
            field=field,
            metadata={"limit": str(max_pixels)},
        ) from None
    except UnidentifiedImageError:
        raise _invalid(field, "not an image: the bytes are not a PNG or JPEG file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise _invalid(field, f"the image is truncated or corrupt ({exc})") from None
    return image


def _check_image(image: Image.Image, field: str, max_pixels: int) -> None:
    """Format and dimensions, from the header only (nothing decoded yet)."""
    if image.format not in ACCEPTED_FORMATS:
        raise EmbedsvcError(
            Reason.UNSUPPORTED_IMAGE_FORMAT,
            f"{image.format} images are not accepted; send PNG or JPEG",
            field=field,
            metadata={"format": str(image.format), "accepted": ",".join(ACCEPTED_FORMATS)},
        )
    width, height = image.size
    # Pillow's own bomb limit counts too, whatever the warning filters of the process are (pytest resets them).
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    if width * height > limit:
        raise EmbedsvcError(
            Reason.LIMIT_EXCEEDED,
            f"the image is {width}x{height} = {width * height} pixels, over the limit of {limit}",
            field=field,
            metadata={"limit": str(limit), "actual": str(width * height)},
        )


def _from_bytes(data: bytes, shape: ImageShape, max_pixels: int, field: str) -> np.ndarray:
    image = decode_pil(data, max_pixels=max_pixels, field=field)
    if image.mode in ("I", "I;16", "I;16B", "F"):  # 16-bit or float grey: scale to 8 bits, not clip
        scale = 65535.0 if image.mode.startswith("I") else 1.0
        array = np.asarray(image, dtype=np.float32) / scale
        image = Image.fromarray(np.clip(array * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite onto black so transparent pixels read as background, the way digits are drawn.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    image = image.convert("L" if shape.channels == 1 else "RGB")
    if image.size != (shape.size, shape.size):
        image = image.resize((shape.size, shape.size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255.0
    if shape.channels == 1:
        return array[None, :, :]
    return array.transpose(2, 0, 1)


def _from_raw(image: RawImage, shape: ImageShape, field: str) -> np.ndarray:
    got = (image.height, image.width, image.channels)
    want = (shape.size, shape.size, shape.channels)
    if got != want:
        raise EmbedsvcError(
            Reason.DIMENSION_MISMATCH,
            f"a raw image must be height x width x channels = {want[0]}x{want[1]}x{want[2]} for this model, "
            f"got {got[0]}x{got[1]}x{got[2]} (encoded PNG/JPEG images are resized; raw arrays are not)",
            field=field,
            metadata={"expected": "x".join(map(str, want)), "actual": "x".join(map(str, got))},
        )
    dtype = np.dtype("<f4") if image.dtype is PixelType.FLOAT32 else np.dtype(np.uint8)
    expected_bytes = math.prod(want) * dtype.itemsize
    if len(image.pixels) != expected_bytes:
        raise _invalid(
            field, f"a raw {image.dtype.value} image of {got} needs {expected_bytes} bytes, got {len(image.pixels)}"
        )
    array = np.frombuffer(image.pixels, dtype=dtype).reshape(want)
    if image.dtype is PixelType.FLOAT32:
        if not np.isfinite(array).all():
            raise EmbedsvcError(Reason.NOT_FINITE, "the raw image has NaN or infinite pixels", field=field)
        if array.min() < 0.0 or array.max() > 1.0:
            raise EmbedsvcError(Reason.INVALID_VALUE, "float32 pixels must lie within [0, 1]", field=field)
        pixels = array.astype(np.float32)
    else:
        pixels = array.astype(np.float32) / 255.0
    return pixels.transpose(2, 0, 1)


def _invalid(field: str, message: str) -> EmbedsvcError:
    return EmbedsvcError(Reason.INVALID_IMAGE, message, field=field)


def to_png(image: np.ndarray) -> bytes:
    """One (C, H, W) float image in [0, 1] as PNG bytes (8 bits per channel; zlib level 1: fast, still lossless)."""
    pixels = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    mode = "L" if pixels.shape[0] == 1 else "RGB"
    array = pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)
    out = io.BytesIO()
    Image.fromarray(array, mode=mode).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def grid(images: np.ndarray, *, columns: int = 0, padding: int = 2) -> np.ndarray:
    """(N, C, H, W) images tiled into one (C, H', W') image, `columns` wide (default: about square), on white lines."""
    n, c, h, w = images.shape
    columns = columns or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / columns)
    out = np.ones((c, rows * (h + padding) + padding, columns * (w + padding) + padding), dtype=np.float32)
    for i in range(n):
        r, k = divmod(i, columns)
        top, left = padding + r * (h + padding), padding + k * (w + padding)
        out[:, top : top + h, left : left + w] = images[i]
    return out
