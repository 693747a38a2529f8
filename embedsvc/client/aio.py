"""The asyncio client: the same methods as `Client`, with the same parameters, as coroutines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
import numpy as np

from embedsvc.client import _messages as m
from embedsvc.client._calls import Calls, Stream, Unary
from embedsvc.client.sync import CHANNEL_OPTIONS
from embedsvc.client.types import (
    AnalogyReport,
    ArithmeticResult,
    Clustering,
    Embeddings,
    EmbedsvcClientError,
    ExpressionLike,
    GeneratedImage,
    Hit,
    ImageLike,
    LatentLike,
    Projection,
    Sampled,
    SearchHit,
    SpaceVector,
    TextEmbeddings,
)
from embedsvc.v1 import arithmetic_pb2, collections_pb2, latent_pb2, maps_pb2, models_pb2

T = TypeVar("T")


class AsyncClient:
    """asyncio client: every method of `Client`, with the same parameters, as a coroutine (`export_items` is an async
    iterator). `timeout` (seconds) applies to every call."""

    def __init__(self, target: str = "localhost:50051", *, timeout: float | None = 60.0) -> None:
        self._channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        self._calls = Calls(self._channel)
        self.timeout = timeout

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _unary(self, call: Unary[T]) -> T:
        try:
            return call.parse(await call.rpc(call.request, timeout=self.timeout))
        except grpc.RpcError as exc:
            raise m.error(exc) from None

    async def _stream(self, call: Stream[T]) -> AsyncIterator[T]:
        try:
            async for response in call.rpc(call.request, timeout=self.timeout):
                yield call.each(response)
        except grpc.RpcError as exc:
            raise m.error(exc) from None

    async def _collect(self, call: Stream[T]) -> list[T]:
        return [value async for value in self._stream(call)]

    # ---- models, health ------------------------------------------------------------------------------------------

    async def list_models(self) -> list[models_pb2.ModelInfo]:
        return await self._unary(self._calls.list_models())

    async def get_model(self, name: str) -> models_pb2.ModelInfo:
        return await self._unary(self._calls.get_model(name))

    async def health(self, service: str = "") -> str:
        """ "SERVING", "NOT_SERVING", ... for the whole server ("") or one service."""
        return await self._unary(self._calls.health_check(service))

    async def wait_until_serving(self, timeout: float = 120.0, service: str = "") -> None:
        """Poll health until SERVING; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if await self.health(service) == "SERVING":
                    return
            except EmbedsvcClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not become SERVING within {timeout:.0f} s")
            await asyncio.sleep(0.2)

    # ---- words and arithmetic ------------------------------------------------------------------------------------

    async def embed_words(self, model: str, words: Sequence[str], *, normalize: bool = False) -> Embeddings:
        return await self._unary(self._calls.embed_words(model, words, normalize))

    async def nearest_words(
        self, model: str, words: Sequence[str], *, top_n: int = 10, restrict_vocab: int = 0
    ) -> list[list[Hit]]:
        return await self._unary(self._calls.nearest_words(model, words, top_n, restrict_vocab))

    async def similarity(self, model: str, pairs: Sequence[tuple[str, str]]) -> list[float]:
        return await self._unary(self._calls.similarity(model, pairs))

    async def doesnt_match(self, model: str, words: Sequence[str]) -> tuple[str, list[tuple[str, float]]]:
        return await self._unary(self._calls.doesnt_match(model, words))

    async def arithmetic(self, model: str, expressions: Sequence[ExpressionLike], **options: Any) -> ArithmeticResult:
        """Expressions as text ("king - man + woman") or lists of terms (words, vectors, (weight, term)). Options:
        method ("cosadd" | "cosmul"), top_n, restrict_vocab, keep_inputs, return_query_vector, return_contributions."""
        return await self._unary(self._calls.arithmetic(model, expressions, options))

    async def evaluate_analogies(self, model: str, analogies: bytes | str | Path, **options: Any) -> AnalogyReport:
        """`analogies` is a file path or its bytes. Options: restrict_vocab, case_sensitive, dummy4unknown, method."""
        return await self._unary(self._calls.evaluate_analogies(model, analogies, options))

    # ---- texts ---------------------------------------------------------------------------------------------------

    async def embed_texts(
        self, model: str, texts: Sequence[str], *, normalize: bool = False, long_texts: str = "truncate"
    ) -> TextEmbeddings:
        """One vector per text; long_texts "truncate" (the model's max_seq_length) or "chunk" (mean of windows)."""
        return await self._unary(self._calls.embed_texts(model, texts, normalize, long_texts))

    async def embed_texts_stream(
        self,
        model: str,
        texts: Sequence[str],
        *,
        batch_size: int = 256,
        normalize: bool = False,
        long_texts: str = "truncate",
        progress: Callable[[int], None] | None = None,
    ) -> TextEmbeddings:
        """Bulk embedding over one EmbedTextsStream call, batch_size texts per message; the vectors of all batches."""
        call = self._calls.embed_texts_stream(model, texts, batch_size, normalize, long_texts, progress)
        return m.joined_text_embeddings(await self._collect(call))

    # ---- images and latents --------------------------------------------------------------------------------------

    async def embed_images(self, model: str, images: Sequence[ImageLike], *, normalize: bool = False) -> Embeddings:
        return await self._unary(self._calls.embed_images(model, images, normalize))

    async def encode_images(self, model: str, images: Sequence[ImageLike]) -> tuple[np.ndarray, np.ndarray]:
        """(means, log variances), each (N, latent_dim)."""
        return await self._unary(self._calls.encode_images(model, images))

    async def decode_latents(
        self, model: str, latents: Sequence[LatentLike] | np.ndarray = (), *, expressions: Sequence[Any] = ()
    ) -> list[GeneratedImage]:
        """Latents (rows of an array, or vectors), or expressions: lists of image, latent and DirectionRef terms."""
        return await self._unary(self._calls.decode_latents(model, latents, expressions))

    async def sample(self, model: str, n: int, *, seed: int | None = None, temperature: float | None = None) -> Sampled:
        return await self._unary(self._calls.sample(model, n, seed, temperature))

    async def reconstruct(self, model: str, images: Sequence[ImageLike]) -> list[GeneratedImage]:
        return await self._unary(self._calls.reconstruct(model, images))

    async def interpolate(
        self,
        model: str,
        start: ImageLike | LatentLike,
        end: ImageLike | LatentLike,
        *,
        steps: int = 10,
        spherical: bool = False,
    ) -> list[GeneratedImage]:
        return await self._collect(self._calls.interpolate(model, start, end, steps, spherical))

    async def traverse(
        self, model: str, start: ImageLike | LatentLike, direction: str, strengths: Sequence[float]
    ) -> list[GeneratedImage]:
        return await self._collect(self._calls.traverse(model, start, direction, strengths))

    async def create_direction(
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
        """Store mean(to examples) - mean(from examples) as a named direction of the model's latent space."""
        examples = {
            "from_images": from_images,
            "to_images": to_images,
            "from_latents": from_latents,
            "to_latents": to_latents,
            "from_label": from_label,
            "to_label": to_label,
        }
        return await self._unary(self._calls.create_direction(model, name, examples, description, replace))

    async def list_directions(self, model: str = "") -> list[latent_pb2.Direction]:
        return await self._unary(self._calls.list_directions(model))

    async def delete_direction(self, model: str, name: str) -> None:
        await self._unary(self._calls.delete_direction(model, name))

    async def anomaly_scores(
        self, model: str, images: Sequence[ImageLike], *, samples: int = 0, seed: int = 0
    ) -> list[dict[str, float]]:
        """Per image: negative_elbo, reconstruction_nll and kl, in nats."""
        return await self._unary(self._calls.anomaly_scores(model, images, samples, seed))

    async def inpaint(
        self, model: str, image: ImageLike, mask: ImageLike, *, steps: int = 200, seed: int = 0
    ) -> GeneratedImage:
        """`mask`: white (or 1 in a raw uint8 array) marks the missing pixels."""
        return await self._unary(self._calls.inpaint(model, image, mask, steps, seed))

    # ---- maps ----------------------------------------------------------------------------------------------------

    async def project(
        self, points: maps_pb2.PointSet, *, dimensions: int = 2, transform: Sequence[maps_pb2.PointSet] = ()
    ) -> Projection:
        """PCA of a point set (see `embedsvc.client.points`); `transform` sets are projected with the same fit."""
        return await self._unary(self._calls.project(points, dimensions, transform))

    async def cluster(
        self,
        points: maps_pb2.PointSet,
        *,
        k: int = 0,
        max_k: int = 10,
        method: str = "gmm",
        covariance: str = "diag",
        reduce_to: int = 0,
        seed: int = 0,
    ) -> Clustering:
        """k = 0 chooses k by BIC (Gaussian mixture); method "gmm" or "kmeans"; covariance full|diag|spherical|tied."""
        options = {"k": k, "max_k": max_k, "method": method, "covariance": covariance, "reduce_to": reduce_to}
        return await self._unary(self._calls.cluster(points, options | {"seed": seed}))

    async def plot(
        self,
        points: maps_pb2.PointSet,
        *,
        width: int = 800,
        height: int = 600,
        title: str = "",
        color_by: str = "",
        cluster_k: int = 0,
        annotate: bool = True,
        thumbnails: bool = False,
    ) -> bytes:
        """PNG bytes of the 2-D PCA map. color_by: "", "group", "cluster" or a collection metadata field."""
        options = {"width": width, "height": height, "title": title, "color_by": color_by, "cluster_k": cluster_k}
        return await self._unary(self._calls.plot(points, thumbnails, options | {"annotate": annotate}))

    # ---- collections ---------------------------------------------------------------------------------------------

    async def create_collection(
        self,
        name: str,
        *,
        dimension: int = 0,
        metric: str = "cosine",
        index: str = "flat",
        model: str = "",
        **params: int,
    ) -> collections_pb2.CollectionInfo:
        """metric: cosine | l2 | ip; index: flat | hnsw | ivf-flat | ivf-pq; params: m, ef_construction, ef_search,
        nlist, nprobe, pq_m, pq_bits."""
        return await self._unary(self._calls.create_collection(name, dimension, metric, index, model, params))

    async def get_collection(self, name: str) -> collections_pb2.CollectionInfo:
        return await self._unary(self._calls.get_collection(name))

    async def list_collections(self) -> list[collections_pb2.CollectionInfo]:
        return await self._unary(self._calls.list_collections())

    async def delete_collection(self, name: str) -> None:
        await self._unary(self._calls.delete_collection(name))

    async def rebuild(self, name: str) -> collections_pb2.CollectionInfo:
        return await self._unary(self._calls.rebuild(name))

    async def upsert(
        self,
        collection: str,
        ids: Sequence[str],
        vectors: np.ndarray | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        inputs: Sequence[str] | None = None,
        images: Sequence[ImageLike] | None = None,
    ) -> tuple[int, int]:
        """One atomic batch; returns (upserted, live count). `inputs` (words, texts) or `images` for a bound
        collection, one per id."""
        return await self._unary(self._calls.upsert(collection, ids, vectors, metadata, inputs, images))

    async def upsert_stream(
        self,
        collection: str,
        ids: Sequence[str],
        vectors: np.ndarray | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        inputs: Sequence[str] | None = None,
        *,
        batch_size: int = 1000,
        progress: Callable[[int], None] | None = None,
    ) -> collections_pb2.UpsertStreamResponse:
        """Bulk load over one stream, `batch_size` items a message; `progress(n)` is called as batches are sent."""
        return await self._unary(
            self._calls.upsert_stream(collection, ids, vectors, metadata, inputs, batch_size, progress)
        )

    async def delete_items(self, collection: str, ids: Sequence[str]) -> tuple[int, int]:
        """Returns (deleted, missing)."""
        return await self._unary(self._calls.delete_items(collection, ids))

    async def get_items(
        self, collection: str, ids: Sequence[str], *, include_vectors: bool = False
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Returns (items as dicts with id, vector, metadata, input; the ids not found)."""
        return await self._unary(self._calls.get_items(collection, ids, include_vectors))

    async def search(
        self,
        collection: str,
        *,
        vector: np.ndarray | SpaceVector | None = None,
        item_id: str = "",
        input: str = "",
        expression: ExpressionLike | arithmetic_pb2.Expression | None = None,
        image: ImageLike | None = None,
        **options: Any,
    ) -> list[SearchHit]:
        """One of vector, item_id, input, expression, image. Options: k, filter, exact, ef_search, nprobe,
        include_vectors, include_metadata. Expressions over an image collection are lists of image, latent and
        DirectionRef terms."""
        return await self._unary(self._calls.search(collection, vector, item_id, input, expression, image, options))

    async def batch_search(
        self, collection: str, queries: np.ndarray | Sequence[collections_pb2.Query], **options: Any
    ) -> list[list[SearchHit]]:
        """Many queries: an (n, d) array of vectors (sent packed), or Query messages. Options as for search."""
        if not isinstance(queries, np.ndarray):
            queries = list(queries)
        return await self._unary(self._calls.batch_search(collection, queries, options))

    async def export_items(self, collection: str, *, batch_size: int = 1000) -> AsyncIterator[dict[str, Any]]:
        """Every item, with its vector and metadata (`async for item in client.export_items(name)`)."""
        async for items in self._stream(self._calls.export_items(collection, batch_size)):
            for item in items:
                yield item
