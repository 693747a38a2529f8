"""LatentService and ImageService: thin adapters over embedsvc.core.images.latents and the image models."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np

from embedsvc.backends.capabilities import Capability
from embedsvc.core.images.codec import to_model_input
from embedsvc.core.images.latents import Generated, Latents, PackedLatents, TaggedVector
from embedsvc.core.provenance import provenance
from embedsvc.errors import check_count, invalid
from embedsvc.transport import convert
from embedsvc.transport import images_convert as ic
from embedsvc.v1 import images_pb2, images_pb2_grpc, latent_pb2, latent_pb2_grpc
from embedsvc.vectors import unit_rows


class LatentServicer(latent_pb2_grpc.LatentServiceServicer):
    def __init__(self, latents: Latents) -> None:
        self._latents = latents
        self._limits = latents.limits

    def _space(self, model: str) -> str:
        return self._latents.registry.model(model, Capability.LATENT_DECODER).space

    def _images(self, result: Generated, model: str) -> list[latent_pb2.GeneratedImage]:
        return ic.generated(result, self._space(model))

    def EncodeImages(
        self, request: latent_pb2.EncodeImagesRequest, context: grpc.ServicerContext
    ) -> latent_pb2.EncodeImagesResponse:
        mean, log_var, prov = self._latents.encode(request.model, ic.images(request.images))
        response = latent_pb2.EncodeImagesResponse(provenance=convert.provenance_message(prov))
        space = self._space(request.model)
        if request.packed_results:
            response.packed_means.CopyFrom(convert.packed_vectors_message(mean, space))
            if log_var is not None:  # a model without a posterior (an autoencoder) has no log-variances
                response.packed_log_variances.CopyFrom(convert.packed_vectors_message(log_var, space))
            return response
        variances = log_var.tolist() if log_var is not None else [None] * len(mean)
        for m, v in zip(mean.tolist(), variances, strict=True):  # one tolist per matrix: cheaper than per row
            code = response.codes.add()
            code.mean.values.extend(m)
            code.mean.space = space
            if v is not None:
                code.log_variance.values.extend(v)
                code.log_variance.space = space
        return response

    def DecodeLatents(
        self, request: latent_pb2.DecodeLatentsRequest, context: grpc.ServicerContext
    ) -> latent_pb2.DecodeLatentsResponse:
        check_count(
            "expressions", "expressions", len(request.expressions), self._limits.max_images_per_request, minimum=0
        )
        expressions = convert.expressions(list(request.expressions), self._limits) if request.expressions else []
        if request.packed_latents:
            if request.latents:
                raise invalid("packed_latents", "set packed_latents or latents, not both")
            latents: list[TaggedVector] | PackedLatents = PackedLatents(
                convert.packed_floats(request.packed_latents, "packed_latents")
            )
        else:
            latents = [ic.tagged(v) for v in request.latents]
        result = self._latents.decode(request.model, latents, expressions)
        response = latent_pb2.DecodeLatentsResponse(provenance=convert.provenance_message(result.provenance))
        if request.packed_results:
            response.pngs.extend(ic.pngs(result))
            response.packed_latents.CopyFrom(convert.packed_vectors_message(result.latents, self._space(request.model)))
        else:
            response.images.extend(self._images(result, request.model))
        return response

    def Sample(self, request: latent_pb2.SampleRequest, context: grpc.ServicerContext) -> latent_pb2.SampleResponse:
        result, seed = self._latents.sample(
            request.model,
            request.n,
            request.seed if request.HasField("seed") else None,
            request.temperature if request.HasField("temperature") else None,
        )
        return latent_pb2.SampleResponse(
            images=self._images(result, request.model),
            seed=seed,
            provenance=convert.provenance_message(result.provenance),
        )

    def Reconstruct(
        self, request: latent_pb2.ReconstructRequest, context: grpc.ServicerContext
    ) -> latent_pb2.ReconstructResponse:
        result = self._latents.reconstruct(request.model, ic.images(request.images))
        return latent_pb2.ReconstructResponse(
            images=self._images(result, request.model), provenance=convert.provenance_message(result.provenance)
        )

    def _frames(self, result: Generated, positions: np.ndarray, model: str) -> Iterator[latent_pb2.Frame]:
        prov = convert.provenance_message(result.provenance)
        for i, (image, position) in enumerate(zip(self._images(result, model), positions, strict=True)):
            yield latent_pb2.Frame(index=i, position=float(position), image=image, provenance=prov)

    def Interpolate(
        self, request: latent_pb2.InterpolateRequest, context: grpc.ServicerContext
    ) -> Iterator[latent_pb2.InterpolateResponse]:
        result = self._latents.interpolate(
            request.model,
            ic.point(request.start, request.HasField("start"), "start"),
            ic.point(request.end, request.HasField("end"), "end"),
            request.steps,
            request.mode == latent_pb2.INTERPOLATION_MODE_SPHERICAL,
        )
        positions = np.linspace(0.0, 1.0, len(result.latents))
        for frame in self._frames(result, positions, request.model):
            yield latent_pb2.InterpolateResponse(frame=frame)

    def CreateDirection(
        self, request: latent_pb2.CreateDirectionRequest, context: grpc.ServicerContext
    ) -> latent_pb2.CreateDirectionResponse:
        sets = tuple(
            (
                s.label,
                ic.images(s.images, f"{field}.images"),
                [ic.tagged(v) for v in s.latents],
            )
            for s, field in ((request.from_examples, "from_examples"), (request.to_examples, "to_examples"))
        )
        direction = self._latents.create_direction(
            request.model, request.name, sets, request.description, request.replace
        )
        return latent_pb2.CreateDirectionResponse(direction=ic.direction_message(direction, self._space(request.model)))

    def ListDirections(
        self, request: latent_pb2.ListDirectionsRequest, context: grpc.ServicerContext
    ) -> latent_pb2.ListDirectionsResponse:
        page = self._latents.list_directions(request.model, request.page_size, request.page_token)
        spaces = {i.name: i.space for i in self._latents.registry.infos()}
        return latent_pb2.ListDirectionsResponse(
            directions=[
                ic.direction_message(d, spaces.get(d.model, ""), with_vector=request.include_vectors)
                for d in page.entries
            ],
            next_page_token=page.next_page_token,
        )

    def DeleteDirection(
        self, request: latent_pb2.DeleteDirectionRequest, context: grpc.ServicerContext
    ) -> latent_pb2.DeleteDirectionResponse:
        self._latents.directions.delete(request.model, request.name)
        return latent_pb2.DeleteDirectionResponse()

    def Traverse(
        self, request: latent_pb2.TraverseRequest, context: grpc.ServicerContext
    ) -> Iterator[latent_pb2.TraverseResponse]:
        strengths = list(request.strengths)
        result = self._latents.traverse(
            request.model, ic.point(request.start, request.HasField("start"), "start"), request.direction, strengths
        )
        for frame in self._frames(result, np.asarray(strengths), request.model):
            yield latent_pb2.TraverseResponse(frame=frame)

    def AnomalyScore(
        self, request: latent_pb2.AnomalyScoreRequest, context: grpc.ServicerContext
    ) -> latent_pb2.AnomalyScoreResponse:
        nelbo, recon, kl, prov = self._latents.anomaly_scores(
            request.model, ic.images(request.images), request.samples, request.seed
        )
        return latent_pb2.AnomalyScoreResponse(
            scores=[
                latent_pb2.ImageScore(negative_elbo=float(n), reconstruction_nll=float(r), kl=float(k))
                for n, r, k in zip(nelbo, recon, kl, strict=True)
            ],
            provenance=convert.provenance_message(prov),
        )

    def Inpaint(self, request: latent_pb2.InpaintRequest, context: grpc.ServicerContext) -> latent_pb2.InpaintResponse:
        result = self._latents.inpaint(
            request.model,
            ic.image(request.image, "image") if request.HasField("image") else None,
            ic.image(request.mask, "mask") if request.HasField("mask") else None,
            request.steps,
            request.seed,
        )
        (image,) = self._images(result, request.model)
        return latent_pb2.InpaintResponse(image=image, provenance=convert.provenance_message(result.provenance))


class ImageServicer(images_pb2_grpc.ImageServiceServicer):
    def __init__(self, latents: Latents) -> None:
        self._registry = latents.registry
        self._limits = latents.limits

    def EmbedImages(
        self, request: images_pb2.EmbedImagesRequest, context: grpc.ServicerContext
    ) -> images_pb2.EmbedImagesResponse:
        model = self._registry.model(request.model, Capability.IMAGES)
        check_count("images", "images", len(request.images), self._limits.max_images_per_request)
        pixels = to_model_input(ic.images(request.images), model.shape, max_pixels=self._limits.max_image_pixels)
        vectors = model.embed(pixels)
        if request.normalize:
            vectors = unit_rows(vectors)
        return images_pb2.EmbedImagesResponse(
            vectors=[convert.vector_message(v, model.space) for v in vectors],
            provenance=convert.provenance_message(
                provenance(model, model.method, {"normalize": str(request.normalize).lower(), "device": model.device})
            ),
        )
