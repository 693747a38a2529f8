"""The image half of the Python client: EmbedImages and every LatentService call, numpy and PNG bytes in and out.

Images may be given as PNG/JPEG bytes, a path to such a file, or a numpy array (H, W) or (H, W, C), uint8 0..255 or
float32 in [0, 1], sent raw (not resized by the server: it must have the model's size).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from embedsvc.client_messages import Embeddings, SpaceVector, _error, _provenance, _vector
from embedsvc.v1 import arithmetic_pb2, common_pb2, images_pb2, latent_pb2

ImageLike = bytes | Path | np.ndarray
LatentLike = np.ndarray | SpaceVector


@dataclass(frozen=True)
class DirectionRef:
    """A named latent direction as an expression term: `[(1.0, image), (1.5, DirectionRef("thick"))]`."""

    name: str


@dataclass(frozen=True)
class GeneratedImage:
    png: bytes
    latent: np.ndarray
    space: str

    def array(self) -> np.ndarray:
        """The image as float32 (H, W) or (H, W, C) in [0, 1]."""
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(self.png)), dtype=np.float32) / 255.0


@dataclass(frozen=True)
class Sampled:
    images: list[GeneratedImage]
    seed: int


def image_input(image: ImageLike) -> common_pb2.ImageInput:
    if isinstance(image, Path):
        return common_pb2.ImageInput(data=image.read_bytes())
    if isinstance(image, bytes | bytearray):
        return common_pb2.ImageInput(data=bytes(image))
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"an image array is (H, W) or (H, W, C), got shape {array.shape}")
    if array.dtype == np.uint8:
        dtype, pixels = common_pb2.PIXEL_TYPE_UINT8, np.ascontiguousarray(array).tobytes()
    else:
        dtype, pixels = common_pb2.PIXEL_TYPE_FLOAT32, np.ascontiguousarray(array, dtype="<f4").tobytes()
    raw = common_pb2.RawImage(
        pixels=pixels, height=array.shape[0], width=array.shape[1], channels=array.shape[2], dtype=dtype
    )
    return common_pb2.ImageInput(raw=raw)


def _point(value: ImageLike | LatentLike) -> latent_pb2.LatentPoint:
    if isinstance(value, SpaceVector) or (isinstance(value, np.ndarray) and value.ndim == 1):
        return latent_pb2.LatentPoint(latent=_vector(value))
    return latent_pb2.LatentPoint(image=image_input(value))


def _term(term: Any) -> arithmetic_pb2.Term:
    weight = 1.0
    if isinstance(term, tuple):
        weight, term = float(term[0]), term[1]
    if isinstance(term, DirectionRef):
        return arithmetic_pb2.Term(weight=weight, direction=term.name)
    if isinstance(term, SpaceVector) or (isinstance(term, np.ndarray) and term.ndim == 1):
        return arithmetic_pb2.Term(weight=weight, vector=_vector(term))
    return arithmetic_pb2.Term(weight=weight, image=image_input(term))


def image_expression(terms: Sequence[Any]) -> arithmetic_pb2.Expression:
    """An expression over images, latents (1-D arrays) and DirectionRef, each optionally (weight, value)."""
    return arithmetic_pb2.Expression(terms=[_term(t) for t in terms])


def _generated(messages: Any) -> list[GeneratedImage]:
    return [GeneratedImage(m.png, np.asarray(m.latent.values, dtype=np.float32), m.latent.space) for m in messages]


def resize_png(data: bytes, size: int, channels: int) -> bytes:
    """An image file's bytes as a PNG of the model's size and channels (for pictures beside generated ones)."""
    from embedsvc.backends.base import ImageShape
    from embedsvc.core.images.codec import to_model_input, to_png

    return to_png(to_model_input([data], ImageShape(channels, size), max_pixels=1 << 28)[0])


class ImageClientMixin:
    """Methods `Client` gains for images; relies on `_run`, `_calls` and `timeout`."""

    _calls: Any
    timeout: float | None

    # Provided by Client: sends (rpc, request, parse) and raises EmbedsvcClientError on failure.
    _run: Callable[[Any], Any]

    def _stream(self, rpc: Any, request: Any) -> list[GeneratedImage]:
        try:
            return [_generated([r.frame.image])[0] for r in rpc(request, timeout=self.timeout)]
        except grpc.RpcError as exc:
            raise _error(exc) from None

    def embed_images(self, model: str, images: Sequence[ImageLike], *, normalize: bool = False) -> Embeddings:
        return self._run(embed_images_call(self._calls, model, images, normalize))

    def encode_images(self, model: str, images: Sequence[ImageLike]) -> tuple[np.ndarray, np.ndarray]:
        """(means, log variances), each (N, latent_dim)."""
        request = latent_pb2.EncodeImagesRequest(model=model, images=[image_input(i) for i in images])

        def parse(r: latent_pb2.EncodeImagesResponse) -> tuple[np.ndarray, np.ndarray]:
            # list() first: numpy reads a list of floats far faster than a repeated-field container.
            means = np.array([list(c.mean.values) for c in r.codes], dtype=np.float32)
            return means, np.array([list(c.log_variance.values) for c in r.codes], dtype=np.float32)

        return self._run((self._calls.latent.EncodeImages, request, parse))

    def decode_latents(
        self, model: str, latents: Sequence[LatentLike] | np.ndarray = (), *, expressions: Sequence[Any] = ()
    ) -> list[GeneratedImage]:
        """Latents (rows of an array, or vectors), or expressions (lists of terms, see `image_expression`)."""
        if isinstance(latents, np.ndarray) and latents.ndim == 2:  # one tolist() for the matrix: cheaper than per row
            rows = [common_pb2.Vector(values=z) for z in np.asarray(latents, dtype=np.float32).tolist()]
        else:
            rows = [_vector(z) for z in latents]
        request = latent_pb2.DecodeLatentsRequest(
            model=model,
            latents=rows,
            expressions=[image_expression(e) for e in expressions],
        )
        return self._run((self._calls.latent.DecodeLatents, request, lambda r: _generated(r.images)))

    def sample(self, model: str, n: int, *, seed: int | None = None, temperature: float | None = None) -> Sampled:
        request = latent_pb2.SampleRequest(model=model, n=n)
        if seed is not None:
            request.seed = seed
        if temperature is not None:
            request.temperature = temperature
        return self._run((self._calls.latent.Sample, request, lambda r: Sampled(_generated(r.images), r.seed)))

    def reconstruct(self, model: str, images: Sequence[ImageLike]) -> list[GeneratedImage]:
        request = latent_pb2.ReconstructRequest(model=model, images=[image_input(i) for i in images])
        return self._run((self._calls.latent.Reconstruct, request, lambda r: _generated(r.images)))

    def interpolate(
        self,
        model: str,
        start: ImageLike | LatentLike,
        end: ImageLike | LatentLike,
        *,
        steps: int = 10,
        spherical: bool = False,
    ) -> list[GeneratedImage]:
        mode = latent_pb2.INTERPOLATION_MODE_SPHERICAL if spherical else latent_pb2.INTERPOLATION_MODE_LINEAR
        request = latent_pb2.InterpolateRequest(
            model=model, start=_point(start), end=_point(end), steps=steps, mode=mode
        )
        return self._stream(self._calls.latent.Interpolate, request)

    def traverse(
        self, model: str, start: ImageLike | LatentLike, direction: str, strengths: Sequence[float]
    ) -> list[GeneratedImage]:
        request = latent_pb2.TraverseRequest(
            model=model, start=_point(start), direction=direction, strengths=list(strengths)
        )
        return self._stream(self._calls.latent.Traverse, request)

    def create_direction(
        self,
        model: str,
        name: str,
        *,
        from_images: Sequence[ImageLike] = (),
        to_images: Sequence[ImageLike] = (),
        from_latents: Sequence[LatentLike] = (),
        to_latents: Sequence[LatentLike] = (),
        from_label: str = "",
        to_label: str = "",
        description: str = "",
        replace: bool = False,
    ) -> latent_pb2.Direction:
        request = latent_pb2.CreateDirectionRequest(
            model=model,
            name=name,
            from_examples=latent_pb2.ExampleSet(
                label=from_label,
                images=[image_input(i) for i in from_images],
                latents=[_vector(z) for z in from_latents],
            ),
            to_examples=latent_pb2.ExampleSet(
                label=to_label, images=[image_input(i) for i in to_images], latents=[_vector(z) for z in to_latents]
            ),
            description=description,
            replace=replace,
        )
        return self._run((self._calls.latent.CreateDirection, request, lambda r: r.direction))

    def list_directions(self, model: str = "") -> list[latent_pb2.Direction]:
        request = latent_pb2.ListDirectionsRequest(model=model)
        return self._run((self._calls.latent.ListDirections, request, lambda r: list(r.directions)))

    def delete_direction(self, model: str, name: str) -> None:
        request = latent_pb2.DeleteDirectionRequest(model=model, name=name)
        self._run((self._calls.latent.DeleteDirection, request, lambda r: None))

    def anomaly_scores(
        self, model: str, images: Sequence[ImageLike], *, samples: int = 0, seed: int = 0
    ) -> list[dict[str, float]]:
        """Per image: negative_elbo, reconstruction_nll and kl, in nats."""
        request = latent_pb2.AnomalyScoreRequest(
            model=model, images=[image_input(i) for i in images], samples=samples, seed=seed
        )

        def parse(r: latent_pb2.AnomalyScoreResponse) -> list[dict[str, float]]:
            return [
                {"negative_elbo": s.negative_elbo, "reconstruction_nll": s.reconstruction_nll, "kl": s.kl}
                for s in r.scores
            ]

        return self._run((self._calls.latent.AnomalyScore, request, parse))

    def inpaint(
        self, model: str, image: ImageLike, mask: ImageLike, *, steps: int = 200, seed: int = 0
    ) -> GeneratedImage:
        """`mask`: white (or 1 in a raw uint8 array) marks the missing pixels."""
        request = latent_pb2.InpaintRequest(
            model=model, image=image_input(image), mask=image_input(mask), steps=steps, seed=seed
        )
        return self._run((self._calls.latent.Inpaint, request, lambda r: _generated([r.image])[0]))


def embed_images_call(calls: Any, model: str, images: Sequence[ImageLike], normalize: bool) -> tuple[Any, Any, Any]:
    """(rpc, request, parse) of EmbedImages, for the sync and async clients."""
    request = images_pb2.EmbedImagesRequest(model=model, images=[image_input(i) for i in images], normalize=normalize)
    return calls.images.EmbedImages, request, _image_embeddings


def _image_embeddings(response: images_pb2.EmbedImagesResponse) -> Embeddings:
    vectors = np.asarray([v.values for v in response.vectors], dtype=np.float32)
    space = response.vectors[0].space if response.vectors else ""
    return Embeddings(vectors, space, [True] * len(vectors), _provenance(response.provenance))


__all__ = [
    "DirectionRef",
    "GeneratedImage",
    "ImageClientMixin",
    "ImageLike",
    "Sampled",
    "image_expression",
    "image_input",
]
