"""Request builders and response parsers of the Python client (private: the clients call these, users do not)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import numpy as np
from google.rpc import error_details_pb2, status_pb2

from embedsvc.client.types import (
    Alias,
    AnalogyReport,
    ArithmeticResult,
    Clustering,
    DirectionRef,
    Embeddings,
    EmbedsvcClientError,
    ExpressionLike,
    ExpressionResult,
    GeneratedImage,
    Hit,
    ImageLike,
    LatentLike,
    Operation,
    PackedHits,
    Projection,
    Provenance,
    SearchHit,
    SectionScore,
    ServerInfo,
    SpaceVector,
    TermLike,
    TextEmbeddings,
    UpsertStreamResult,
    WordChunk,
)
from embedsvc.v1 import (
    arithmetic_pb2,
    collections_pb2,
    common_pb2,
    images_pb2,
    latent_pb2,
    maps_pb2,
    operations_pb2,
    server_pb2,
    text_pb2,
    words_pb2,
)

METHODS = {"cosadd": arithmetic_pb2.METHOD_COSADD, "cosmul": arithmetic_pb2.METHOD_COSMUL}
METRICS = {
    "cosine": collections_pb2.METRIC_COSINE,
    "l2": collections_pb2.METRIC_L2,
    "ip": collections_pb2.METRIC_INNER_PRODUCT,
}
INDEX_KINDS = {
    "flat": collections_pb2.INDEX_KIND_FLAT,
    "hnsw": collections_pb2.INDEX_KIND_HNSW,
    "ivf-flat": collections_pb2.INDEX_KIND_IVF_FLAT,
    "ivf-pq": collections_pb2.INDEX_KIND_IVF_PQ,
}
BACKENDS = {
    "": collections_pb2.BACKEND_UNSPECIFIED,
    "faiss": collections_pb2.BACKEND_FAISS,
    "milvus": collections_pb2.BACKEND_MILVUS,
}
LONG_TEXT_MODES = {"truncate": text_pb2.LONG_TEXT_MODE_TRUNCATE, "chunk": text_pb2.LONG_TEXT_MODE_CHUNK}
CLUSTER_METHODS = {"gmm": maps_pb2.CLUSTER_METHOD_GAUSSIAN_MIXTURE, "kmeans": maps_pb2.CLUSTER_METHOD_KMEANS}
COVARIANCES = {
    "full": maps_pb2.COVARIANCE_TYPE_FULL,
    "diag": maps_pb2.COVARIANCE_TYPE_DIAG,
    "spherical": maps_pb2.COVARIANCE_TYPE_SPHERICAL,
    "tied": maps_pb2.COVARIANCE_TYPE_TIED,
}


def choice(table: dict[str, Any], value: Any, what: str) -> Any:
    """An enum value given by name (or already as the proto value)."""
    if not isinstance(value, str):
        return value
    try:
        return table[value]
    except KeyError:
        raise ValueError(f"{what} must be one of {', '.join(table)}, got {value!r}") from None


# What the server's gRPC itself says when it sheds a call before any handler sees it, and the setting behind it:
# past max_pending_rpcs, grpcio 1.85's core cancels arriving calls ("CANCELLED", with no ErrorInfo; a call this client
# cancelled itself says "Locally cancelled by application!"); past the backstop behind admission control,
# RESOURCE_EXHAUSTED.
_GRPC_REFUSALS = {
    (grpc.StatusCode.CANCELLED, "CANCELLED"): "max_pending_rpcs",
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!"): "max_concurrent_rpcs",
}


def error(exc: grpc.RpcError) -> EmbedsvcClientError:
    """The client error of a failed call, with the reason and metadata of the server's ErrorInfo and the call's
    request id (the `x-request-id` the server logged it under)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    message = exc.details() if hasattr(exc, "details") else str(exc)
    trailers = dict(exc.trailing_metadata() or ()) if hasattr(exc, "trailing_metadata") else {}
    details = trailers.get("grpc-status-details-bin")
    if details is not None:
        found = status_error(status_pb2.Status.FromString(details))
    else:
        found = EmbedsvcClientError(code, message or "", code.name, {})
        limit = _GRPC_REFUSALS.get((code, found.message))
        if limit is not None:  # shed by the server's gRPC: overload like any other, to retry shortly
            found.reason, found.metadata = "OVERLOADED", {"limit": limit}
    found.request_id = trailers.get("x-request-id", "")
    return found


