"""Image validation and decoding: formats, corruption, decompression bombs, conversion, raw arrays."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from embedsvc.core.images.codec import ImageShape, PixelType, RawImage, decode_pil, grid, to_model_input, to_png
from embedsvc.errors import EmbedsvcError, Reason

GREY28 = ImageShape(1, 28)


def encoded(array: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array, mode=mode).save(out, format=fmt)
    return out.getvalue()


NOISE = encoded(np.random.default_rng(5).integers(0, 256, (28, 28), dtype=np.uint8))


def reason_of(images: list, shape: ImageShape = GREY28, max_pixels: int = 1_000_000) -> Reason:
    with pytest.raises(EmbedsvcError) as info:
        to_model_input(images, shape, max_pixels=max_pixels)
    return info.value.reason


def test_png_round_trip_is_exact_at_8_bits() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    out = to_model_input([encoded(pixels)], GREY28, max_pixels=10_000)
    np.testing.assert_array_equal(np.rint(out[0, 0] * 255).astype(np.uint8), pixels)
    again = to_model_input([to_png(out[0])], GREY28, max_pixels=10_000)
    np.testing.assert_array_equal(again, out)


def test_conversion_and_resizing() -> None:
    rgb = np.zeros((56, 40, 3), np.uint8)
    rgb[..., 0] = 255
    jpeg = encoded(rgb, "JPEG")
    out = to_model_input([jpeg], GREY28, max_pixels=10_000)
    assert out.shape == (1, 1, 28, 28)
    assert 0.25 < out.mean() < 0.35  # red as grey (Pillow's ITU-R 601 luma: 0.299)
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., :3] = 255  # white, fully transparent: composited onto black
    assert to_model_input([encoded(rgba)], GREY28, max_pixels=10_000).max() == 0.0
    colour = to_model_input([encoded(np.full((10, 10), 200, np.uint8))], ImageShape(3, 16), max_pixels=10_000)
    assert colour.shape == (1, 3, 16, 16)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not an image at all", Reason.INVALID_IMAGE),
        (NOISE[: len(NOISE) // 2], Reason.INVALID_IMAGE),  # truncated
        (encoded(np.zeros((28, 28), np.uint8), "GIF"), Reason.UNSUPPORTED_IMAGE_FORMAT),
        (encoded(np.zeros((28, 28), np.uint8), "BMP"), Reason.UNSUPPORTED_IMAGE_FORMAT),
        (b"", Reason.MISSING_FIELD),
    ],
)
def test_bad_bytes(data: bytes, reason: Reason) -> None:
    assert reason_of([data]) is reason


def test_dimensions_are_checked_before_decoding() -> None:
    big = encoded(np.zeros((200, 300), np.uint8))
    with pytest.raises(EmbedsvcError) as info:
        to_model_input([big], GREY28, max_pixels=50_000)
    assert info.value.reason is Reason.LIMIT_EXCEEDED
    assert info.value.metadata == {"limit": "50000", "actual": "60000"}


def test_pillow_decompression_bomb_warning_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    # 40x40 = 1,600 pixels: over Pillow's (patched) limit but under twice it, so Pillow only warns.
    assert reason_of([encoded(np.zeros((40, 40), np.uint8))], max_pixels=10**9) is Reason.LIMIT_EXCEEDED


def test_raw_images() -> None:
    pixels = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28, 1)
    out = to_model_input([RawImage(pixels.tobytes(), 28, 28, 1)], GREY28, max_pixels=0)
    np.testing.assert_allclose(out[0, 0], pixels[..., 0] / 255.0)
    floats = np.full((28, 28, 1), 0.5, "<f4")
    out = to_model_input([RawImage(floats.tobytes(), 28, 28, 1, PixelType.FLOAT32)], GREY28, max_pixels=0)
    assert (out == 0.5).all()
    assert reason_of([RawImage(pixels.tobytes(), 14, 56, 1)]) is Reason.DIMENSION_MISMATCH
    assert reason_of([RawImage(pixels.tobytes()[:-1], 28, 28, 1)]) is Reason.INVALID_IMAGE
    nan = floats.copy()
    nan[0, 0] = np.nan
    assert reason_of([RawImage(nan.tobytes(), 28, 28, 1, PixelType.FLOAT32)]) is Reason.NOT_FINITE
    assert reason_of([RawImage((floats * 3).tobytes(), 28, 28, 1, PixelType.FLOAT32)]) is Reason.INVALID_VALUE


def test_bad_image_position_is_reported() -> None:
    good = encoded(np.zeros((28, 28), np.uint8))
    with pytest.raises(EmbedsvcError) as info:
        to_model_input([good, good, b"junk"], GREY28, max_pixels=10_000, field="images")
    assert info.value.field == "images[2]"


def test_grid() -> None:
    tiles = np.zeros((5, 1, 4, 4), np.float32)
    out = grid(tiles, columns=3, padding=1)
    assert out.shape == (1, 2 * 5 + 1, 3 * 5 + 1)
    assert decode_pil(to_png(out), max_pixels=10_000).size == (16, 11)
