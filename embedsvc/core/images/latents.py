"""Latent generation: encode, decode, sample, reconstruct, interpolate, directions, traverse, anomaly scores and
inpainting, over whichever parts a generative model offers (`embedsvc.backends.capabilities`: the latent decoder,
encoder, anomaly scorer and inpainter; the VAE offers all of them). Inputs are validated here against the model and
the limits; no grpc.

Each operation asks the registry for the one part it needs, so a model lacking it is refused before any work:
MODEL_KIND_MISMATCH for a model that is not a latent model at all, OPERATION_NOT_SUPPORTED (FAILED_PRECONDITION) for
one that lacks that part (or a prior, for Sample). Operations that take images as well as latents (Interpolate,
Traverse, CreateDirection, image terms of DecodeLatents) ask for the encoder only when images are given.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, cast

import numpy as np

from embedsvc.backends.capabilities import Capability, ImageEncoder, ImageShape, LatentDecoder, LatentEncoder, Part
from embedsvc.core.expression import Expression, TermKind
from embedsvc.core.images.codec import ImageInput, PixelType, RawImage, decode_pil, to_model_input
from embedsvc.core.images.directions import Direction, DirectionStore
from embedsvc.core.paging import Page, PageTokens, page_size
from embedsvc.core.provenance import Provenance, provenance
from embedsvc.core.registry import ModelRegistry, a_kind
from embedsvc.core.words.arithmetic import FieldOf
from embedsvc.errors import (
    EmbedsvcError,
    Reason,
    check_count,
    invalid,
    limit_exceeded,
    missing,
    operation_not_supported,
)
from embedsvc.limits import Limits
from embedsvc.vectors import check_vector, packed_rows


@dataclass(frozen=True)
class TaggedVector:
    """A latent as it arrives: values and the space tag ("" when untagged)."""

    values: np.ndarray
    space: str = ""


@dataclass(frozen=True)
class PackedLatents:
    """Latents sent as one flat float32 array (packed_latents): rows of the model's latent dimension, untagged."""

    values: np.ndarray


# A point of the latent space: an image (encoded to its mean) or a latent.
Point = ImageInput | TaggedVector


@dataclass(frozen=True)
class Generated:
    """Images (N, C, H, W) in [0, 1] and the latents they were decoded from."""

    images: np.ndarray
    latents: np.ndarray
    provenance: Provenance


class Shaped(Protocol):
    """A part that reads images (of this shape)."""

    @property
    def shape(self) -> ImageShape: ...


