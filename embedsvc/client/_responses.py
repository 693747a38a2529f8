"""Response parsers of the Python client (private: the call builders in `_calls.py` name them): the messages the
server answers, as the result types of `types.py` and numpy arrays."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from embedsvc.client._errors import status_error
from embedsvc.client.types import (
    Alias,
    AnalogyReport,
    ArithmeticResult,
    Clustering,
    Embeddings,
    EmbedsvcClientError,
    ExpressionResult,
    GeneratedImage,
    Hit,
    HitExplanation,
    HitGroup,
    Operation,
    PackedHits,
    Projection,
    Provenance,
    Reranked,
    RerankResult,
    RetrievalReport,
    SearchHit,
    SearchHits,
    SectionScore,
    ServerInfo,
    TextEmbeddings,
    Token,
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
    retrieval_pb2,
    server_pb2,
    snapshots_pb2,
    text_pb2,
    words_pb2,
)


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


# The numpy type of each EmbedTexts dtype.
_DTYPES = {
    text_pb2.EMBEDDING_DTYPE_INT8: ("int8", np.int8),
    text_pb2.EMBEDDING_DTYPE_UINT8: ("uint8", np.uint8),
    text_pb2.EMBEDDING_DTYPE_BINARY: ("binary", np.int8),
    text_pb2.EMBEDDING_DTYPE_UBINARY: ("ubinary", np.uint8),
}


def text_rows(response: text_pb2.EmbedTextsResponse) -> int:
    """How many vectors an EmbedTexts answer holds, in whichever form it sent them."""
    if response.HasField("packed_vectors"):
        return response.packed_vectors.rows
    if response.HasField("quantized_vectors"):
        return response.quantized_vectors.rows
    return len(response.vectors)


def text_embeddings(response: text_pb2.EmbedTextsResponse) -> TextEmbeddings:
    """The vectors from the packed forms (asked for), or from the messages (an older server, or none asked)."""
    dtype = "float32"
    vectors: np.ndarray
    if response.HasField("packed_vectors"):
        packed = response.packed_vectors
        vectors = np.frombuffer(packed.data, "<f4").astype(np.float32).reshape(packed.rows, packed.dimension)
        space, dimension = packed.space, packed.dimension
    elif response.HasField("quantized_vectors"):
        q = response.quantized_vectors
        dtype, numpy_type = _DTYPES[q.dtype]
        vectors = np.frombuffer(q.data, numpy_type).reshape(q.rows, -1).copy() if q.rows else np.zeros((0, 0))
        space, dimension = q.space, q.dimension
    else:
        vectors = _rows(response.vectors)
        space = response.vectors[0].space if response.vectors else ""
        dimension = vectors.shape[1] if vectors.ndim == 2 else 0
        parameters = response.provenance.parameters
        if parameters.get("dtype", "float32") != "float32":  # the message form of quantised vectors
            dtype = parameters["dtype"]
            vectors = vectors.astype(np.int8 if dtype in ("int8", "binary") else np.uint8)
            dimension = int(parameters.get("dimensions", 0)) or dimension
    return TextEmbeddings(
        vectors,
        space,
        provenance=provenance(response.provenance),
        truncated=list(response.truncated),
        token_counts=list(response.token_counts),
        max_seq_length=response.max_seq_length,
        dtype=dtype,
        dimension=dimension,
        warnings=list(response.warnings),
    )


def reranked(response: text_pb2.RerankResponse) -> Reranked:
    return Reranked(
        [RerankResult(r.index, r.score, r.text) for r in response.results],
        list(response.truncated),
        list(response.token_counts),
        response.max_seq_length,
        provenance(response.provenance),
    )


def tokenized(response: text_pb2.TokenizeTextsResponse) -> list[list[Token]]:
    return [[Token(t.id, t.token, t.special, t.start, t.end) for t in text.tokens] for text in response.texts]


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
    first = good[0]
    offsets = np.cumsum([0, *sizes])
    width = first.vectors.shape[1]
    if first.dtype == "float32":
        vectors = np.full((int(offsets[-1]), width), np.nan, np.float32)
    else:
        vectors = np.zeros((int(offsets[-1]), width), first.vectors.dtype)
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
        dtype=first.dtype,
        dimension=first.dimension,
        warnings=list(dict.fromkeys(w for p in good for w in p.warnings)),
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


def _optional(message: Any, name: str) -> float | None:
    return float(getattr(message, name)) if message.HasField(name) else None


def explanation(e: retrieval_pb2.HitExplanation) -> HitExplanation:
    return HitExplanation(
        dense_rank=e.dense_rank,
        dense_score=_optional(e, "dense_score"),
        keyword_rank=e.keyword_rank,
        keyword_score=_optional(e, "keyword_score"),
        dense_contribution=e.dense_contribution,
        keyword_contribution=e.keyword_contribution,
        fused_score=_optional(e, "fused_score"),
        rerank_score=_optional(e, "rerank_score"),
        best_positive=_optional(e, "best_positive"),
        best_negative=_optional(e, "best_negative"),
        mmr_score=_optional(e, "mmr_score"),
        candidate_rank=e.candidate_rank,
    )


def search_hit(h: collections_pb2.SearchHit) -> SearchHit:
    values = np.asarray(h.vector.values, dtype=np.float32) if h.HasField("vector") else None
    why = explanation(h.explanation) if h.HasField("explanation") else None
    return SearchHit(h.id, h.score, get_metadata(h.metadata), h.input, values, h.is_input, why)


def _name(enum: Any, value: int, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix).lower() if value else ""


def retrieval(r: retrieval_pb2.RetrievalReport) -> RetrievalReport:
    fusion = None
    if r.HasField("fusion"):
        f = r.fusion
        fusion = {
            "method": _name(retrieval_pb2.FusionMethod, f.method, "FUSION_METHOD_"),
            "rrf_k": f.rrf_k,
            "dense_weight": f.dense_weight if f.HasField("dense_weight") else None,
            "candidates": f.candidates,
        }
    rerank = None
    if r.HasField("rerank"):
        rerank = {
            "model": r.rerank.model,
            "candidates": r.rerank.candidates,
            "raw_scores": r.rerank.raw_scores,
            "model_version": r.rerank_model_version,
        }
    return RetrievalReport(
        mode=_name(retrieval_pb2.SearchMode, r.mode, "SEARCH_MODE_"),
        fusion=fusion,
        dense_candidates=r.dense_candidates,
        keyword_candidates=r.keyword_candidates,
        keyword_language=r.keyword_language,
        rerank=rerank,
        diversity=r.diversity if r.HasField("diversity") else None,
        diversity_candidates=r.diversity_candidates,
        example_strategy=_name(retrieval_pb2.ExampleStrategy, r.example_strategy, "EXAMPLE_STRATEGY_"),
        notices=[(n.query, _name(retrieval_pb2.SearchNotice, n.notice, "SEARCH_NOTICE_")) for n in r.notices],
        query_prompt_name=r.query_prompt_name,
    )


def _hits(
    r: collections_pb2.SearchResponse | collections_pb2.HitList,
    report: RetrievalReport | None,
    origin: Provenance | None,
) -> SearchHits:
    groups = [
        HitGroup(_get_value(g.value) if g.HasField("value") else None, [search_hit(h) for h in g.hits])
        for g in r.groups
    ]
    return SearchHits([search_hit(h) for h in r.hits], groups=groups, retrieval=report, provenance=origin)


def search_hits(r: collections_pb2.SearchResponse) -> SearchHits:
    report = retrieval(r.retrieval) if r.HasField("retrieval") else None
    return _hits(r, report, provenance(r.provenance))


def batch_hits(r: collections_pb2.BatchSearchResponse) -> list[SearchHits]:
    report = retrieval(r.retrieval) if r.HasField("retrieval") else None
    origin = provenance(r.provenance)
    return [_hits(lst, report, origin) for lst in r.results]


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
        provenance=provenance(r.provenance),
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
    result: Any = None
    if message.HasField("response") and message.response.value:
        for kind in (collections_pb2.CollectionInfo, collections_pb2.ReembedResult, snapshots_pb2.Snapshot):
            if message.response.Is(kind.DESCRIPTOR):
                result = kind()
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
        units_per_second=metadata.units_per_second,
        eta_seconds=metadata.eta_seconds,
        replica=metadata.replica,
        reembed=metadata.reembed if metadata.HasField("reembed") else None,
        warnings=list(metadata.warnings),
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
