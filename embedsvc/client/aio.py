"""The asyncio client, and the source of the blocking one: `scripts/unasync_client.py` writes `sync.py` from this file.

Write it so that dropping `async` and `await` and renaming the asyncio names (AsyncClient -> Client, AsyncIterator ->
Iterator, asyncio.sleep -> time.sleep, ...: the script's table) gives the blocking client, and keep docstrings true
for both. `.ci/run` fails when sync.py is not what the script writes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np

from embedsvc.client import _requests as req
from embedsvc.client._calls import Calls, Stream, Unary, text_options
from embedsvc.client._channel import aio_channel, call_metadata, resolve_target
from embedsvc.client._errors import error
from embedsvc.client._responses import joined_text_embeddings, upsert_stream_result
from embedsvc.client.archives import ArchiveWriter, read_archive
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
    SpaceVector,
    TextEmbeddings,
    Token,
    UpsertStreamError,
    UpsertStreamResult,
    WordChunk,
)
from embedsvc.v1 import arithmetic_pb2, collections_pb2, latent_pb2, maps_pb2, models_pb2, snapshots_pb2

T = TypeVar("T")


class AsyncClient:
    """A client of embedsvc: every RPC of the API as a method, numpy in and numpy out. `timeout` (seconds) applies to
    every call.

    `AsyncClient` runs on asyncio (its methods are coroutines; `export_words` and `export_items` return async
    iterators); `Client` blocks. `Client` is generated from `AsyncClient` (scripts/unasync_client.py), so the two
    have the same methods with the same parameters. Failures raise `EmbedsvcClientError` with the gRPC code, the
    machine-readable reason, the offending field and the metadata from the server's google.rpc.Status details.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        timeout: float | None = 60.0,
        api_key: str | None = None,
        tls: bool = False,
        ca_file: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
    ) -> None:
        """`target` is host:port (default: `$EMBEDSVC_TARGET` when set, else localhost:50051); `api_key` is sent as
        `authorization: Bearer <key>`; `tls` (implied by any of the files) uses TLS, trusting `ca_file` (default: the
        system's roots), with `cert_file` and `key_file` as the client certificate for mutual TLS."""
        self._channel = aio_channel(resolve_target(target), tls, ca_file, cert_file, key_file)
        self._calls = Calls(self._channel)
        self._metadata = call_metadata(api_key)
        self.timeout = timeout

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _unary(self, call: Unary[T]) -> T:
        try:
            return call.parse(await call.rpc(call.request, timeout=self.timeout, metadata=self._metadata))
        except grpc.RpcError as exc:
            raise error(exc) from None

    async def _stream(self, call: Stream[T]) -> AsyncIterator[T]:
        try:
            async for response in call.rpc(call.request, timeout=self.timeout, metadata=self._metadata):
                yield call.each(response)
        except grpc.RpcError as exc:
            raise error(exc) from None

    async def _collect(self, call: Stream[T]) -> list[T]:
        return [value async for value in self._stream(call)]

    async def _all(self, page: Callable[[str], Unary[tuple[list[T], str]]]) -> list[T]:
        """Every page of a listing."""
        entries: list[T] = []
        token = ""
        while True:
            found, token = await self._unary(page(token))
            entries += found
            if not token:
                return entries

    # ---- models, health ------------------------------------------------------------------------------------------

    async def list_models(self, *, page_size: int = 0) -> list[models_pb2.ModelInfo]:
        """Every model, in configuration order (fetched `page_size` at a time; 0: the server's default)."""
        return await self._all(lambda token: self._calls.list_models(page_size, token))

    async def get_server_info(self) -> ServerInfo:
        """The server's version, API version, start time and limits."""
        return await self._unary(self._calls.get_server_info())

    async def get_model(self, name: str) -> models_pb2.ModelInfo:
        return await self._unary(self._calls.get_model(name))

    async def load_model(self, name: str, config: str = "") -> models_pb2.ModelInfo:
        """Load an unloaded or failed model, or a new one from `config` (a [[models]] entry's keys, in TOML, without
        the name); returns once it is ready (admin). Give the client a timeout long enough for the model to load."""
        return await self._unary(self._calls.load_model(name, config))

    async def unload_model(self, name: str) -> models_pb2.ModelInfo:
        """Stop serving a model (admin)."""
        return await self._unary(self._calls.unload_model(name))

    async def reload_model(self, name: str, config: str = "") -> models_pb2.ModelInfo:
        """Load a model again (or from a new `config`) while it serves, then switch to it (admin)."""
        return await self._unary(self._calls.reload_model(name, config))

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

    def export_words(
        self,
        model: str,
        *,
        include_vectors: bool = False,
        normalize: bool = False,
        start: int = 0,
        limit: int = 0,
        batch_size: int = 0,
    ) -> AsyncIterator[WordChunk]:
        """The vocabulary in index order, in chunks, with the vectors (unit-length with `normalize`) when
        `include_vectors`; `start` and `limit` (0 = to the end) pick a range."""
        return self._stream(self._calls.export_words(model, include_vectors, normalize, start, limit, batch_size))

    async def similarity(self, model: str, pairs: Sequence[tuple[str, str]]) -> list[float]:
        return await self._unary(self._calls.similarity(model, pairs))

    async def doesnt_match(self, model: str, words: Sequence[str]) -> tuple[str, list[tuple[str, float]]]:
        return await self._unary(self._calls.doesnt_match(model, words))

    async def arithmetic(self, model: str, expressions: Sequence[ExpressionLike], **options: Any) -> ArithmeticResult:
        """Expressions as text ("king - man + woman") or lists of terms (words, vectors, ItemRef items of collections
        bound to this model, (weight, term)). Options:
        method ("cosadd" | "cosmul"), top_n, restrict_vocab, keep_inputs, return_query_vector, return_contributions."""
        return await self._unary(self._calls.arithmetic(model, expressions, options))

    async def evaluate_analogies(self, model: str, analogies: bytes | str | Path, **options: Any) -> AnalogyReport:
        """`analogies` is a file path or its bytes. Options: restrict_vocab, case_sensitive, dummy4unknown, method."""
        return await self._unary(self._calls.evaluate_analogies(model, analogies, options))

    # ---- texts ---------------------------------------------------------------------------------------------------

    async def embed_texts(
        self,
        model: str,
        texts: Sequence[str],
        *,
        normalize: bool = False,
        long_texts: str = "truncate",
        dimensions: int = 0,
        dtype: str = "float32",
        truncation_direction: str = "right",
        prompt_name: str = "",
        prompt: str | None = None,
    ) -> TextEmbeddings:
        """One vector per text. long_texts: "truncate" (to the model's max_seq_length, keeping the start, or the end
        with truncation_direction "left"), "chunk" (the mean of windows) or "refuse". dimensions: Matryoshka
        truncation, then unit-normalised (0: the model's). dtype: "float32", or quantised "int8", "uint8", "binary",
        "ubinary" (then `vectors` is int8/uint8 and the space says so). prompt_name: one of the model's prompts
        (GetModel: prompts) put before each text ("": its default prompt, if any). prompt: a literal prompt instead,
        as sentence-transformers' encode(prompt=...): "" for none at all, not even the default (not with
        prompt_name). The space says what was done, in that order: "<model space>[;prompt=<name>][/dim=<n>][/<dtype>]"
        (a literal prompt that is none of the model's: ";prompt=sha256:<16 hex>")."""
        options = text_options(normalize, long_texts, dimensions, dtype, truncation_direction, prompt_name, prompt)
        return await self._unary(self._calls.embed_texts(model, texts, options))

    async def rerank(
        self,
        model: str,
        query: str,
        texts: Sequence[str],
        *,
        top_n: int = 0,
        raw_scores: bool = False,
        return_text: bool = False,
        truncate: bool = False,
    ) -> Reranked:
        """How relevant each text is to the query, by a cross-encoder: results best first (TEI's /rerank). Scores are
        the sigmoid of the model's logits, or the logits with raw_scores; top_n keeps the best n; a pair longer than
        the model reads is refused (LIMIT_EXCEEDED) unless `truncate`."""
        return await self._unary(self._calls.rerank(model, query, texts, top_n, raw_scores, return_text, truncate))

    async def embed_texts_stream(
        self,
        model: str,
        texts: Sequence[str],
        *,
        batch_size: int = 256,
        normalize: bool = False,
        long_texts: str = "truncate",
        dimensions: int = 0,
        dtype: str = "float32",
        truncation_direction: str = "right",
        progress: Callable[[int], None] | None = None,
        strict: bool = True,
        prompt_name: str = "",
        prompt: str | None = None,
    ) -> TextEmbeddings:
        """Bulk embedding over one EmbedTextsStream call, batch_size texts per message; the vectors of all batches
        (options as embed_texts). A batch that fails does not stop the others: with `strict` its error is raised
        once the stream is done; without, its rows are NaN (0 when quantised) and `errors` maps its batch index to
        the error."""
        options = text_options(normalize, long_texts, dimensions, dtype, truncation_direction, prompt_name, prompt)
        call = self._calls.embed_texts_stream(model, texts, batch_size, options, progress)
        sizes = [len(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
        return joined_text_embeddings(await self._collect(call), sizes, strict=strict)

    async def tokenize_texts(
        self, model: str, texts: Sequence[str], *, add_special_tokens: bool = True
    ) -> list[list[Token]]:
        """Each text's tokens as the model's tokenizer splits it (untruncated), with character offsets."""
        return await self._unary(self._calls.tokenize_texts(model, texts, add_special_tokens))

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

    async def list_directions(
        self, model: str = "", *, include_vectors: bool = False, page_size: int = 0
    ) -> list[latent_pb2.Direction]:
        """Stored directions (all, or one model's), by model then name; vectors only with include_vectors."""
        return await self._all(lambda token: self._calls.list_directions(model, include_vectors, page_size, token))

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
        color_field: str = "",
    ) -> bytes:
        """PNG bytes of the 2-D PCA map. color_by: "" (one colour), "group" (the point set's groups), "cluster"
        (Gaussian-mixture clusters, cluster_k of them or k by BIC), or the name of a collection's metadata field;
        color_field names a metadata field whatever it is called ("group" and "cluster" too)."""
        options = {"width": width, "height": height, "title": title}
        color = (color_by, color_field, cluster_k)
        return await self._unary(self._calls.plot(points, thumbnails, color, options | {"annotate": annotate}))

    # ---- collections ---------------------------------------------------------------------------------------------

    async def create_collection(
        self,
        name: str,
        *,
        dimension: int = 0,
        metric: str = "cosine",
        index: str = "flat",
        model: str = "",
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
        **params: float,
    ) -> collections_pb2.CollectionInfo:
        """metric: cosine | l2 | ip; index: flat | hnsw | ivf-flat | ivf-pq; quantization: none | int8 | rabitq;
        backend: faiss | milvus (empty: the server's default); mmap: keep the vectors memory-mapped (None: the
        backend's default); indexed_fields: {field: string | integer | timestamp}; params: m, ef_construction,
        ef_search, nlist, nprobe, pq_m, pq_bits, rabitq_bits, oversample, target_recall.

        keyword: the keyword index over the items' text (input): None, the server's default (English for a
        collection bound to a text model, none otherwise); True or a language ("english", "french", ..., "none"):
        one; False: none. search_defaults: what searches get when they do not say, a dict of mode (dense | keyword |
        hybrid), fusion (rrf | weighted), rrf_k, dense_weight, candidates. For a collection bound to a text model
        with prompts: document_prompt (put before items' inputs) and query_prompt (before query texts), by name;
        None: the model's "document" / "passage" / "corpus" and "query" prompts; "": none.

        dimensions, dtype: a collection of shaped vectors (CollectionInfo.shape): a text-bound collection's model
        vectors cut to `dimensions` (Matryoshka) and/or quantised to dtype (float32 | int8 | uint8 | binary |
        ubinary), for its inputs and query texts alike; an unbound collection's vectors already quantised (dtype
        only). Vectors sent to it are EmbedTexts' output of that shape; binary types rank by Hamming distance."""
        return await self._unary(
            self._calls.create_collection(
                name,
                dimension,
                metric,
                index,
                model,
                params,
                backend,
                quantization,
                mmap,
                indexed_fields,
                keyword,
                search_defaults,
                document_prompt=document_prompt,
                query_prompt=query_prompt,
                dimensions=dimensions,
                dtype=dtype,
            )
        )

    async def get_collection(self, name: str) -> collections_pb2.CollectionInfo:
        return await self._unary(self._calls.get_collection(name))

    async def list_collections(self, *, page_size: int = 0) -> list[collections_pb2.CollectionInfo]:
        """Every collection, by name (fetched `page_size` at a time; 0: the server's default)."""
        return await self._all(lambda token: self._calls.list_collections(page_size, token))

    async def delete_collection(self, name: str) -> None:
        await self._unary(self._calls.delete_collection(name))

    async def rebuild(self, name: str, *, wait: bool = False, timeout: float | None = None) -> Operation:
        """Start rebuilding a collection's index (searches and writes go on meanwhile); returns the operation, or with
        `wait` the finished one (raising its error if it failed)."""
        operation = await self._unary(self._calls.rebuild(name))
        return await self.wait_operation(operation.name, timeout=timeout) if wait else operation

    async def reembed(
        self,
        collection: str,
        model: str = "",
        *,
        target_name: str = "",
        drop_unembeddable: bool = False,
        wait: bool = False,
        timeout: float | None = None,
    ) -> Operation:
        """Re-embed a collection's stored inputs with `model` (default: its own model, at the version served now) into
        a new collection, then switch the aliases that name it (`collection` an alias: that one; the collection's own
        name: every alias pointing at it). Returns the operation, or with `wait` the finished one (its result a
        ReembedResult; its error raised). Items without a stored input fail it unless `drop_unembeddable`."""
        operation = await self._unary(self._calls.reembed(collection, model, target_name, drop_unembeddable))
        return await self.wait_operation(operation.name, timeout=timeout) if wait else operation

    async def create_snapshot(self, collection: str, *, wait: bool = False, timeout: float | None = None) -> Operation:
        """Start a snapshot of a collection (writes go on meanwhile); returns the operation, or with `wait` the
        finished one, whose result is the Snapshot."""
        operation = await self._unary(self._calls.create_snapshot(collection))
        return await self.wait_operation(operation.name, timeout=timeout) if wait else operation

    async def get_snapshot(self, name: str) -> snapshots_pb2.Snapshot:
        return await self._unary(self._calls.get_snapshot(name))

    async def list_snapshots(self, collection: str = "", *, page_size: int = 0) -> list[snapshots_pb2.Snapshot]:
        """Snapshots (all, or one collection's), newest first."""
        return await self._all(lambda token: self._calls.list_snapshots(collection, page_size, token))

    async def delete_snapshot(self, name: str) -> None:
        await self._unary(self._calls.delete_snapshot(name))

    async def restore_snapshot(
        self,
        snapshot: str,
        name: str,
        *,
        replace_existing: bool = False,
        allow_model_mismatch: bool = False,
        backend: str = "",
        wait: bool = False,
        timeout: float | None = None,
    ) -> Operation:
        """Restore a snapshot into a new collection `name` (`replace_existing`: over the collection of that name);
        returns the operation, or with `wait` the finished one, whose result is the CollectionInfo."""
        call = self._calls.restore_snapshot(snapshot, name, replace_existing, allow_model_mismatch, backend)
        operation = await self._unary(call)
        return await self.wait_operation(operation.name, timeout=timeout) if wait else operation

    async def download_snapshot(self, name: str, destination: str | Path, *, chunk_bytes: int = 0) -> dict[str, Any]:
        """Save a snapshot as one tar file at `destination` (its manifest, then its files), every file checked against
        the manifest's size and sha256 as it arrives (a mismatch raises DATA_LOSS and leaves no file); returns the
        manifest."""
        archive = ArchiveWriter(Path(destination))
        try:
            async for message in self._stream(self._calls.download_snapshot(name, chunk_bytes)):
                archive.add(message.manifest, message.path, message.offset, message.data)
            return archive.close()
        except BaseException:
            archive.abort()
            raise

    async def upload_snapshot(self, source: str | Path, *, chunk_bytes: int = 1 << 20) -> snapshots_pb2.Snapshot:
        """Upload a snapshot archive (as download_snapshot saved it); the server checks every file and keeps it under
        a new name, which the returned Snapshot has."""
        return await self._unary(self._calls.upload_snapshot(read_archive(Path(source), chunk_bytes)))

    async def get_operation(self, name: str) -> Operation:
        return await self._unary(self._calls.get_operation(name))

    async def list_operations(self, collection: str = "", *, page_size: int = 0) -> list[Operation]:
        """Operations (all, or one collection's), newest first."""
        return await self._all(lambda token: self._calls.list_operations(collection, page_size, token))

    async def cancel_operation(self, name: str) -> Operation:
        return await self._unary(self._calls.cancel_operation(name))

    async def wait_operation(self, name: str, *, timeout: float | None = None, poll: float = 0.2) -> Operation:
        """Poll until the operation is done; raise its error if it failed, TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            operation = await self.get_operation(name)
            if operation.done:
                if operation.error is not None:
                    raise operation.error
                return operation
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"operation {name} is still running after {timeout:.0f} s")
            await asyncio.sleep(poll)

    async def create_alias(self, alias: str, collection: str) -> Alias:
        """Another name for a collection, usable wherever a collection is read or written."""
        return await self._unary(self._calls.create_alias(alias, collection))

    async def update_alias(self, alias: str, collection: str) -> tuple[Alias, str]:
        """Point an alias at another collection, atomically; returns it and the collection it pointed at before."""
        return await self._unary(self._calls.update_alias(alias, collection))

    async def delete_alias(self, alias: str) -> None:
        await self._unary(self._calls.delete_alias(alias))

    async def list_aliases(self, collection: str = "", *, page_size: int = 0) -> list[Alias]:
        """Aliases (all, or one collection's), by name."""
        return await self._all(lambda token: self._calls.list_aliases(collection, page_size, token))

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
        collection, one per id; `inputs` beside `vectors`: each item's text, kept and keyword-indexed as it is (not
        embedded)."""
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
        resume_from: int = 0,
        progress: Callable[[int], None] | None = None,
    ) -> UpsertStreamResult:
        """Bulk load over one stream, `batch_size` items a message (batch b: items from b * batch_size on), each
        acknowledged once durable; `progress(n)` is called with each acknowledged batch's item count. If the load
        breaks, UpsertStreamError.next_batch says where to resume: call again with resume_from=next_batch (upserts
        are idempotent, so a batch sent twice is stored once)."""
        call = self._calls.upsert_stream(collection, ids, vectors, metadata, inputs, batch_size, resume_from, progress)
        acks: list[collections_pb2.UpsertStreamResponse] = []
        try:
            async for ack in self._stream(call):
                acks.append(ack)
        except EmbedsvcClientError as exc:
            raise UpsertStreamError(exc, acks[-1].sequence + 1 if acks else resume_from) from None
        return upsert_stream_result(acks)

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
        positive_ids: Sequence[str] = (),
        negative_ids: Sequence[str] = (),
        strategy: str = "",
        keyword_text: str = "",
        **options: Any,
    ) -> SearchHits:
        """One of vector, item_id, input, expression, image, or examples (positive_ids, negative_ids; strategy
        average_vector | best_score); `keyword_text`: the keyword side's text (default: input; alone, a keyword
        search's only query). Expressions over an image collection are lists of image, latent and DirectionRef
        terms; ItemRef terms are stored items.

        Options: k, filter, exact, ef_search, nprobe, include_vectors, include_metadata, target_recall, oversample;
        mode (dense | keyword |
        hybrid; default: the collection's), fusion (rrf | weighted), rrf_k, dense_weight, candidates; rerank (a
        cross-encoder model), rerank_candidates, raw_scores; group_by, group_size; diversity (0..1),
        diversity_candidates; keep_inputs; include_explanations.

        Returns the hits (a list) with `.groups` (with group_by, instead of hits), `.retrieval` (how the search ran)
        and `.provenance`; each hit has its `explanation` (keyword and hybrid searches, stages, examples) and
        `is_input`."""
        query = req.query(
            vector,
            item_id,
            input,
            expression,
            image,
            keyword_text=keyword_text,
            positive_ids=positive_ids,
            negative_ids=negative_ids,
            strategy=strategy,
        )
        return await self._unary(self._calls.search(collection, query, options))

    async def batch_search(
        self, collection: str, queries: np.ndarray | Sequence[collections_pb2.Query | str], **options: Any
    ) -> list[SearchHits]:
        """Many queries: an (n, d) array of vectors (sent packed), texts (each an `input`), or Query messages
        (`embedsvc.client.query(...)` builds one). Options as for search."""
        if not isinstance(queries, np.ndarray):
            queries = list(queries)
        return await self._unary(self._calls.batch_search(collection, queries, options))

    async def batch_search_packed(self, collection: str, queries: np.ndarray, **options: Any) -> PackedHits:
        """Many vector queries (an (n, d) array, sent packed), the hits in columns: cheaper than batch_search's one
        object per hit on both sides for large batches. No metadata or inputs (include_metadata must not be True).
        The result's provenance has the search's effective parameters (nprobe, estimated_recall, ...)."""
        return await self._unary(self._calls.batch_search_packed(collection, queries, options))

    def export_items(self, collection: str, *, batch_size: int = 1000, resume_token: str = "") -> AsyncExport:
        """Every item, with its vector and metadata, in the order of their ids (`for item in ...`; `async for` with
        AsyncClient). The iterator's `resume_token` (after the items already consumed) continues a broken export:
        export_items(name, resume_token=it.resume_token)."""
        return AsyncExport(self._stream(self._calls.export_items(collection, batch_size, resume_token)), resume_token)


class AsyncExport(AsyncIterator[dict[str, Any]]):
    """The items of an export, one at a time; `resume_token` resumes after the last message fully consumed."""

    def __init__(self, batches: AsyncIterator[tuple[list[dict[str, Any]], str]], resume_token: str = "") -> None:
        self._batches = batches
        self._items: list[dict[str, Any]] = []
        self._next_token = resume_token
        self.resume_token = resume_token

    async def __anext__(self) -> dict[str, Any]:
        while not self._items:
            self.resume_token = self._next_token  # every item of the previous message has been taken
            items, self._next_token = await anext(self._batches)
            self._items = list(reversed(items))
        return self._items.pop()