class Latents:
    def __init__(
        self, registry: ModelRegistry, directions: DirectionStore, limits: Limits, tokens: PageTokens | None = None
    ) -> None:
        self.registry = registry
        self.directions = directions
        self.limits = limits
        self.tokens = tokens or PageTokens(secrets.token_bytes(32))

    # ---- inputs --------------------------------------------------------------------------------------------------

    def images(self, model: Shaped, images: Sequence[ImageInput], field: str = "images") -> np.ndarray:
        check_count(field, "images", len(images), self.limits.max_images_per_request)
        return to_model_input(list(images), model.shape, max_pixels=self.limits.max_image_pixels, field=field)

    def latent(self, model: Part, dimension: int, vector: TaggedVector, field: str) -> np.ndarray:
        """A vector of the model's space (`dimension` long, tagged with its space or untagged), checked."""
        return check_vector(
            vector.values,
            vector.space,
            space=model.space,
            dimension=dimension,
            owner=f"model '{model.name}'",
            field=field,
        )

    def latents(
        self, model: LatentDecoder, vectors: Sequence[TaggedVector] | PackedLatents, field: str = "latents"
    ) -> np.ndarray:
        if isinstance(vectors, PackedLatents):
            rows = packed_rows(vectors.values, dimension=model.latent_dim, owner=f"model '{model.name}'", field=field)
            check_count(field, "latents", len(rows), self.limits.max_images_per_request)
            return rows.copy()  # writable, and no longer tied to the request's bytes
        check_count(field, "latents", len(vectors), self.limits.max_images_per_request)
        if all(v.values.shape == (model.latent_dim,) and v.space in ("", model.space) for v in vectors):
            stacked = np.stack([v.values for v in vectors]).astype(np.float32, copy=False)
            if np.isfinite(stacked).all():  # the common case, checked for the whole batch at once
                return stacked
        return np.stack([self.latent(model, model.latent_dim, v, f"{field}[{i}]") for i, v in enumerate(vectors)])

    def point(self, model: LatentDecoder, point: Point | None, field: str) -> np.ndarray:
        """A latent as given, or an image's latent mean (`model` is then the encoder: see `_latent_model`)."""
        if point is None:
            raise missing(field, "an image or a latent")
        if isinstance(point, TaggedVector):
            return self.latent(model, model.latent_dim, point, field + ".latent")
        encoder = cast(LatentEncoder, model)  # asked for because an image is given (an isinstance costs 0.4 ms)
        return encoder.encode(self.images(encoder, [point], field + ".image"))[0][0]

    def _latent_model(self, name: str, *, encodes: bool) -> LatentDecoder:
        """The decoder, or when images must be encoded the encoder (which decodes too: one part, one version)."""
        if encodes:
            return self.registry.model(name, Capability.LATENT_ENCODER)
        return self.registry.model(name, Capability.LATENT_DECODER)

    # ---- RPCs ----------------------------------------------------------------------------------------------------

    def encode(self, name: str, images: Sequence[ImageInput]) -> tuple[np.ndarray, np.ndarray | None, Provenance]:
        """Latent means and log-variances (None for a model without a posterior)."""
        model = self.registry.model(name, Capability.LATENT_ENCODER)
        mean, log_var = model.encode(self.images(model, images))
        return mean, log_var, provenance(model, model.encode_method)

    def decode(
        self, name: str, latents: Sequence[TaggedVector] | PackedLatents, expressions: Sequence[Expression]
    ) -> Generated:
        """Images of latents (or of packed latents: `latents` names the field) or of expressions."""
        image_terms = any(t.kind is TermKind.IMAGE for e in expressions for t in e.terms)
        model = self._latent_model(name, encodes=image_terms)
        field = "packed_latents" if isinstance(latents, PackedLatents) else "latents"
        if isinstance(latents, PackedLatents) and not latents.values.size:
            latents = []
        if latents and expressions:
            raise invalid(field, f"set either {field} or expressions, not both")
        if expressions:
            check_count("expressions", "expressions", len(expressions), self.limits.max_images_per_request)
            z = self.compose(
                model,
                expressions,
                lambda e, t: f"expressions[{e}]" + (f".terms[{t}]" if t is not None else ""),
                dimension=model.latent_dim,
            )
        elif isinstance(latents, PackedLatents) or latents:
            z = self.latents(model, latents, field)
        else:
            raise missing("latents", "latents, packed_latents or expressions")
        return Generated(model.decode(z), z, provenance(model, model.decode_method))

    def sample(self, name: str, n: int, seed: int | None, temperature: float | None) -> tuple[Generated, int]:
        model = self.registry.model(name, Capability.LATENT_DECODER)
        if not model.has_prior:
            info = self.registry.info(name)
            message = f"model '{name}' is {a_kind(info.kind)} model, which has no prior to sample from"
            raise operation_not_supported(name, info.kind, message, "prior")
        check_count("n", "images to sample", n, self.limits.max_samples)
        temperature = 1.0 if temperature is None else temperature
        if not (np.isfinite(temperature) and 0.0 <= temperature <= 10.0):
            raise invalid("temperature", f"temperature must be finite and within [0, 10], got {temperature}")
        seed = secrets.randbits(63) if seed is None else seed
        # numpy's PCG64 draws are the same on every platform and device; torch's CPU and CUDA generators differ.
        z = np.random.default_rng(seed).standard_normal((n, model.latent_dim)).astype(np.float32) * temperature
        parameters = {"n": str(n), "seed": str(seed), "temperature": repr(temperature)}
        return Generated(model.decode(z), z, provenance(model, "prior-sample", parameters)), seed

    def reconstruct(self, name: str, images: Sequence[ImageInput]) -> Generated:
        model = self.registry.model(name, Capability.LATENT_ENCODER)
        mean, _ = model.encode(self.images(model, images))
        return Generated(model.decode(mean), mean, provenance(model, model.reconstruct_method))

    def interpolate(self, name: str, start: Point | None, end: Point | None, steps: int, spherical: bool) -> Generated:
        model = self._latent_model(name, encodes=_is_image(start) or _is_image(end))
        steps = _check_steps(steps or 10, 2, self.limits.max_steps, "frames, both ends included")
        a, b = self.point(model, start, "start"), self.point(model, end, "end")
        t = np.linspace(0.0, 1.0, steps)
        z = slerp(a, b, t) if spherical else lerp(a, b, t)
        method = "spherical" if spherical else "linear"
        return Generated(model.decode(z), z, provenance(model, method, {"steps": str(steps)}))

    def create_direction(
        self,
        name: str,
        direction: str,
        sets: tuple[tuple[str, Sequence[ImageInput], Sequence[TaggedVector]], ...],
        description: str,
        replace: bool,
    ) -> Direction:
        model = self._latent_model(name, encodes=any(images for _, images, _ in sets))
        total = sum(len(images) + len(latents) for _, images, latents in sets)
        if total > self.limits.max_direction_examples:
            raise limit_exceeded("to_examples", "examples in both sets", total, self.limits.max_direction_examples)
        means = []
        for (label, images, latents), field in zip(sets, ("from_examples", "to_examples"), strict=True):
            if not images and not latents:
                raise missing(field, f"at least one example image or latent ({label or field})")
            rows = []
            for start in range(0, len(images), self.limits.max_images_per_request):
                chunk = images[start : start + self.limits.max_images_per_request]
                pixels = to_model_input(
                    list(chunk), model.shape, max_pixels=self.limits.max_image_pixels, field=f"{field}.images"
                )
                rows.append(cast(LatentEncoder, model).encode(pixels)[0])  # asked for because there are images
            rows += [
                self.latent(model, model.latent_dim, v, f"{field}.latents[{i}]")[None] for i, v in enumerate(latents)
            ]
            means.append(np.concatenate(rows).astype(np.float64).mean(axis=0))
        counts = tuple(len(images) + len(latents) for _, images, latents in sets)
        return self.directions.create(
            model=model.name,
            model_version=model.version,
            name=direction,
            vector=(means[1] - means[0]).astype(np.float32),
            labels=(sets[0][0], sets[1][0]),
            counts=(counts[0], counts[1]),
            description=description,
            replace=replace,
        )

    def list_directions(self, model: str, size: int, token: str) -> Page[Direction]:
        """Stored directions (of one model, or all), by model then name, a page at a time."""
        if model:  # MODEL_NOT_FOUND / MODEL_KIND_MISMATCH for a wrong name
            self.registry.model(model, Capability.LATENT_DECODER)
        return self.tokens.page(
            self.directions.list(model),
            lambda d: f"{d.model}/{d.name}",
            listing=f"directions:{model}",
            token=token,
            size=page_size(size, self.limits.max_page_size),
        )

    def traverse(self, name: str, start: Point | None, direction: str, strengths: Sequence[float]) -> Generated:
        model = self._latent_model(name, encodes=_is_image(start))
        stored = self.directions.get(model.name, direction, version=model.version, field="direction")
        check_count("strengths", "strengths", len(strengths), self.limits.max_steps)
        values = np.asarray(strengths, dtype=np.float64)
        if not np.isfinite(values).all():
            raise EmbedsvcError(Reason.NOT_FINITE, "strengths must be finite", field="strengths")
        z0 = self.point(model, start, "start")
        z = (z0[None, :] + values[:, None] * stored.array[None, :]).astype(np.float32)
        return Generated(model.decode(z), z, provenance(model, "traverse", {"direction": direction}))

    def anomaly_scores(
        self, name: str, images: Sequence[ImageInput], samples: int, seed: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Provenance]:
        """(scores, data terms, latent terms) per image: for a VAE the negative ELBO, reconstruction NLL and KL."""
        model = self.registry.model(name, Capability.ANOMALY_SCORES)
        if samples < 0:
            raise invalid("samples", f"samples must be 0 (z at the mean) or positive, got {samples}")
        if samples > self.limits.max_elbo_samples:
            raise limit_exceeded("samples", "Monte Carlo samples", samples, self.limits.max_elbo_samples)
        pixels = self.images(model, images)
        data, latent = model.anomaly_terms(pixels, samples=samples, seed=seed)
        scores = data + latent
        return scores, data, latent, provenance(model, model.score_method, {"samples": str(samples), "seed": str(seed)})

    def inpaint(self, name: str, image: ImageInput | None, mask: ImageInput | None, steps: int, seed: int) -> Generated:
        model = self.registry.model(name, Capability.INPAINTING)
        if image is None:
            raise missing("image", "the image to complete")
        if mask is None:
            raise missing("mask", "the mask of missing pixels")
        steps = _check_steps(steps or 200, 1, self.limits.max_inpaint_steps, "optimisation steps")
        image_size = self._size_of(image, "image")
        mask_size = self._size_of(mask, "mask")
        if image_size != mask_size:
            raise EmbedsvcError(
                Reason.DIMENSION_MISMATCH,
                f"the mask is {mask_size[1]}x{mask_size[0]} pixels, the image {image_size[1]}x{image_size[0]}",
                field="mask",
                metadata={"expected": f"{image_size[1]}x{image_size[0]}", "actual": f"{mask_size[1]}x{mask_size[0]}"},
            )
        pixels = self.images(model, [image], "image")
        known = self._known_pixels(model, mask)
        known = np.broadcast_to(known, pixels.shape[1:])[None].copy()
        completed, z = model.inpaint(pixels, known, steps=steps, seed=seed)
        return Generated(
            completed, z, provenance(model, model.inpaint_method, {"steps": str(steps), "seed": str(seed)})
        )

    def _known_pixels(self, model: Shaped, mask: ImageInput) -> np.ndarray:
        """(1, H, W) at the model's size: 1 where a pixel is known, 0 where the mask marks it missing."""
        size = model.shape.size
        if isinstance(mask, RawImage):
            if mask.channels != 1 or (mask.height, mask.width) != (size, size):
                raise EmbedsvcError(
                    Reason.DIMENSION_MISMATCH,
                    f"a raw mask must be {size}x{size}x1 (send a PNG mask to have it resized)",
                    field="mask",
                    metadata={"expected": f"{size}x{size}x1", "actual": f"{mask.height}x{mask.width}x{mask.channels}"},
                )
            if mask.dtype is PixelType.UINT8:
                raw = np.frombuffer(mask.pixels, np.uint8)
                if raw.size != size * size:
                    raise EmbedsvcError(Reason.INVALID_IMAGE, f"a raw mask needs {size * size} bytes", field="mask")
                missing_pixels = (raw > 0).reshape(1, size, size)  # 1 (or 255) marks a missing pixel
            else:
                missing_pixels = (
                    to_model_input([mask], ImageShape(1, size), max_pixels=size * size, field="mask")[0] >= 0.5
                )
        else:
            grey = to_model_input([mask], ImageShape(1, size), max_pixels=self.limits.max_image_pixels, field="mask")
            missing_pixels = grey[0] >= 0.5
        known = (~missing_pixels).astype(np.float32)
        if not known.any():
            raise invalid("mask", "every pixel is marked missing; at least one must be known")
        return known

    def _size_of(self, image: ImageInput, field: str) -> tuple[int, int]:
        """(height, width) as sent."""
        if isinstance(image, RawImage):
            return image.height, image.width
        width, height = decode_pil(image, max_pixels=self.limits.max_image_pixels, field=field).size
        return height, width

    # ---- expressions ---------------------------------------------------------------------------------------------

    def compose(
        self,
        model: ImageEncoder | LatentDecoder,
        expressions: Sequence[Expression],
        field_of: FieldOf,
        *,
        dimension: int,
    ) -> np.ndarray:
        """Each expression's vector in the model's space (`dimension` long): the plain weighted sum of its terms
        (images embedded, by a latent model to their latent means, so `model` is then an image encoder: a latent
        model's encoder; vectors as given; directions by name, which only latent models have)."""
        out = np.zeros((len(expressions), dimension), np.float64)
        for e, expression in enumerate(expressions):
            for t, term in enumerate(expression.terms):
                where = field_of(e, t)
                if term.kind is TermKind.IMAGE and isinstance(term.image, bytes | RawImage):
                    encoder = cast(ImageEncoder, model)  # see the docstring
                    value = encoder.embed(self.images(encoder, [term.image], where + ".image"))[0]
                elif term.kind is TermKind.VECTOR and term.vector is not None:
                    value = self.latent(model, dimension, TaggedVector(term.vector, term.space), where + ".vector")
                elif term.kind is TermKind.DIRECTION:
                    value = self.directions.get(model.name, term.value, version=model.version, field=where).array
                else:
                    raise EmbedsvcError(
                        Reason.TERM_KIND_NOT_SUPPORTED,
                        f"a {term.kind.value} term cannot be evaluated in the space of image model '{model.name}' "
                        "(image, vector and direction terms can)",
                        field=where,
                        metadata={"kind": term.kind.value},
                    )
                out[e] += term.weight * value
        return out.astype(np.float32)


def _is_image(point: Point | None) -> bool:
    return point is not None and not isinstance(point, TaggedVector)


def _check_steps(steps: int, minimum: int, limit: int, what: str) -> int:
    if steps < minimum:
        raise invalid("steps", f"steps ({what}) must be at least {minimum}, got {steps}")
    if steps > limit:
        raise limit_exceeded("steps", what, steps, limit)
    return steps


def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return ((1 - t)[:, None] * a[None, :] + t[:, None] * b[None, :]).astype(np.float32)


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation of directions with linearly interpolated norms (Shoemake; White 2016 for VAEs).
    Falls back to lerp when a or b is zero or they are (anti)parallel."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
    if na == 0 or nb == 0:
        return lerp(a, b, t)
    cos = float(np.clip(np.dot(a64 / na, b64 / nb), -1.0, 1.0))
    omega = np.arccos(cos)
    if np.sin(omega) < 1e-6:
        return lerp(a, b, t)
    ua, ub = a64 / na, b64 / nb
    unit = (np.sin((1 - t) * omega)[:, None] * ua + np.sin(t * omega)[:, None] * ub) / np.sin(omega)
    norms = (1 - t) * na + t * nb
    return (unit * norms[:, None]).astype(np.float32)