def channel(target: str, tls: bool, ca_file: Any, cert_file: Any, key_file: Any, aio: bool) -> Any:
    """A plaintext channel, or a TLS one (with the CA to trust, and a client certificate for mutual TLS)."""
    from embedsvc.client.sync import CHANNEL_OPTIONS

    insecure = grpc.aio.insecure_channel if aio else grpc.insecure_channel
    secure = grpc.aio.secure_channel if aio else grpc.secure_channel
    if not (tls or ca_file or cert_file or key_file):
        return insecure(target, options=CHANNEL_OPTIONS)
    if bool(cert_file) != bool(key_file):
        raise ValueError("mutual TLS needs both cert_file and key_file")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(ca_file).read_bytes() if ca_file else None,
        private_key=Path(key_file).read_bytes() if key_file else None,
        certificate_chain=Path(cert_file).read_bytes() if cert_file else None,
    )
    return secure(target, credentials, options=CHANNEL_OPTIONS)


def call_metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


def status_error(status: status_pb2.Status) -> EmbedsvcClientError:
    """The client error a google.rpc.Status describes (a failed stream batch or operation, or a call's trailer)."""
    code = next((c for c in grpc.StatusCode if c.value[0] == status.code), grpc.StatusCode.UNKNOWN)
    reason, metadata = code.name, {}
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            reason, metadata = info.reason, dict(info.metadata)
    return EmbedsvcClientError(code, status.message, reason, metadata)


# ---- requests -----------------------------------------------------------------------------------------------------


def vector(v: LatentLike | Sequence[float]) -> common_pb2.Vector:
    if isinstance(v, SpaceVector):
        return common_pb2.Vector(values=np.asarray(v.values, dtype=np.float32).ravel().tolist(), space=v.space)
    return common_pb2.Vector(values=np.asarray(v, dtype=np.float32).ravel().tolist())


def _put_value(message: common_pb2.MetadataValue, value: Any, where: str) -> None:
    if isinstance(value, bool):  # before int: a bool is an int in Python
        message.bool_value = value
    elif isinstance(value, int | np.integer):
        if not -(2**63) <= int(value) < 2**63:
            raise ValueError(f"metadata {where}: {value} does not fit in 64 bits")
        message.int_value = int(value)
    elif isinstance(value, float | np.floating):
        message.double_value = float(value)
    elif isinstance(value, str):
        message.string_value = value
    elif isinstance(value, datetime):  # a naive datetime is taken as UTC
        message.timestamp_value.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    elif isinstance(value, list | tuple):
        message.list_value.SetInParent()  # an empty list is still a list (reading .values alone sets nothing)
        elements = message.list_value.values
        for i, element in enumerate(value):
            _put_value(elements.add(), element, f"{where}[{i}]")
    else:
        raise ValueError(
            f"metadata {where}: {type(value).__name__} values are not supported (str, int, float, bool, "
            "datetime or lists of those)"
        )


def put_metadata(fields: Any, metadata: dict[str, Any]) -> None:
    """Fill a metadata map (map<string, MetadataValue>) from a dict of plain Python values."""
    for key, value in metadata.items():
        _put_value(fields[key], value, repr(key))


def _get_value(message: common_pb2.MetadataValue) -> Any:
    which = message.WhichOneof("kind")
    if which == "list_value":
        return [_get_value(v) for v in message.list_value.values]
    if which == "timestamp_value":
        return message.timestamp_value.ToDatetime(tzinfo=UTC)
    return getattr(message, which) if which else None


