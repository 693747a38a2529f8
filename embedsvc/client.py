"""Python client for embedsvc: sync (`Client`) and asyncio (`AsyncClient`), numpy in and numpy out.

    with Client("localhost:50051") as c:
        hits = c.arithmetic("minilm-static", ["king - man + woman"])[0].hits

Failures raise `EmbedsvcClientError` with the gRPC code, the machine-readable reason, the offending field and the
metadata from the server's google.rpc.Status details.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from embedsvc.client_images import (
    DirectionRef,
    GeneratedImage,
    ImageClientMixin,
    ImageLike,
    Sampled,
    embed_images_call,
    image_input,
)
from embedsvc.client_maps import MapClientMixin
from embedsvc.client_messages import (
    INDEX_KINDS,
    METHODS,
    METRICS,
    AnalogyReport,
    ArithmeticResult,
    Embeddings,
    EmbedsvcClientError,
    ExpressionLike,
    ExpressionResult,
    Hit,
    Provenance,
    SearchHit,
    SectionScore,
    SpaceVector,
    TermLike,
    TextEmbeddings,
    _analogy_report,
    _arithmetic_result,
    _embed_texts_request,
    _embeddings,
    _error,
    _expression,
    _hit,
    _item_dict,
    _query,
    _search_options,
    _text_embeddings,
    build_items,
    packed_rows,
)
from embedsvc.v1 import (
    arithmetic_pb2,
    arithmetic_pb2_grpc,
    collections_pb2,
    collections_pb2_grpc,
    images_pb2_grpc,
    latent_pb2_grpc,
    maps_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    text_pb2,
    text_pb2_grpc,
    words_pb2,
    words_pb2_grpc,
)

T = TypeVar("T")
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]

__all__ = [
    "AnalogyReport",
    "ArithmeticResult",
    "AsyncClient",
    "Client",
    "DirectionRef",
    "Embeddings",
    "EmbedsvcClientError",
    "ExpressionLike",
    "ExpressionResult",
    "GeneratedImage",
    "Hit",
    "ImageLike",
    "Provenance",
    "Sampled",
    "SearchHit",
    "SectionScore",
    "SpaceVector",
    "TermLike",
    "TextEmbeddings",
    "build_items",
]


class _Calls:
    """Request builders and response parsers shared by the sync and async clients: (stub, method, request, parse)."""

    def __init__(self, channel: grpc.Channel | grpc.aio.Channel) -> None:
        self.models = models_pb2_grpc.ModelServiceStub(channel)
        self.words = words_pb2_grpc.WordServiceStub(channel)
        self.arith = arithmetic_pb2_grpc.ArithmeticServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)
        self.text = text_pb2_grpc.TextServiceStub(channel)
        self.collections = collections_pb2_grpc.CollectionServiceStub(channel)
        self.images = images_pb2_grpc.ImageServiceStub(channel)
        self.latent = latent_pb2_grpc.LatentServiceStub(channel)
        self.maps = maps_pb2_grpc.MapServiceStub(channel)

    def create_collection(
        self, name: str, dimension: int, metric: str, index: str, model: str, params: dict[str, int]
    ) -> tuple[Any, Any, Any]:
        request = collections_pb2.CreateCollectionRequest(
            name=name,
            dimension=dimension,
            metric=METRICS[metric],
            index=collections_pb2.IndexSpec(kind=INDEX_KINDS[index], **params),
            model=model,
        )
        return self.collections.CreateCollection, request, lambda r: r.collection

    def get_collection(self, name: str) -> tuple[Any, Any, Any]:
        request = collections_pb2.GetCollectionRequest(name=name)
        return self.collections.GetCollection, request, lambda r: r.collection

    def list_collections(self) -> tuple[Any, Any, Any]:
        request = collections_pb2.ListCollectionsRequest()
        return self.collections.ListCollections, request, lambda r: list(r.collections)

    def delete_collection(self, name: str) -> tuple[Any, Any, Any]:
        request = collections_pb2.DeleteCollectionRequest(name=name)
        return self.collections.DeleteCollection, request, lambda r: None

    def upsert(self, collection: str, built: tuple[list[collections_pb2.Item], bytes]) -> tuple[Any, Any, Any]:
        items, packed = built
        request = collections_pb2.UpsertRequest(collection=collection, items=items, packed_vectors=packed)
        return self.collections.Upsert, request, lambda r: (r.upserted, r.count)

    def delete_items(self, collection: str, ids: Sequence[str]) -> tuple[Any, Any, Any]:
        request = collections_pb2.DeleteItemsRequest(collection=collection, ids=list(ids))
        return self.collections.DeleteItems, request, lambda r: (r.deleted, r.missing)

    def get_items(self, collection: str, ids: Sequence[str], include_vectors: bool) -> tuple[Any, Any, Any]:
        request = collections_pb2.GetItemsRequest(collection=collection, ids=list(ids), include_vectors=include_vectors)
        return self.collections.GetItems, request, lambda r: ([_item_dict(i) for i in r.items], list(r.missing_ids))

    def search(self, collection: str, query: collections_pb2.Query, options: Any) -> tuple[Any, Any, Any]:
        request = collections_pb2.SearchRequest(collection=collection, query=query, options=options)
        return self.collections.Search, request, lambda r: [_hit(h) for h in r.hits]

    def batch_search(self, collection: str, queries: np.ndarray | list[Any], options: Any) -> tuple[Any, Any, Any]:
        request = collections_pb2.BatchSearchRequest(collection=collection, options=options)
        if isinstance(queries, np.ndarray):  # one packed float32 matrix: no per-query messages on either side
            request.packed_queries = packed_rows(queries)
        else:
            request.queries.extend(queries)
        return self.collections.BatchSearch, request, lambda r: [[_hit(h) for h in lst.hits] for lst in r.results]

    def rebuild(self, name: str) -> tuple[Any, Any, Any]:
        return self.collections.Rebuild, collections_pb2.RebuildRequest(name=name), lambda r: r.collection

    def list_models(self) -> tuple[Callable[..., Any], Any, Callable[[Any], Any]]:
        return self.models.ListModels, models_pb2.ListModelsRequest(), lambda r: list(r.models)

    def get_model(self, name: str) -> tuple[Callable[..., Any], Any, Callable[[Any], Any]]:
        return self.models.GetModel, models_pb2.GetModelRequest(name=name), lambda r: r.model

    def embed_words(self, model: str, words: Sequence[str], normalize: bool) -> tuple[Any, Any, Any]:
        request = words_pb2.EmbedWordsRequest(model=model, words=list(words), normalize=normalize)
        return self.words.EmbedWords, request, _embeddings

    def embed_texts(self, model: str, texts: Sequence[str], normalize: bool, long_texts: str) -> tuple[Any, Any, Any]:
        return self.text.EmbedTexts, _embed_texts_request(model, texts, normalize, long_texts), _text_embeddings

    def nearest_words(self, model: str, words: Sequence[str], top_n: int, restrict_vocab: int) -> tuple[Any, Any, Any]:
        request = words_pb2.NearestWordsRequest(
            model=model, words=list(words), top_n=top_n, restrict_vocab=restrict_vocab
        )
        return (
            self.words.NearestWords,
            request,
            lambda r: [[Hit(n.word, n.score) for n in lst.neighbours] for lst in r.results],
        )

    def similarity(self, model: str, pairs: Sequence[tuple[str, str]]) -> tuple[Any, Any, Any]:
        request = words_pb2.SimilarityRequest(
            model=model, pairs=[words_pb2.WordPair(first=a, second=b) for a, b in pairs]
        )
        return self.words.Similarity, request, lambda r: list(r.similarities)

    def doesnt_match(self, model: str, words: Sequence[str]) -> tuple[Any, Any, Any]:
        request = words_pb2.DoesntMatchRequest(model=model, words=list(words))
        return self.words.DoesntMatch, request, lambda r: (r.odd_one_out, [(s.word, s.score) for s in r.ranking])

    def arithmetic(self, model: str, expressions: Sequence[ExpressionLike], **options: Any) -> tuple[Any, Any, Any]:
        method = options.pop("method", "cosadd")
        request = arithmetic_pb2.ArithmeticRequest(
            model=model,
            expressions=[_expression(e) for e in expressions],
            method=METHODS[method] if isinstance(method, str) else method,
            **options,
        )
        return self.arith.Arithmetic, request, _arithmetic_result

    def evaluate_analogies(self, model: str, analogies: bytes | str | Path, **options: Any) -> tuple[Any, Any, Any]:
        data = analogies if isinstance(analogies, bytes) else Path(analogies).read_bytes()
        method = options.pop("method", "cosadd")
        request = arithmetic_pb2.EvaluateAnalogiesRequest(
            model=model, analogies=data, method=METHODS[method] if isinstance(method, str) else method, **options
        )
        return self.arith.EvaluateAnalogies, request, _analogy_report

    def health_check(self, service: str) -> tuple[Any, Any, Any]:
        return (
            self.health.Check,
            health_pb2.HealthCheckRequest(service=service),
            lambda r: health_pb2.HealthCheckResponse.ServingStatus.Name(r.status),
        )


class Client(ImageClientMixin, MapClientMixin):
    """Blocking client. `timeout` (seconds) applies to every call unless a call passes its own."""

    def __init__(self, target: str = "localhost:50051", *, timeout: float | None = 60.0) -> None:
        self._channel = grpc.insecure_channel(target, options=_OPTIONS)
        self._calls = _Calls(self._channel)
        self.timeout = timeout

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _run(self, call: tuple[Callable[..., Any], Any, Callable[[Any], T]]) -> T:
        rpc, request, parse = call
        try:
            return parse(rpc(request, timeout=self.timeout))
        except grpc.RpcError as exc:
            raise _error(exc) from None

    def list_models(self) -> list[models_pb2.ModelInfo]:
        return self._run(self._calls.list_models())

    def get_model(self, name: str) -> models_pb2.ModelInfo:
        return self._run(self._calls.get_model(name))

    def embed_words(self, model: str, words: Sequence[str], *, normalize: bool = False) -> Embeddings:
        return self._run(self._calls.embed_words(model, words, normalize))

    def embed_texts(
        self, model: str, texts: Sequence[str], *, normalize: bool = False, long_texts: str = "truncate"
    ) -> TextEmbeddings:
        """One vector per text; long_texts "truncate" (the model's max_seq_length) or "chunk" (mean of windows)."""
        return self._run(self._calls.embed_texts(model, texts, normalize, long_texts))

    def embed_texts_stream(
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
        requests = (
            text_pb2.EmbedTextsStreamRequest(
                batch=_embed_texts_request(model, texts[i : i + batch_size], normalize, long_texts)
            )
            for i in range(0, len(texts), batch_size)
        )
        parts: list[TextEmbeddings] = []
        try:
            for response in self._calls.text.EmbedTextsStream(requests, timeout=self.timeout):
                parts.append(_text_embeddings(response.batch))
                if progress is not None:
                    progress(len(response.batch.vectors))
        except grpc.RpcError as exc:
            raise _error(exc) from None
        if not parts:
            raise ValueError("no texts given")
        offsets = np.cumsum([0] + [len(p) for p in parts])
        return TextEmbeddings(
            np.concatenate([p.vectors for p in parts]),
            parts[0].space,
            provenance=parts[0].provenance,
            truncated=[int(o) + t for o, p in zip(offsets, parts, strict=False) for t in p.truncated],
            token_counts=[c for p in parts for c in p.token_counts],
            max_seq_length=parts[0].max_seq_length,
        )

    def nearest_words(
        self, model: str, words: Sequence[str], *, top_n: int = 10, restrict_vocab: int = 0
    ) -> list[list[Hit]]:
        return self._run(self._calls.nearest_words(model, words, top_n, restrict_vocab))

    def similarity(self, model: str, pairs: Sequence[tuple[str, str]]) -> list[float]:
        return self._run(self._calls.similarity(model, pairs))

    def doesnt_match(self, model: str, words: Sequence[str]) -> tuple[str, list[tuple[str, float]]]:
        return self._run(self._calls.doesnt_match(model, words))

    def arithmetic(self, model: str, expressions: Sequence[ExpressionLike], **options: Any) -> ArithmeticResult:
        """Options: method ("cosadd" | "cosmul"), top_n, restrict_vocab, keep_inputs, return_query_vector,
        return_contributions."""
        return self._run(self._calls.arithmetic(model, expressions, **options))

    def evaluate_analogies(self, model: str, analogies: bytes | str | Path, **options: Any) -> AnalogyReport:
        """`analogies` is a file path or its bytes. Options: restrict_vocab, case_sensitive, dummy4unknown, method."""
        return self._run(self._calls.evaluate_analogies(model, analogies, **options))

    def health(self, service: str = "") -> str:
        """ "SERVING", "NOT_SERVING", ... for the whole server ("") or one service."""
        return self._run(self._calls.health_check(service))

    # ---- collections ---------------------------------------------------------------------------------------------

    def create_collection(
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
        return self._run(self._calls.create_collection(name, dimension, metric, index, model, params))

    def get_collection(self, name: str) -> collections_pb2.CollectionInfo:
        return self._run(self._calls.get_collection(name))

    def list_collections(self) -> list[collections_pb2.CollectionInfo]:
        return self._run(self._calls.list_collections())

    def delete_collection(self, name: str) -> None:
        self._run(self._calls.delete_collection(name))

    def upsert(
        self,
        collection: str,
        ids: Sequence[str],
        vectors: np.ndarray | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        inputs: Sequence[str] | None = None,
        images: Sequence[ImageLike] | None = None,
    ) -> tuple[int, int]:
        """One atomic batch; returns (upserted, live count). `images`: for a collection bound to an image model."""
        items, packed = build_items(ids, vectors, metadata, inputs)
        for item, image in zip(items, images or (), strict=False):
            item.image.CopyFrom(image_input(image))
        return self._run(self._calls.upsert(collection, (items, packed)))

    def upsert_stream(
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

        def messages() -> Iterator[collections_pb2.UpsertStreamRequest]:
            for start in range(0, len(ids), batch_size):
                end = min(start + batch_size, len(ids))
                items, packed = build_items(
                    ids[start:end],
                    vectors[start:end] if vectors is not None else None,
                    metadata[start:end] if metadata is not None else None,
                    inputs[start:end] if inputs is not None else None,
                )
                yield collections_pb2.UpsertStreamRequest(collection=collection, items=items, packed_vectors=packed)
                if progress is not None:
                    progress(end - start)

        try:
            response: collections_pb2.UpsertStreamResponse = self._calls.collections.UpsertStream(
                messages(), timeout=self.timeout
            )
            return response
        except grpc.RpcError as exc:
            raise _error(exc) from None

    def delete_items(self, collection: str, ids: Sequence[str]) -> tuple[int, int]:
        """Returns (deleted, missing)."""
        return self._run(self._calls.delete_items(collection, ids))

    def get_items(
        self, collection: str, ids: Sequence[str], *, include_vectors: bool = False
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Returns (items as dicts with id, vector, metadata, input; the ids not found)."""
        return self._run(self._calls.get_items(collection, ids, include_vectors))

    def search(
        self,
        collection: str,
        *,
        vector: np.ndarray | SpaceVector | None = None,
        item_id: str = "",
        input: str = "",
        expression: ExpressionLike | None = None,
        image: ImageLike | None = None,
        **options: Any,
    ) -> list[SearchHit]:
        """One of vector, item_id, input, expression, image. Options: k, filter, exact, ef_search, nprobe,
        include_vectors, include_metadata. Expressions over image collections: see `client_images.image_expression`."""
        if image is not None:
            query = collections_pb2.Query(image=image_input(image))
        elif isinstance(expression, arithmetic_pb2.Expression):
            query = collections_pb2.Query(expression=expression)
        else:
            query = _query(vector, item_id, input, expression)
        return self._run(self._calls.search(collection, query, _search_options(**options)))

    def batch_search(
        self, collection: str, queries: np.ndarray | Sequence[collections_pb2.Query], **options: Any
    ) -> list[list[SearchHit]]:
        """Many queries: an (n, d) array of vectors (sent packed), or Query messages. Options as for search."""
        if not isinstance(queries, np.ndarray):
            queries = list(queries)
        return self._run(self._calls.batch_search(collection, queries, _search_options(**options)))

    def rebuild(self, name: str) -> collections_pb2.CollectionInfo:
        return self._run(self._calls.rebuild(name))

    def export_items(self, collection: str, *, batch_size: int = 1000) -> Iterator[dict[str, Any]]:
        """Every item, with its vector and metadata."""
        request = collections_pb2.ExportItemsRequest(collection=collection, batch_size=batch_size)
        try:
            for response in self._calls.collections.ExportItems(request, timeout=self.timeout):
                yield from (_item_dict(i) for i in response.items)
        except grpc.RpcError as exc:
            raise _error(exc) from None

    def wait_until_serving(self, timeout: float = 120.0, service: str = "") -> None:
        """Poll health until SERVING; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.health(service) == "SERVING":
                    return
            except EmbedsvcClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not become SERVING within {timeout:.0f} s")
            time.sleep(0.2)


class AsyncClient:
    """asyncio client with the same methods as `Client`, as coroutines."""

    def __init__(self, target: str = "localhost:50051", *, timeout: float | None = 60.0) -> None:
        self._channel = grpc.aio.insecure_channel(target, options=_OPTIONS)
        self._calls = _Calls(self._channel)
        self.timeout = timeout

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _run(self, call: tuple[Callable[..., Any], Any, Callable[[Any], T]]) -> T:
        rpc, request, parse = call
        try:
            return parse(await rpc(request, timeout=self.timeout))
        except grpc.RpcError as exc:
            raise _error(exc) from None

    async def list_models(self) -> list[models_pb2.ModelInfo]:
        return await self._run(self._calls.list_models())

    async def get_model(self, name: str) -> models_pb2.ModelInfo:
        return await self._run(self._calls.get_model(name))

    async def embed_words(self, model: str, words: Sequence[str], *, normalize: bool = False) -> Embeddings:
        return await self._run(self._calls.embed_words(model, words, normalize))

    async def embed_texts(
        self, model: str, texts: Sequence[str], *, normalize: bool = False, long_texts: str = "truncate"
    ) -> TextEmbeddings:
        return await self._run(self._calls.embed_texts(model, texts, normalize, long_texts))

    async def embed_images(self, model: str, images: Sequence[ImageLike], *, normalize: bool = False) -> Embeddings:
        return await self._run(embed_images_call(self._calls, model, images, normalize))

    async def nearest_words(
        self, model: str, words: Sequence[str], *, top_n: int = 10, restrict_vocab: int = 0
    ) -> list[list[Hit]]:
        return await self._run(self._calls.nearest_words(model, words, top_n, restrict_vocab))

    async def similarity(self, model: str, pairs: Sequence[tuple[str, str]]) -> list[float]:
        return await self._run(self._calls.similarity(model, pairs))

    async def doesnt_match(self, model: str, words: Sequence[str]) -> tuple[str, list[tuple[str, float]]]:
        return await self._run(self._calls.doesnt_match(model, words))

    async def arithmetic(self, model: str, expressions: Sequence[ExpressionLike], **options: Any) -> ArithmeticResult:
        return await self._run(self._calls.arithmetic(model, expressions, **options))

    async def evaluate_analogies(self, model: str, analogies: bytes | str | Path, **options: Any) -> AnalogyReport:
        return await self._run(self._calls.evaluate_analogies(model, analogies, **options))

    async def health(self, service: str = "") -> str:
        return await self._run(self._calls.health_check(service))

    async def upsert(
        self,
        collection: str,
        ids: Sequence[str],
        vectors: np.ndarray | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        inputs: Sequence[str] | None = None,
    ) -> tuple[int, int]:
        return await self._run(self._calls.upsert(collection, build_items(ids, vectors, metadata, inputs)))

    async def search(
        self,
        collection: str,
        *,
        vector: np.ndarray | SpaceVector | None = None,
        item_id: str = "",
        input: str = "",
        expression: ExpressionLike | None = None,
        **options: Any,
    ) -> list[SearchHit]:
        query = _query(vector, item_id, input, expression)
        return await self._run(self._calls.search(collection, query, _search_options(**options)))

    async def batch_search(
        self, collection: str, queries: np.ndarray | Sequence[collections_pb2.Query], **options: Any
    ) -> list[list[SearchHit]]:
        """As Client.batch_search: an (n, d) array (sent packed) or Query messages."""
        if not isinstance(queries, np.ndarray):
            queries = list(queries)
        return await self._run(self._calls.batch_search(collection, queries, _search_options(**options)))
