"""Every RPC of the API as a call description: which stub method, which request, how to read the answer.

`Client` and `AsyncClient` both build their calls here and differ only in how they run them (blocking or awaited),
so a parameter is handled in one place for both. A `Unary` call sends one request (or an iterator of them, for a
client stream) and parses one response; a `Stream` call parses each response of a server or bidirectional stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc
import grpc.aio
import numpy as np
from grpc_health.v1 import health_pb2

from embedsvc import api
from embedsvc.client import _requests as req
from embedsvc.client import _responses as res
from embedsvc.client.types import (
    Alias,
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
    Operation,
    PackedHits,
    Projection,
    Reranked,
    Sampled,
    SearchHits,
    ServerInfo,
    TextEmbeddings,
    Token,
    WordChunk,
)
from embedsvc.v1 import (
    arithmetic_pb2,
    collections_pb2,
    images_pb2,
    latent_pb2,
    maps_pb2,
    models_pb2,
    operations_pb2,
    server_pb2,
    snapshots_pb2,
    text_pb2,
    words_pb2,
)

T = TypeVar("T")
Progress = Callable[[int], None] | None
# EmbedTexts' options as the client methods take them (keyword names of _requests.embed_texts_request).
TextOptions = dict[str, Any]


def text_options(
    normalize: bool,
    long_texts: str,
    dimensions: int,
    dtype: str,
    truncation_direction: str,
    prompt_name: str = "",
    prompt: str | None = None,
) -> TextOptions:
    return {
        "normalize": normalize,
        "long_texts": long_texts,
        "dimensions": dimensions,
        "dtype": dtype,
        "truncation_direction": truncation_direction,
        "prompt_name": prompt_name,
        "prompt": prompt,
    }


@dataclass(frozen=True)
class Unary(Generic[T]):
    rpc: Callable[..., Any]
    request: Any
    parse: Callable[[Any], T]


@dataclass(frozen=True)
class Stream(Generic[T]):
    rpc: Callable[..., Any]
    request: Any
    each: Callable[[Any], T]


class Calls:
    """The stubs of one channel (sync or asyncio) and a builder for each call.

    The stubs come from the table of services (embedsvc/api.py): one attribute per service, named by its `short`
    name (`self.words` is the WordService stub), so a new service needs no line here, only its calls' builders."""

    def __init__(self, channel: grpc.Channel | grpc.aio.Channel) -> None:
        self._stubs = {s.short: s.stub(channel) for s in (*api.SERVICES, api.HEALTH)}

    def __getattr__(self, name: str) -> Any:
        # Only for the stubs (every builder is a method): typed Any, as the generated stubs are untyped.
        try:
            return self.__dict__["_stubs"][name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}") from None

    # ---- models, health ------------------------------------------------------------------------------------------

    def list_models(self, page_size: int, token: str) -> Unary[tuple[list[models_pb2.ModelInfo], str]]:
        request = models_pb2.ListModelsRequest(page_size=page_size, page_token=token)
        return Unary(self.models.ListModels, request, lambda r: (list(r.models), r.next_page_token))

    def get_server_info(self) -> Unary[ServerInfo]:
        return Unary(self.server.GetServerInfo, server_pb2.GetServerInfoRequest(), res.server_info)

    def get_model(self, name: str) -> Unary[models_pb2.ModelInfo]:
        return Unary(self.models.GetModel, models_pb2.GetModelRequest(name=name), lambda r: r.model)

    def load_model(self, name: str, config: str) -> Unary[models_pb2.ModelInfo]:
        return Unary(self.models.LoadModel, models_pb2.LoadModelRequest(name=name, config=config), lambda r: r.model)

    def unload_model(self, name: str) -> Unary[models_pb2.ModelInfo]:
        return Unary(self.models.UnloadModel, models_pb2.UnloadModelRequest(name=name), lambda r: r.model)

    def reload_model(self, name: str, config: str) -> Unary[models_pb2.ModelInfo]:
        request = models_pb2.ReloadModelRequest(name=name, config=config)
        return Unary(self.models.ReloadModel, request, lambda r: r.model)

    def health_check(self, service: str) -> Unary[str]:
        return Unary(
            self.health.Check,
            health_pb2.HealthCheckRequest(service=service),
            lambda r: health_pb2.HealthCheckResponse.ServingStatus.Name(r.status),
        )

    # ---- words and arithmetic ------------------------------------------------------------------------------------

    def embed_words(self, model: str, words: Sequence[str], normalize: bool) -> Unary[Embeddings]:
        request = words_pb2.EmbedWordsRequest(model=model, words=list(words), normalize=normalize)
        return Unary(self.words.EmbedWords, request, res.embeddings)

    def nearest_words(
        self, model: str, words: Sequence[str], top_n: int, restrict_vocab: int
    ) -> Unary[list[list[Hit]]]:
        request = words_pb2.NearestWordsRequest(
            model=model, words=list(words), top_n=top_n, restrict_vocab=restrict_vocab
        )
        return Unary(self.words.NearestWords, request, res.neighbours)

    def similarity(self, model: str, pairs: Sequence[tuple[str, str]]) -> Unary[list[float]]:
        request = words_pb2.SimilarityRequest(
            model=model, pairs=[words_pb2.WordPair(first=a, second=b) for a, b in pairs]
        )
        return Unary(self.words.Similarity, request, lambda r: list(r.similarities))

    def doesnt_match(self, model: str, words: Sequence[str]) -> Unary[tuple[str, list[tuple[str, float]]]]:
        request = words_pb2.DoesntMatchRequest(model=model, words=list(words))
        return Unary(self.words.DoesntMatch, request, lambda r: (r.odd_one_out, [(s.word, s.score) for s in r.ranking]))

    def export_words(
        self, model: str, include_vectors: bool, normalize: bool, start: int, limit: int, batch_size: int
    ) -> Stream[WordChunk]:
        request = words_pb2.ExportWordsRequest(
            model=model,
            include_vectors=include_vectors,
            normalize=normalize,
            start=start,
            limit=limit,
            batch_size=batch_size,
        )
        return Stream(self.words.ExportWords, request, res.word_chunk)

    def arithmetic(
        self, model: str, expressions: Sequence[ExpressionLike], options: dict[str, Any]
    ) -> Unary[ArithmeticResult]:
        options = dict(options)
        method = req.choice(req.METHODS, options.pop("method", "cosadd"), "method")
        request = arithmetic_pb2.ArithmeticRequest(
            model=model, expressions=[req.expression(e) for e in expressions], method=method, **options
        )
        return Unary(self.arith.Arithmetic, request, res.arithmetic_result)

    def evaluate_analogies(
        self, model: str, analogies: bytes | str | Path, options: dict[str, Any]
    ) -> Unary[AnalogyReport]:
        data = analogies if isinstance(analogies, bytes) else Path(analogies).read_bytes()
        options = dict(options)
        method = req.choice(req.METHODS, options.pop("method", "cosadd"), "method")
        request = arithmetic_pb2.EvaluateAnalogiesRequest(model=model, analogies=data, method=method, **options)
        return Unary(self.arith.EvaluateAnalogies, request, res.analogy_report)

    # ---- texts ---------------------------------------------------------------------------------------------------

    def embed_texts(self, model: str, texts: Sequence[str], options: TextOptions) -> Unary[TextEmbeddings]:
        return Unary(self.text.EmbedTexts, req.embed_texts_request(model, texts, **options), res.text_embeddings)

    def rerank(
        self,
        model: str,
        query: str,
        texts: Sequence[str],
        top_n: int,
        raw_scores: bool,
        return_text: bool,
        truncate: bool,
    ) -> Unary[Reranked]:
        request = text_pb2.RerankRequest(
            model=model,
            query=query,
            texts=list(texts),
            top_n=top_n,
            raw_scores=raw_scores,
            return_text=return_text,
            truncate=truncate,
        )
        return Unary(self.text.Rerank, request, res.reranked)

    def embed_texts_stream(
        self, model: str, texts: Sequence[str], batch_size: int, options: TextOptions, progress: Progress
    ) -> Stream[TextEmbeddings | EmbedsvcClientError]:
        requests = (
            text_pb2.EmbedTextsStreamRequest(
                batch=req.embed_texts_request(model, texts[i : i + batch_size], **options),
                sequence=i // batch_size,
            )
            for i in range(0, len(texts), batch_size)
        )

        def each(response: text_pb2.EmbedTextsStreamResponse) -> TextEmbeddings | EmbedsvcClientError:
            if progress is not None:
                progress(res.text_rows(response.batch))
            return res.stream_batch(response)

        return Stream(self.text.EmbedTextsStream, requests, each)

    def tokenize_texts(self, model: str, texts: Sequence[str], add_special_tokens: bool) -> Unary[list[list[Token]]]:
        request = text_pb2.TokenizeTextsRequest(model=model, texts=list(texts), add_special_tokens=add_special_tokens)
        return Unary(self.text.TokenizeTexts, request, res.tokenized)

    # ---- images and latents --------------------------------------------------------------------------------------

    def embed_images(self, model: str, images: Sequence[ImageLike], normalize: bool) -> Unary[Embeddings]:
        request = images_pb2.EmbedImagesRequest(model=model, images=req.images(images), normalize=normalize)
        return Unary(self.images.EmbedImages, request, res.image_embeddings)

    def encode_images(self, model: str, images: Sequence[ImageLike]) -> Unary[tuple[np.ndarray, np.ndarray]]:
        request = latent_pb2.EncodeImagesRequest(model=model, images=req.images(images), packed_results=True)
        return Unary(self.latent.EncodeImages, request, res.latent_codes)

    def decode_latents(
        self, model: str, latents: Sequence[LatentLike] | np.ndarray, expressions: Sequence[Any]
    ) -> Unary[list[GeneratedImage]]:
        request = req.decode_latents_request(model, latents, expressions)
        return Unary(self.latent.DecodeLatents, request, res.decoded)

    def sample(self, model: str, n: int, seed: int | None, temperature: float | None) -> Unary[Sampled]:
        request = latent_pb2.SampleRequest(model=model, n=n)
        if seed is not None:
            request.seed = seed
        if temperature is not None:
            request.temperature = temperature
        return Unary(self.latent.Sample, request, lambda r: Sampled(res.generated(r.images), r.seed))

    def reconstruct(self, model: str, images: Sequence[ImageLike]) -> Unary[list[GeneratedImage]]:
        request = latent_pb2.ReconstructRequest(model=model, images=req.images(images))
        return Unary(self.latent.Reconstruct, request, lambda r: res.generated(r.images))

    def interpolate(
        self, model: str, start: ImageLike | LatentLike, end: ImageLike | LatentLike, steps: int, spherical: bool
    ) -> Stream[GeneratedImage]:
        mode = latent_pb2.INTERPOLATION_MODE_SPHERICAL if spherical else latent_pb2.INTERPOLATION_MODE_LINEAR
        request = latent_pb2.InterpolateRequest(
            model=model, start=req.point(start), end=req.point(end), steps=steps, mode=mode
        )
        return Stream(self.latent.Interpolate, request, lambda r: res.generated([r.frame.image])[0])

    def traverse(
        self, model: str, start: ImageLike | LatentLike, direction: str, strengths: Sequence[float]
    ) -> Stream[GeneratedImage]:
        request = latent_pb2.TraverseRequest(
            model=model, start=req.point(start), direction=direction, strengths=list(strengths)
        )
        return Stream(self.latent.Traverse, request, lambda r: res.generated([r.frame.image])[0])

    def create_direction(
        self, model: str, name: str, examples: dict[str, Any], description: str, replace: bool
    ) -> Unary[latent_pb2.Direction]:
        """`examples`: from_images, to_images, from_latents, to_latents, from_label, to_label."""

        def example_set(side: str) -> latent_pb2.ExampleSet:
            return latent_pb2.ExampleSet(
                label=examples[f"{side}_label"],
                images=req.images(examples[f"{side}_images"]),
                latents=[req.vector(z) for z in examples[f"{side}_latents"]],
            )

        request = latent_pb2.CreateDirectionRequest(
            model=model,
            name=name,
            from_examples=example_set("from"),
            to_examples=example_set("to"),
            description=description,
            replace=replace,
        )
        return Unary(self.latent.CreateDirection, request, lambda r: r.direction)

    def list_directions(
        self, model: str, include_vectors: bool, page_size: int, token: str
    ) -> Unary[tuple[list[latent_pb2.Direction], str]]:
        request = latent_pb2.ListDirectionsRequest(
            model=model, include_vectors=include_vectors, page_size=page_size, page_token=token
        )
        return Unary(self.latent.ListDirections, request, lambda r: (list(r.directions), r.next_page_token))

    def delete_direction(self, model: str, name: str) -> Unary[None]:
        request = latent_pb2.DeleteDirectionRequest(model=model, name=name)
        return Unary(self.latent.DeleteDirection, request, lambda r: None)

    def anomaly_scores(
        self, model: str, images: Sequence[ImageLike], samples: int, seed: int
    ) -> Unary[list[dict[str, float]]]:
        request = latent_pb2.AnomalyScoreRequest(model=model, images=req.images(images), samples=samples, seed=seed)
        return Unary(self.latent.AnomalyScore, request, res.anomaly_scores)

    def inpaint(self, model: str, image: ImageLike, mask: ImageLike, steps: int, seed: int) -> Unary[GeneratedImage]:
        request = latent_pb2.InpaintRequest(
            model=model, image=req.image_input(image), mask=req.image_input(mask), steps=steps, seed=seed
        )
        return Unary(self.latent.Inpaint, request, lambda r: res.generated([r.image])[0])

    # ---- maps ----------------------------------------------------------------------------------------------------

    def project(
        self, points: maps_pb2.PointSet, dimensions: int, transform: Sequence[maps_pb2.PointSet]
    ) -> Unary[Projection]:
        request = maps_pb2.ProjectRequest(points=points, dimensions=dimensions, transform=list(transform))
        return Unary(self.maps.Project, request, res.projection)

    def cluster(self, points: maps_pb2.PointSet, options: dict[str, Any]) -> Unary[Clustering]:
        options = dict(options)
        method = req.choice(req.CLUSTER_METHODS, options.pop("method"), "method")
        covariance = req.choice(req.COVARIANCES, options.pop("covariance"), "covariance")
        request = maps_pb2.ClusterRequest(points=points, method=method, covariance=covariance, **options)
        return Unary(self.maps.Cluster, request, res.clustering)

    def plot(
        self,
        points: maps_pb2.PointSet,
        thumbnails: bool,
        color: tuple[str, str, int],
        options: dict[str, Any],
    ) -> Unary[bytes]:
        style = maps_pb2.PLOT_STYLE_THUMBNAILS if thumbnails else maps_pb2.PLOT_STYLE_SCATTER
        request = maps_pb2.PlotRequest(points=points, style=style, **options)
        color_by, color_field, cluster_k = color
        if color_field and color_by:
            raise ValueError("give color_by or color_field, not both")
        if color_by == "group":
            request.by_group.SetInParent()
        elif color_by == "cluster":
            request.by_cluster.k = cluster_k
            request.by_cluster.SetInParent()
        elif color_by or color_field:  # any other color_by is a metadata field's name, as color_field is
            request.by_metadata_field = color_field or color_by
        return Unary(self.maps.Plot, request, lambda r: r.png)

    # ---- collections ---------------------------------------------------------------------------------------------

    def create_collection(
        self,
        name: str,
        dimension: int,
        metric: str,
        index: str,
        model: str,
        params: dict[str, float],
        backend: str = "",
        quantization: str = "",
        mmap: bool | None = None,
        indexed_fields: Mapping[str, str] | None = None,
        keyword: str | bool | None = None,
        search_defaults: dict[str, Any] | None = None,
        document_prompt: str | None = None,
        query_prompt: str | None = None,
        dimensions: int = 0,
        dtype: str = "",
    ) -> Unary[collections_pb2.CollectionInfo]:
        request = collections_pb2.CreateCollectionRequest(
            name=name,
            dimension=dimension,
            metric=req.choice(req.METRICS, metric, "metric"),
            index=req.index_spec(index, quantization, mmap, params),
            model=model,
            backend=req.choice(req.BACKENDS, backend, "backend"),
            indexed_fields=req.indexed_fields(indexed_fields),
            keyword=req.keyword_spec(keyword),
            search_defaults=req.search_defaults(**search_defaults) if search_defaults is not None else None,
        )
        if document_prompt is not None or query_prompt is not None:
            request.prompts.SetInParent()
            if document_prompt is not None:
                request.prompts.document_prompt_name = document_prompt
            if query_prompt is not None:
                request.prompts.query_prompt_name = query_prompt
        if dimensions or dtype:
            request.shape.dimensions = dimensions
            request.shape.dtype = req.choice(req.DTYPES, dtype or "float32", "dtype")
        return Unary(self.collections.CreateCollection, request, lambda r: r.collection)

    def get_collection(self, name: str) -> Unary[collections_pb2.CollectionInfo]:
        request = collections_pb2.GetCollectionRequest(name=name)
        return Unary(self.collections.GetCollection, request, lambda r: r.collection)

    def list_collections(self, page_size: int, token: str) -> Unary[tuple[list[collections_pb2.CollectionInfo], str]]:
        request = collections_pb2.ListCollectionsRequest(page_size=page_size, page_token=token)
        return Unary(self.collections.ListCollections, request, lambda r: (list(r.collections), r.next_page_token))

    def delete_collection(self, name: str) -> Unary[None]:
        request = collections_pb2.DeleteCollectionRequest(name=name)
        return Unary(self.collections.DeleteCollection, request, lambda r: None)

    def rebuild(self, name: str) -> Unary[Operation]:
        request = collections_pb2.RebuildRequest(name=name)
        return Unary(self.collections.Rebuild, request, lambda r: res.operation(r.operation))

    def reembed(self, collection: str, model: str, target_name: str, drop_unembeddable: bool) -> Unary[Operation]:
        request = collections_pb2.ReembedRequest(
            collection=collection, model=model, target_name=target_name, drop_unembeddable=drop_unembeddable
        )
        return Unary(self.collections.Reembed, request, lambda r: res.operation(r.operation))

    def create_snapshot(self, collection: str) -> Unary[Operation]:
        request = snapshots_pb2.CreateSnapshotRequest(collection=collection)
        return Unary(self.snapshots.CreateSnapshot, request, lambda r: res.operation(r.operation))

    def get_snapshot(self, name: str) -> Unary[snapshots_pb2.Snapshot]:
        request = snapshots_pb2.GetSnapshotRequest(name=name)
        return Unary(self.snapshots.GetSnapshot, request, lambda r: r.snapshot)

    def list_snapshots(
        self, collection: str, page_size: int, token: str
    ) -> Unary[tuple[list[snapshots_pb2.Snapshot], str]]:
        request = snapshots_pb2.ListSnapshotsRequest(collection=collection, page_size=page_size, page_token=token)
        return Unary(self.snapshots.ListSnapshots, request, lambda r: (list(r.snapshots), r.next_page_token))

    def delete_snapshot(self, name: str) -> Unary[None]:
        request = snapshots_pb2.DeleteSnapshotRequest(name=name)
        return Unary(self.snapshots.DeleteSnapshot, request, lambda r: None)

    def restore_snapshot(
        self, snapshot: str, name: str, replace_existing: bool, allow_model_mismatch: bool, backend: str
    ) -> Unary[Operation]:
        request = snapshots_pb2.RestoreSnapshotRequest(
            snapshot=snapshot,
            name=name,
            replace_existing=replace_existing,
            allow_model_mismatch=allow_model_mismatch,
            backend=req.choice(req.BACKENDS, backend, "backend"),
        )
        return Unary(self.snapshots.RestoreSnapshot, request, lambda r: res.operation(r.operation))

    def download_snapshot(self, name: str, chunk_bytes: int) -> Stream[snapshots_pb2.DownloadSnapshotResponse]:
        request = snapshots_pb2.DownloadSnapshotRequest(name=name, chunk_bytes=chunk_bytes)
        return Stream(self.snapshots.DownloadSnapshot, request, lambda r: r)

    def upload_snapshot(self, chunks: Iterator[tuple[bytes, str, int, bytes]]) -> Unary[snapshots_pb2.Snapshot]:
        messages = (
            snapshots_pb2.UploadSnapshotRequest(manifest=manifest, path=path, offset=offset, data=data)
            for manifest, path, offset, data in chunks
        )
        return Unary(self.snapshots.UploadSnapshot, messages, lambda r: r.snapshot)

    def get_operation(self, name: str) -> Unary[Operation]:
        request = operations_pb2.GetOperationRequest(name=name)
        return Unary(self.operations.GetOperation, request, lambda r: res.operation(r.operation))

    def list_operations(self, collection: str, page_size: int, token: str) -> Unary[tuple[list[Operation], str]]:
        request = operations_pb2.ListOperationsRequest(collection=collection, page_size=page_size, page_token=token)
        return Unary(
            self.operations.ListOperations,
            request,
            lambda r: ([res.operation(o) for o in r.operations], r.next_page_token),
        )

    def cancel_operation(self, name: str) -> Unary[Operation]:
        request = operations_pb2.CancelOperationRequest(name=name)
        return Unary(self.operations.CancelOperation, request, lambda r: res.operation(r.operation))

    def create_alias(self, alias: str, collection: str) -> Unary[Alias]:
        request = collections_pb2.CreateAliasRequest(alias=alias, collection=collection)
        return Unary(self.collections.CreateAlias, request, lambda r: res.alias(r.alias))

    def update_alias(self, alias: str, collection: str) -> Unary[tuple[Alias, str]]:
        request = collections_pb2.UpdateAliasRequest(alias=alias, collection=collection)
        return Unary(self.collections.UpdateAlias, request, lambda r: (res.alias(r.alias), r.previous_collection))

    def delete_alias(self, alias: str) -> Unary[None]:
        request = collections_pb2.DeleteAliasRequest(alias=alias)
        return Unary(self.collections.DeleteAlias, request, lambda r: None)

    def list_aliases(self, collection: str, page_size: int, token: str) -> Unary[tuple[list[Alias], str]]:
        request = collections_pb2.ListAliasesRequest(collection=collection, page_size=page_size, page_token=token)
        return Unary(
            self.collections.ListAliases, request, lambda r: ([res.alias(a) for a in r.aliases], r.next_page_token)
        )

    def upsert(
        self,
        collection: str,
        ids: Sequence[str],
        vectors: np.ndarray | None,
        metadata: Sequence[dict[str, Any] | None] | None,
        inputs: Sequence[str] | None,
        images: Sequence[ImageLike] | None,
    ) -> Unary[tuple[int, int]]:
        items, packed = req.items(ids, vectors, metadata, inputs, images)
        request = collections_pb2.UpsertRequest(collection=collection, items=items, packed_vectors=packed)
        return Unary(self.collections.Upsert, request, lambda r: (r.upserted, r.count))

    def upsert_stream(
        self,
        collection: str,
        ids: Sequence[str],
        vectors: np.ndarray | None,
        metadata: Sequence[dict[str, Any] | None] | None,
        inputs: Sequence[str] | None,
        batch_size: int,
        resume_from: int,
        progress: Progress,
    ) -> Stream[collections_pb2.UpsertStreamResponse]:
        """Batch b holds items b * batch_size onwards and is sent with sequence b; `progress` counts acknowledged
        items."""

        def messages() -> Iterator[collections_pb2.UpsertStreamRequest]:
            for start in range(resume_from * batch_size, len(ids), batch_size):
                end = min(start + batch_size, len(ids))
                items, packed = req.items(
                    ids[start:end],
                    vectors[start:end] if vectors is not None else None,
                    metadata[start:end] if metadata is not None else None,
                    inputs[start:end] if inputs is not None else None,
                )
                yield collections_pb2.UpsertStreamRequest(
                    collection=collection, items=items, packed_vectors=packed, sequence=start // batch_size
                )

        def each(ack: collections_pb2.UpsertStreamResponse) -> collections_pb2.UpsertStreamResponse:
            if progress is not None:
                progress(ack.upserted)
            return ack

        return Stream(self.collections.UpsertStream, messages(), each)

    def delete_items(self, collection: str, ids: Sequence[str]) -> Unary[tuple[int, int]]:
        request = collections_pb2.DeleteItemsRequest(collection=collection, ids=list(ids))
        return Unary(self.collections.DeleteItems, request, lambda r: (r.deleted, r.missing))

    def get_items(
        self, collection: str, ids: Sequence[str], include_vectors: bool
    ) -> Unary[tuple[list[dict[str, Any]], list[str]]]:
        request = collections_pb2.GetItemsRequest(collection=collection, ids=list(ids), include_vectors=include_vectors)
        return Unary(
            self.collections.GetItems, request, lambda r: ([res.item_dict(i) for i in r.items], list(r.missing_ids))
        )

    def search(
        self,
        collection: str,
        query: collections_pb2.Query,
        options: dict[str, Any],
    ) -> Unary[SearchHits]:
        request = collections_pb2.SearchRequest(
            collection=collection, query=query, options=req.search_options(**options)
        )
        return Unary(self.collections.Search, request, res.search_hits)

    def batch_search(
        self,
        collection: str,
        queries: np.ndarray | Sequence[collections_pb2.Query | str],
        options: dict[str, Any],
    ) -> Unary[list[SearchHits]]:
        request = collections_pb2.BatchSearchRequest(collection=collection, options=req.search_options(**options))
        if isinstance(queries, np.ndarray):  # one packed float32 matrix: no per-query messages on either side
            request.packed_queries = req.packed_rows(queries)
        else:
            request.queries.extend(collections_pb2.Query(input=q) if isinstance(q, str) else q for q in queries)
        return Unary(self.collections.BatchSearch, request, res.batch_hits)

    def batch_search_packed(self, collection: str, queries: np.ndarray, options: dict[str, Any]) -> Unary[PackedHits]:
        request = collections_pb2.BatchSearchRequest(
            collection=collection,
            options=req.search_options(**options),
            packed_queries=req.packed_rows(queries),
            packed_results=True,
        )
        if "include_metadata" not in options:  # packed hits carry none: leave it unset, as the server wants
            request.options.ClearField("include_metadata")
        return Unary(self.collections.BatchSearch, request, res.packed_hits)

    def export_items(
        self, collection: str, batch_size: int, resume_token: str
    ) -> Stream[tuple[list[dict[str, Any]], str]]:
        request = collections_pb2.ExportItemsRequest(
            collection=collection, batch_size=batch_size, page_token=resume_token
        )
        return Stream(
            self.collections.ExportItems, request, lambda r: ([res.item_dict(i) for i in r.items], r.next_page_token)
        )