def get_metadata(fields: Any) -> dict[str, Any]:
    """A metadata map as a dict of plain Python values (int, float, str, bool, datetime, lists)."""
    return {key: _get_value(fields[key]) for key in sorted(fields)}  # a map has no order: give it one


def packed_rows(vectors: np.ndarray) -> bytes:
    """An (n, d) array as the float32 little-endian, row-major bytes of a `packed_*` field."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise ValueError(f"expected an (n, d) array of vectors, got shape {vectors.shape}")
    return np.ascontiguousarray(vectors, dtype="<f4").tobytes()


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


def images(values: Sequence[ImageLike]) -> list[common_pb2.ImageInput]:
    return [image_input(i) for i in values]


def _is_vector(value: object) -> bool:
    return isinstance(value, SpaceVector) or (isinstance(value, np.ndarray) and value.ndim == 1)


def term(value: TermLike) -> arithmetic_pb2.Term:
    """The one term builder: a str is a word, a 1-D array or SpaceVector a vector, a DirectionRef a direction, and
    bytes, a Path or a 2-D/3-D array an image; (weight, value) weights any of them."""
    weight: float | None = None
    if isinstance(value, tuple):
        weight, value = float(value[0]), value[1]
    if isinstance(value, str):
        message = arithmetic_pb2.Term(word=value)
    elif isinstance(value, DirectionRef):
        message = arithmetic_pb2.Term(direction=value.name)
    elif _is_vector(value):
        message = arithmetic_pb2.Term(vector=vector(value))  # type: ignore[arg-type]
    else:
        message = arithmetic_pb2.Term(image=image_input(value))  # type: ignore[arg-type]
    if weight is not None:
        message.weight = weight
    return message


def expression(value: ExpressionLike | arithmetic_pb2.Expression) -> arithmetic_pb2.Expression:
    if isinstance(value, arithmetic_pb2.Expression):
        return value
    if isinstance(value, str):
        return arithmetic_pb2.Expression(text=value)
    return arithmetic_pb2.Expression(terms=[term(t) for t in value])


def point(value: ImageLike | LatentLike) -> latent_pb2.LatentPoint:
    if _is_vector(value):
        return latent_pb2.LatentPoint(latent=vector(value))  # type: ignore[arg-type]
    return latent_pb2.LatentPoint(image=image_input(value))  # type: ignore[arg-type]


def decode_latents_request(
    model: str, latents: Sequence[LatentLike] | np.ndarray, expressions: Sequence[Any]
) -> latent_pb2.DecodeLatentsRequest:
    """Latents as an (n, d) array go packed; vectors and expressions as messages. The results come back packed."""
    request = latent_pb2.DecodeLatentsRequest(model=model, expressions=[expression(e) for e in expressions])
    if isinstance(latents, np.ndarray) and latents.ndim == 2:
        request.packed_latents = packed_rows(latents)
    else:
        request.latents.extend(latent_rows(latents))
    request.packed_results = True
    return request


def latent_rows(latents: Sequence[LatentLike] | np.ndarray) -> list[common_pb2.Vector]:
    if isinstance(latents, np.ndarray) and latents.ndim == 2:  # one tolist() for the matrix: cheaper than per row
        return [common_pb2.Vector(values=z) for z in np.asarray(latents, dtype=np.float32).tolist()]
    return [vector(z) for z in latents]


def embed_texts_request(
    model: str, texts: Sequence[str], normalize: bool, long_texts: str
) -> text_pb2.EmbedTextsRequest:
    mode = choice(LONG_TEXT_MODES, long_texts, "long_texts")
    return text_pb2.EmbedTextsRequest(model=model, texts=list(texts), normalize=normalize, long_texts=mode)


def items(
    ids: Sequence[str],
    vectors: np.ndarray | None = None,
    metadata: Sequence[dict[str, Any] | None] | None = None,
    inputs: Sequence[str] | None = None,
    pictures: Sequence[ImageLike] | None = None,
) -> tuple[list[collections_pb2.Item], bytes]:
    """Item messages from parallel lists (ids, an (n, d) array or None with inputs or images, metadata dicts), and the
    vectors packed as float32 little-endian for the request's `packed_vectors`."""
    if pictures is not None and len(pictures) != len(ids):
        raise ValueError(f"{len(pictures)} images for {len(ids)} ids (one each)")
    built = []
    for n, item_id in enumerate(ids):
        item = collections_pb2.Item(id=item_id, input=inputs[n] if inputs is not None else "")
        fields = metadata[n] if metadata is not None else None
        if fields:
            put_metadata(item.metadata, fields)
        if pictures is not None:
            item.image.CopyFrom(image_input(pictures[n]))
        built.append(item)
    return built, b"" if vectors is None else packed_rows(vectors)


def query(
    vector_: np.ndarray | SpaceVector | None = None,
    item_id: str = "",
    input: str = "",
    expression_: ExpressionLike | arithmetic_pb2.Expression | None = None,
    image: ImageLike | None = None,
) -> collections_pb2.Query:
    if vector_ is not None:
        return collections_pb2.Query(vector=vector(vector_))
    if item_id:
        return collections_pb2.Query(item_id=item_id)
    if input:
        return collections_pb2.Query(input=input)
    if expression_ is not None:
        return collections_pb2.Query(expression=expression(expression_))
    if image is not None:
        return collections_pb2.Query(image=image_input(image))
    raise ValueError("give one of vector, item_id, input, expression or image")


def search_options(
    k: int = 10,
    filter: str = "",
    exact: bool = False,
    ef_search: int = 0,
    nprobe: int = 0,
    include_vectors: bool = False,
    include_metadata: bool = True,
) -> collections_pb2.SearchOptions:
    return collections_pb2.SearchOptions(
        k=k,
        filter=filter,
        exact=exact,
        ef_search=ef_search,
        nprobe=nprobe,
        include_vectors=include_vectors,
        include_metadata=include_metadata,
    )


# ---- responses ----------------------------------------------------------------------------------------------------


def provenance(p: common_pb2.Provenance) -> Provenance:
    return Provenance(p.model, p.model_version, p.method, dict(p.parameters))


def _rows(vectors: Any) -> np.ndarray:
    return np.asarray([v.values for v in vectors], dtype=np.float32)


def embeddings(response: words_pb2.EmbedWordsResponse) -> Embeddings:
    space = response.vectors[0].space if response.vectors else ""
    return Embeddings(_rows(response.vectors), space, list(response.in_vocabulary), provenance(response.provenance))


def image_embeddings(response: images_pb2.EmbedImagesResponse) -> Embeddings:
    vectors = _rows(response.vectors)
    space = response.vectors[0].space if response.vectors else ""
    return Embeddings(vectors, space, [True] * len(vectors), provenance(response.provenance))


def text_embeddings(response: text_pb2.EmbedTextsResponse) -> TextEmbeddings:
    return TextEmbeddings(
        _rows(response.vectors),
        response.vectors[0].space if response.vectors else "",
        provenance=provenance(response.provenance),
        truncated=list(response.truncated),
        token_counts=list(response.token_counts),
        max_seq_length=response.max_seq_length,
    )


def stream_batch(response: text_pb2.EmbedTextsStreamResponse) -> TextEmbeddings | EmbedsvcClientError:
    if response.HasField("error"):
        return status_error(response.error)
    return text_embeddings(response.batch)


def joined_text_embeddings(
    parts: list[TextEmbeddings | EmbedsvcClientError], sizes: list[int], *, strict: bool
) -> TextEmbeddings:
    """The batches of an EmbedTextsStream as one answer (positions counted over the whole input). A failed batch
    raises its error (strict), or leaves NaN rows and an entry in `errors`."""
    if not parts:
        raise ValueError("no texts given")
    errors = {n: p for n, p in enumerate(parts) if isinstance(p, EmbedsvcClientError)}
    good = [p for p in parts if isinstance(p, TextEmbeddings)]
    if errors and (strict or not good):
        raise next(iter(errors.values()))
    dimension = good[0].vectors.shape[1]
    offsets = np.cumsum([0, *sizes])
    vectors = np.full((int(offsets[-1]), dimension), np.nan, np.float32)
    truncated: list[int] = []
    counts = [0] * int(offsets[-1])
    for n, part in enumerate(parts):
        if isinstance(part, TextEmbeddings):
            vectors[offsets[n] : offsets[n + 1]] = part.vectors
            truncated += [int(offsets[n]) + t for t in part.truncated]
            counts[offsets[n] : offsets[n + 1]] = part.token_counts
    return TextEmbeddings(
        vectors,
        good[0].space,
        provenance=good[0].provenance,
        truncated=truncated,
        token_counts=counts,
        max_seq_length=good[0].max_seq_length,
        errors=errors,
    )


def upsert_stream_result(acks: list[collections_pb2.UpsertStreamResponse]) -> UpsertStreamResult:
    return UpsertStreamResult(
        upserted=acks[-1].stream_upserted if acks else 0, batches=len(acks), count=acks[-1].count if acks else 0
    )


def arithmetic_result(response: arithmetic_pb2.ArithmeticResponse) -> ArithmeticResult:
    results = [
        ExpressionResult(
            hits=[Hit(h.word, h.score, h.is_input, tuple(h.contributions)) for h in r.hits],
            terms=[
                {"kind": t.kind, "weight": t.weight, "word": t.word, "in_vocabulary": t.in_vocabulary} for t in r.terms
            ],
            query_vector=np.asarray(r.query_vector.values, dtype=np.float32) if r.HasField("query_vector") else None,
        )
        for r in response.results
    ]
    return ArithmeticResult(results, provenance(response.provenance))


def analogy_report(r: arithmetic_pb2.EvaluateAnalogiesResponse) -> AnalogyReport:
    def section(s: arithmetic_pb2.SectionScore) -> SectionScore:
        return SectionScore(s.name, s.correct, s.incorrect, s.accuracy)

    return AnalogyReport(
        [section(s) for s in r.sections],
        section(r.total),
        r.questions,
        r.oov_questions,
        r.skipped_lines,
        provenance(r.provenance),
    )


def neighbours(r: words_pb2.NearestWordsResponse) -> list[list[Hit]]:
    return [[Hit(n.word, n.score) for n in lst.neighbours] for lst in r.results]


def search_hit(h: collections_pb2.SearchHit) -> SearchHit:
    values = np.asarray(h.vector.values, dtype=np.float32) if h.HasField("vector") else None
    return SearchHit(h.id, h.score, get_metadata(h.metadata), h.input, values)


def item_dict(item: collections_pb2.Item) -> dict[str, Any]:
    return {
        "id": item.id,
        "vector": np.asarray(item.vector.values, dtype=np.float32) if item.HasField("vector") else None,
        "metadata": get_metadata(item.metadata),
        "input": item.input,
    }


def generated(messages: Any) -> list[GeneratedImage]:
    return [GeneratedImage(m.png, np.asarray(m.latent.values, dtype=np.float32), m.latent.space) for m in messages]


def unpacked(message: common_pb2.PackedVectors) -> np.ndarray:
    """A PackedVectors message as an (n, d) float32 array (read-only: a view of the message's bytes)."""
    return np.frombuffer(message.data, dtype="<f4").reshape(message.rows, message.dimension)


def decoded(r: latent_pb2.DecodeLatentsResponse) -> list[GeneratedImage]:
    """The images of a DecodeLatents response, packed (pngs and one latent matrix) or one message per image."""
    if not r.pngs:  # a server older than packed_results answers with images
        return generated(r.images)
    latents, space = unpacked(r.packed_latents).copy(), r.packed_latents.space
    return [GeneratedImage(png, z, space) for png, z in zip(r.pngs, latents, strict=True)]


def latent_codes(r: latent_pb2.EncodeImagesResponse) -> tuple[np.ndarray, np.ndarray]:
    if r.HasField("packed_means"):
        return unpacked(r.packed_means).copy(), unpacked(r.packed_log_variances).copy()
    # An older server answers with codes. list() first: numpy reads a list of floats far faster than a container.
    means = np.array([list(c.mean.values) for c in r.codes], dtype=np.float32)
    return means, np.array([list(c.log_variance.values) for c in r.codes], dtype=np.float32)


def packed_hits(r: collections_pb2.BatchSearchResponse) -> PackedHits:
    p = r.packed
    return PackedHits(
        counts=np.array(p.counts, dtype=np.int64),
        ids=list(p.ids),
        scores=np.frombuffer(p.scores, dtype="<f8").astype(np.float64),
        vectors=unpacked(p.vectors).copy() if p.HasField("vectors") else None,
        space=p.vectors.space,
    )


def anomaly_scores(r: latent_pb2.AnomalyScoreResponse) -> list[dict[str, float]]:
    return [
        {"negative_elbo": s.negative_elbo, "reconstruction_nll": s.reconstruction_nll, "kl": s.kl} for s in r.scores
    ]


def _moment(message: Any, name: str) -> datetime | None:
    return getattr(message, name).ToDatetime(tzinfo=UTC) if message.HasField(name) else None


def operation(message: operations_pb2.Operation) -> Operation:
    metadata = operations_pb2.OperationMetadata()
    message.metadata.Unpack(metadata)
    result = None
    if message.HasField("response") and message.response.value:
        result = collections_pb2.CollectionInfo()
        message.response.Unpack(result)
    return Operation(
        name=message.name,
        done=message.done,
        kind=metadata.kind,
        collection=metadata.collection,
        stage=metadata.stage,
        done_units=metadata.done_units,
        total_units=metadata.total_units,
        create_time=_moment(metadata, "create_time"),
        update_time=_moment(metadata, "update_time"),
        end_time=_moment(metadata, "end_time"),
        cancel_requested=metadata.cancel_requested,
        error=status_error(message.error) if message.HasField("error") else None,
        result=result,
    )


def alias(message: collections_pb2.Alias) -> Alias:
    return Alias(message.alias, message.collection, _moment(message, "update_time"))


def server_info(message: server_pb2.GetServerInfoResponse) -> ServerInfo:
    limits = {f.name: getattr(message.limits, f.name) for f in message.limits.DESCRIPTOR.fields}
    return ServerInfo(message.server_version, message.api_version, _moment(message, "start_time"), limits)


def projection(r: maps_pb2.ProjectResponse) -> Projection:
    def coords(points: Any) -> np.ndarray:
        return np.array([list(p.coordinates) for p in points], dtype=np.float64)

    return Projection(
        coordinates=coords(r.points),
        labels=[p.label for p in r.points],
        explained_variance_ratio=np.array(list(r.explained_variance_ratio)),
        explained_variance=np.array(list(r.explained_variance)),
        mean=np.array(list(r.mean.values), dtype=np.float32),
        components=np.array([list(c.values) for c in r.components], dtype=np.float32),
        transformed=[coords(t.points) for t in r.transformed],
    )


def clustering(r: maps_pb2.ClusterResponse) -> Clustering:
    return Clustering(
        k=r.k,
        assignments=np.array(list(r.assignments), dtype=np.int64),
        responsibilities=np.array([list(x.values) for x in r.responsibilities]),
        means=np.array([list(m.values) for m in r.means]),
        weights=np.array(list(r.weights)),
        bic={b.k: b.bic for b in r.bic},
        labels=list(r.labels),
        mean_log_likelihood=r.mean_log_likelihood,
    )


def word_chunk(r: words_pb2.ExportWordsResponse) -> WordChunk:
    vectors = None
    if r.vectors:
        vectors = np.frombuffer(r.vectors, dtype="<f4").astype(np.float32).reshape(len(r.words), r.dimension)
    return WordChunk(r.start, list(r.words), vectors, r.dimension, r.vocabulary_size, r.space)
