"""Pure conversions for CollectionService: messages <-> collection domain objects."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from google.protobuf import timestamp_pb2

from embedsvc.core.collections.admin import KeywordSpec
from embedsvc.core.collections.explanation import Explanation
from embedsvc.core.collections.fusion import DEFAULT_CANDIDATES, Fusion, Method
from embedsvc.core.collections.options import (
    ExamplesIn,
    PackedQueries,
    QueryIn,
    RerankIn,
    SearchOptions,
    Strategy,
    collection_fusion,
)
from embedsvc.core.collections.planner import Notice, QueryResult, Report
from embedsvc.core.collections.service import CollectionInfo, ItemIn
from embedsvc.core.texts.shapes import Dtype
from embedsvc.errors import EmbedsvcError, Reason, invalid
from embedsvc.index.snapshot_files import FAISS, Manifest
from embedsvc.index.types import (
    Alias,
    Backend,
    CollectionConfig,
    FieldType,
    Hit,
    IndexedField,
    IndexKind,
    IndexParams,
    Metric,
    Quantization,
    SearchDefaults,
    SearchMode,
    StoredItem,
)
from embedsvc.limits import Limits
from embedsvc.transport import convert, images_convert
from embedsvc.v1 import collections_pb2, common_pb2, retrieval_pb2, snapshots_pb2

METRICS: dict[int, Metric] = {
    collections_pb2.METRIC_COSINE: Metric.COSINE,
    collections_pb2.METRIC_L2: Metric.L2,
    collections_pb2.METRIC_INNER_PRODUCT: Metric.INNER_PRODUCT,
}
_METRIC_MESSAGES: dict[Metric, Any] = {v: k for k, v in METRICS.items()}
KINDS: dict[int, IndexKind] = {
    collections_pb2.INDEX_KIND_UNSPECIFIED: IndexKind.FLAT,
    collections_pb2.INDEX_KIND_FLAT: IndexKind.FLAT,
    collections_pb2.INDEX_KIND_HNSW: IndexKind.HNSW,
    collections_pb2.INDEX_KIND_IVF_FLAT: IndexKind.IVF_FLAT,
    collections_pb2.INDEX_KIND_IVF_PQ: IndexKind.IVF_PQ,
}
_KIND_MESSAGES: dict[IndexKind, Any] = {v: k for k, v in KINDS.items() if k != collections_pb2.INDEX_KIND_UNSPECIFIED}
QUANTIZATIONS: dict[int, Quantization] = {
    collections_pb2.QUANTIZATION_UNSPECIFIED: Quantization.NONE,
    collections_pb2.QUANTIZATION_NONE: Quantization.NONE,
    collections_pb2.QUANTIZATION_INT8: Quantization.INT8,
    collections_pb2.QUANTIZATION_RABITQ: Quantization.RABITQ,
}
_QUANTIZATION_MESSAGES: dict[Quantization, Any] = {
    v: k for k, v in QUANTIZATIONS.items() if k != collections_pb2.QUANTIZATION_UNSPECIFIED
}
FIELD_TYPES: dict[int, FieldType] = {
    collections_pb2.FIELD_TYPE_STRING: FieldType.STRING,
    collections_pb2.FIELD_TYPE_INTEGER: FieldType.INTEGER,
    collections_pb2.FIELD_TYPE_TIMESTAMP: FieldType.TIMESTAMP,
}
_FIELD_TYPE_MESSAGES: dict[FieldType, Any] = {v: k for k, v in FIELD_TYPES.items()}


def backend(value: int) -> Backend | None:
    """The backend a request names, by the enum value's name (BACKEND_MILVUS is Backend.MILVUS); None: the default.
    Derived, not tabled, so that a new backend needs no change here."""
    if value == collections_pb2.BACKEND_UNSPECIFIED:
        return None
    try:
        return Backend(collections_pb2.Backend.Name(value).removeprefix("BACKEND_").lower())
    except ValueError:  # not in the proto, or not a backend of this server
        raise invalid("backend", f"unknown backend {value}") from None


def backend_message(value: Backend) -> collections_pb2.Backend:
    return collections_pb2.Backend.Value("BACKEND_" + value.value.upper())


_STATES = {
    "recovering": collections_pb2.COLLECTION_STATE_RECOVERING,
    "ready": collections_pb2.COLLECTION_STATE_READY,
    "rebuilding": collections_pb2.COLLECTION_STATE_REBUILDING,
    "data_loss": collections_pb2.COLLECTION_STATE_DATA_LOSS,
}


def metric(value: int) -> Metric | None:
    if value == collections_pb2.METRIC_UNSPECIFIED:
        return None
    if value not in METRICS:
        raise invalid("metric", f"unknown metric {value}")
    return METRICS[value]


_INT_PARAMS = ("m", "ef_construction", "ef_search", "nlist", "nprobe", "pq_m", "pq_bits", "rabitq_bits", "oversample")


def index_params(spec: collections_pb2.IndexSpec) -> IndexParams:
    if spec.kind not in KINDS:
        raise invalid("index.kind", f"unknown index kind {spec.kind}")
    if spec.quantization not in QUANTIZATIONS:
        raise invalid("index.quantization", f"unknown quantization {spec.quantization}")
    values = {name: getattr(spec, name) for name in _INT_PARAMS}
    for name, value in values.items():
        if value < 0:
            raise invalid(f"index.{name}", f"{name} must not be negative")
    if not 0.0 <= spec.target_recall <= 1.0:  # NaN fails this too
        raise invalid("index.target_recall", f"target_recall must be 0..1, got {spec.target_recall}")
    return IndexParams(
        KINDS[spec.kind],
        quantization=QUANTIZATIONS[spec.quantization],
        target_recall=spec.target_recall,
        mmap=spec.mmap if spec.HasField("mmap") else None,
        **values,
    )


def index_spec(params: IndexParams) -> collections_pb2.IndexSpec:
    spec = collections_pb2.IndexSpec(
        kind=_KIND_MESSAGES[params.kind],
        quantization=_QUANTIZATION_MESSAGES[params.quantization],
        target_recall=params.target_recall,
        **{name: getattr(params, name) for name in _INT_PARAMS},
    )
    if params.mmap is not None:
        spec.mmap = params.mmap
    return spec


def indexed_fields(messages: Sequence[collections_pb2.IndexedField]) -> list[IndexedField]:
    out = []
    for n, message in enumerate(messages):
        if message.type not in FIELD_TYPES:
            raise invalid(
                f"indexed_fields[{n}].type", f"{message.name!r}: the type must be string, integer or timestamp"
            )
        out.append(IndexedField(message.name, FIELD_TYPES[message.type]))
    return out


def _calibration(calibration: Any) -> collections_pb2.RecallCalibration | None:
    if calibration is None:
        return None
    return collections_pb2.RecallCalibration(
        knob=calibration.knob,
        points=[collections_pb2.RecallPoint(value=v, oversample=o, recall=r) for v, o, r in calibration.points],
        count=calibration.count,
        queries=calibration.queries,
        k=calibration.k,
    )


def timestamp(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    if moment is None:
        return None
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(moment)
    return message


def info_message(info: CollectionInfo) -> collections_pb2.CollectionInfo:
    c = info.config
    return collections_pb2.CollectionInfo(
        name=c.name,
        dimension=c.dimension,
        metric=_METRIC_MESSAGES[c.metric],
        index=index_spec(c.index),
        count=info.count,
        trained=info.trained,
        model=c.model,
        model_version=c.model_version,
        space=c.space,
        disk_bytes=info.disk_bytes,
        memory_bytes=info.memory_bytes,
        state=_STATES[info.state],
        error=info.error,
        tombstones=info.tombstones,
        create_time=timestamp(info.create_time),
        aliases=info.aliases,
        checkpoint_error=info.checkpoint_error,
        checkpoint_failures=info.checkpoint_failures,
        backend=backend_message(c.backend),
        keyword=retrieval_pb2.KeywordIndexSpec(language=c.keyword, enabled=True) if c.keyword else None,
        search_defaults=defaults_message(c),
        indexed_fields=[
            collections_pb2.IndexedField(name=f.name, type=_FIELD_TYPE_MESSAGES[f.type]) for f in c.indexed_fields
        ],
        mapped_bytes=info.mapped_bytes,
        calibration=_calibration(info.calibration),
        training=collections_pb2.IndexTraining(**info.training) if info.training else None,
        prompts=(
            retrieval_pb2.CollectionPrompts(
                document_prompt_name=c.document_prompt_name, query_prompt_name=c.query_prompt_name
            )
            if c.document_prompt_name or c.query_prompt_name
            else None
        ),
        query_space=c.query_space,
        shape=shape_message(c),
    )


def shape_message(c: CollectionConfig) -> collections_pb2.VectorShape | None:
    """A shaped collection's shape, dimensions and calibration filled in; None for float vectors, uncut."""
    if not (c.dtype or c.shape_dimensions):
        return None
    return collections_pb2.VectorShape(
        dimensions=c.dimension,
        dtype=convert.DTYPE_VALUES[Dtype(c.dtype or "float32")],
        calibration=c.calibration,
    )


def prompt_names(request: collections_pb2.CreateCollectionRequest) -> tuple[str | None, str | None]:
    """CreateCollection's (document, query) prompt names: None where unset (the model's conventional prompt)."""
    if not request.HasField("prompts"):
        return None, None
    prompts = request.prompts
    return (
        prompts.document_prompt_name if prompts.HasField("document_prompt_name") else None,
        prompts.query_prompt_name if prompts.HasField("query_prompt_name") else None,
    )


def snapshot_message(manifest: Manifest) -> snapshots_pb2.Snapshot:
    config = manifest.config
    source = CollectionInfo(
        config, "ready", "", count=manifest.count, create_time=datetime.fromtimestamp(config.created_at, UTC)
    )
    return snapshots_pb2.Snapshot(
        name=f"snapshots/{manifest.id}",
        collection=config.name,
        source=info_message(source),
        create_time=timestamp(datetime.fromtimestamp(manifest.created_at, UTC)),
        count=manifest.count,
        size_bytes=manifest.size_bytes,
        format=snapshots_pb2.SNAPSHOT_FORMAT_FAISS if manifest.format == FAISS else snapshots_pb2.SNAPSHOT_FORMAT_ITEMS,
        point_in_time=manifest.point_in_time,
        position=manifest.position,
        replica=manifest.replica,
        files=[
            snapshots_pb2.SnapshotFile(path=f.path, size_bytes=f.size_bytes, sha256=f.sha256) for f in manifest.files
        ],
    )


def alias_message(alias: Alias) -> collections_pb2.Alias:
    return collections_pb2.Alias(
        alias=alias.alias, collection=alias.collection, update_time=timestamp(alias.update_time)
    )


def _value(message: common_pb2.MetadataValue, field: str, *, in_list: bool = False) -> Any:
    which = message.WhichOneof("kind")
    if which == "string_value":
        return message.string_value
    if which == "int_value":
        return message.int_value
    if which == "double_value":
        return message.double_value  # NaN and infinities are refused with the other checks, in the domain
    if which == "bool_value":
        return message.bool_value
    if which == "timestamp_value":
        return message.timestamp_value.ToDatetime(tzinfo=UTC)
    if which == "list_value" and not in_list:
        return [_value(v, f"{field}[{i}]", in_list=True) for i, v in enumerate(message.list_value.values)]
    problem = "a list inside a list" if which == "list_value" else "a value with no kind set"
    raise EmbedsvcError(Reason.INVALID_METADATA, f"metadata: {problem}", field=field)


def metadata_dict(fields: Any, field: str) -> dict[str, Any]:
    """A request's metadata map as the domain's dict of typed values."""
    return {key: _value(value, f"{field}.{key}") for key, value in fields.items()}


def _set_value(message: common_pb2.MetadataValue, value: Any) -> None:
    if isinstance(value, bool):  # before int: bool is an int in Python
        message.bool_value = value
    elif isinstance(value, int):
        message.int_value = value
    elif isinstance(value, float):
        message.double_value = value
    elif isinstance(value, str):
        message.string_value = value
    elif isinstance(value, datetime):
        message.timestamp_value.FromDatetime(value)
    else:
        elements = message.list_value.values
        for element in value:
            _set_value(elements.add(), element)


def add_metadata(fields: Any, metadata: dict[str, Any]) -> None:
    """Fill a response's metadata map from stored metadata."""
    for key, value in metadata.items():
        _set_value(fields[key], value)


def _packed(data: bytes, count: int) -> np.ndarray:
    if count == 0 or len(data) % (4 * count):
        raise EmbedsvcError(
            Reason.DIMENSION_MISMATCH,
            f"packed_vectors has {len(data)} bytes, not a whole number of float32 rows for {count} items",
            field="packed_vectors",
        )
    return np.frombuffer(data, dtype="<f4").reshape(count, -1).astype(np.float32, copy=False)


def items(messages: Any, packed: bytes = b"") -> list[ItemIn]:
    rows = _packed(packed, len(messages)) if packed else None
    out = []
    for n, m in enumerate(messages):
        has_vector = m.HasField("vector") and len(m.vector.values) > 0
        if rows is not None and has_vector:
            raise invalid(f"items[{n}].vector", "set packed_vectors or each item's vector, not both")
        if rows is not None:
            vector: np.ndarray | None = rows[n]
        else:
            vector = convert.vector(m.vector, f"items[{n}].vector") if has_vector else None
        out.append(
            ItemIn(
                id=m.id,
                vector=vector,
                input=m.input,
                metadata=metadata_dict(m.metadata, f"items[{n}].metadata") if m.metadata else None,
                space=m.vector.space if has_vector else "",
                image=images_convert.image(m.image, f"items[{n}].image") if m.HasField("image") else None,
            )
        )
    return out


def item_message(item: StoredItem, space: str, *, with_vector: bool) -> collections_pb2.Item:
    message = collections_pb2.Item(id=item.id, input=item.input)
    add_metadata(message.metadata, item.metadata)
    if with_vector:
        message.vector.CopyFrom(convert.vector_message(item.vector, space))
    return message


_MODES: dict[int, SearchMode] = {
    retrieval_pb2.SEARCH_MODE_DENSE: SearchMode.DENSE,
    retrieval_pb2.SEARCH_MODE_KEYWORD: SearchMode.KEYWORD,
    retrieval_pb2.SEARCH_MODE_HYBRID: SearchMode.HYBRID,
}
_MODE_MESSAGES: dict[SearchMode, Any] = {v: k for k, v in _MODES.items()}
_METHODS: dict[int, Method] = {
    retrieval_pb2.FUSION_METHOD_RRF: Method.RRF,
    retrieval_pb2.FUSION_METHOD_WEIGHTED: Method.WEIGHTED,
}
_METHOD_MESSAGES: dict[Method, Any] = {v: k for k, v in _METHODS.items()}
_STRATEGIES: dict[int, str] = {
    retrieval_pb2.EXAMPLE_STRATEGY_UNSPECIFIED: Strategy.AVERAGE_VECTOR,
    retrieval_pb2.EXAMPLE_STRATEGY_AVERAGE_VECTOR: Strategy.AVERAGE_VECTOR,
    retrieval_pb2.EXAMPLE_STRATEGY_BEST_SCORE: Strategy.BEST_SCORE,
}
_STRATEGY_MESSAGES: dict[str, Any] = {
    Strategy.AVERAGE_VECTOR: retrieval_pb2.EXAMPLE_STRATEGY_AVERAGE_VECTOR,
    Strategy.BEST_SCORE: retrieval_pb2.EXAMPLE_STRATEGY_BEST_SCORE,
}
_NOTICES: dict[Notice, Any] = {
    Notice.KEYWORD_QUERY_EMPTY: retrieval_pb2.SEARCH_NOTICE_KEYWORD_QUERY_EMPTY,
    Notice.NO_KEYWORD_MATCH: retrieval_pb2.SEARCH_NOTICE_NO_KEYWORD_MATCH,
    Notice.GROUPS_INCOMPLETE: retrieval_pb2.SEARCH_NOTICE_GROUPS_INCOMPLETE,
    Notice.RERANK_MISSING_TEXT: retrieval_pb2.SEARCH_NOTICE_RERANK_MISSING_TEXT,
}


def _choice(value: int, table: dict[int, Any], enum: Any, field: str, what: str) -> Any:
    """An enum value from a request, None for UNSPECIFIED; INVALID_VALUE naming the choices for an unknown one."""
    if value == 0:
        return None
    if value not in table:
        choices = [enum.Name(v) for v in table]
        raise EmbedsvcError(
            Reason.INVALID_VALUE,
            f"unknown {what} {value}; choose one of {', '.join(choices)}",
            field=field,
            metadata={"choices": ",".join(choices)},
        )
    return table[value]


def mode(value: int, field: str = "options.mode") -> SearchMode | None:
    chosen: SearchMode | None = _choice(value, _MODES, retrieval_pb2.SearchMode, field, "search mode")
    return chosen


def fusion(message: retrieval_pb2.Fusion, field: str = "options.fusion") -> Fusion:
    method = _choice(message.method, _METHODS, retrieval_pb2.FusionMethod, field + ".method", "fusion method")
    for name in ("rrf_k", "candidates"):
        if getattr(message, name) < 0:
            raise invalid(f"{field}.{name}", f"{name} must not be negative")
    weight = message.dense_weight if message.HasField("dense_weight") else None
    return Fusion(method, message.rrf_k, weight, message.candidates)


def fusion_message(value: Fusion) -> retrieval_pb2.Fusion:
    message = retrieval_pb2.Fusion(
        method=_METHOD_MESSAGES[value.method] if value.method is not None else retrieval_pb2.FUSION_METHOD_UNSPECIFIED,
        rrf_k=value.rrf_k,
        candidates=value.candidates,
    )
    if value.dense_weight is not None:
        message.dense_weight = value.dense_weight
    return message


def keyword_spec(request: collections_pb2.CreateCollectionRequest) -> KeywordSpec | None:
    if not request.HasField("keyword"):
        return None
    spec = request.keyword
    return KeywordSpec(spec.language, spec.enabled if spec.HasField("enabled") else None)


def search_defaults(request: collections_pb2.CreateCollectionRequest) -> SearchDefaults | None:
    if not request.HasField("search_defaults"):
        return None
    message = request.search_defaults
    chosen = fusion(message.fusion, "search_defaults.fusion")
    return SearchDefaults(
        mode(message.mode, "search_defaults.mode") or SearchMode.DENSE,
        chosen.method.value if chosen.method is not None else "",
        chosen.rrf_k,
        chosen.dense_weight,
        chosen.candidates,
    )


def defaults_message(config: CollectionConfig) -> retrieval_pb2.SearchDefaults:
    """A collection's search defaults, every field filled in (the service's where the collection has none)."""
    resolved = collection_fusion(config).resolved(1, 2**31 - 1)
    if not config.search_defaults.candidates:
        resolved = dataclasses.replace(resolved, candidates=DEFAULT_CANDIDATES)
    return retrieval_pb2.SearchDefaults(
        mode=_MODE_MESSAGES[config.search_defaults.mode], fusion=fusion_message(resolved)
    )


def search_options(message: collections_pb2.SearchOptions) -> SearchOptions:
    rerank = None
    if message.HasField("rerank"):
        if message.rerank.candidates < 0:
            raise invalid("options.rerank.candidates", "candidates must not be negative")
        rerank = RerankIn(message.rerank.model, message.rerank.candidates, message.rerank.raw_scores)
    return SearchOptions(
        k=message.k,
        filter=message.filter,
        ef_search=message.ef_search,
        nprobe=message.nprobe,
        exact=message.exact,
        include_metadata=message.include_metadata if message.HasField("include_metadata") else True,
        include_vectors=message.include_vectors,
        mode=mode(message.mode),
        fusion=fusion(message.fusion) if message.HasField("fusion") else Fusion(),
        rerank=rerank,
        group_by=message.group_by,
        group_size=message.group_size,
        diversity=message.diversity if message.HasField("diversity") else None,
        diversity_candidates=message.diversity_candidates,
        keep_inputs=message.keep_inputs,
        include_explanations=message.include_explanations if message.HasField("include_explanations") else True,
        target_recall=message.target_recall,
        oversample=message.oversample,
    )


def query(message: collections_pb2.Query, field: str, limits: Limits) -> QueryIn:
    which = message.WhichOneof("query")
    text = message.keyword_text
    if which == "vector":
        vector = convert.vector(message.vector, field + ".vector")
        return QueryIn(vector=vector, space=message.vector.space, keyword_text=text)
    if which == "item_id":
        return QueryIn(item_id=message.item_id, keyword_text=text)
    if which == "input":
        return QueryIn(input=message.input, keyword_text=text)
    if which == "expression":
        (expression,) = convert.expressions([message.expression], limits, field=field + ".expression")
        return QueryIn(expression=expression, keyword_text=text)
    if which == "image":
        return QueryIn(image=images_convert.image(message.image, field + ".image"), keyword_text=text)
    if which == "examples":
        examples = message.examples
        strategy = _choice(
            examples.strategy, _STRATEGIES, retrieval_pb2.ExampleStrategy, field + ".examples.strategy", "strategy"
        )
        return QueryIn(
            examples=ExamplesIn(list(examples.positive_ids), list(examples.negative_ids), strategy or "average_vector"),
            keyword_text=text,
        )
    return QueryIn(keyword_text=text)


def batch_queries(request: collections_pb2.BatchSearchRequest, limits: Limits) -> list[QueryIn] | PackedQueries:
    """The queries of a BatchSearch: Query messages, or the packed float32 matrix (reshaped by the collection)."""
    if request.packed_queries:
        if request.queries:
            raise invalid("packed_queries", "set packed_queries or queries, not both")
        return PackedQueries(convert.packed_floats(request.packed_queries, "packed_queries"))
    return [query(q, f"queries[{i}]", limits) for i, q in enumerate(request.queries)]


def packed_search_options(message: collections_pb2.SearchOptions) -> SearchOptions:
    """Options of a BatchSearch with packed_results: packed hits carry no metadata, so none is read."""
    if message.HasField("include_metadata") and message.include_metadata:
        raise invalid(
            "options.include_metadata",
            "packed results carry no metadata: leave include_metadata unset or false and fetch it with GetItems",
        )
    if message.group_by:
        raise invalid("options.group_by", "packed results carry no groups: leave group_by empty, or ask for messages")
    return dataclasses.replace(search_options(message), include_metadata=False)


def packed_hits(
    lists: Sequence[Sequence[Hit]], space: str, *, with_vectors: bool, dimension: int
) -> collections_pb2.PackedHits:
    """Every query's hits in columns: counts, ids, float64 scores, and with_vectors the hits' vectors."""
    flat = [hit for hits in lists for hit in hits]
    message = collections_pb2.PackedHits(
        counts=[len(hits) for hits in lists],
        ids=[hit.id for hit in flat],
        scores=np.fromiter((hit.score for hit in flat), dtype="<f8", count=len(flat)).tobytes(),
    )
    if with_vectors:
        rows = np.stack([np.asarray(hit.vector) for hit in flat]) if flat else np.empty((0, dimension), np.float32)
        message.vectors.CopyFrom(convert.packed_vectors_message(rows, space))
    return message


def add_hits(
    container: Any,
    hits: Sequence[Hit],
    space: str,
    explanations: Sequence[Explanation] | None = None,
    own: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Append SearchHit messages to a repeated field (`add` in place is about twice as fast as building lists)."""
    for n, hit in enumerate(hits):
        message = container.add(id=hit.id, score=hit.score, input=hit.input)
        if hit.metadata:
            add_metadata(message.metadata, hit.metadata)
        if hit.vector is not None:
            message.vector.CopyFrom(convert.vector_message(np.asarray(hit.vector), space))
        if own and hit.id in own:
            message.is_input = True
        if explanations is not None:
            message.explanation.CopyFrom(explanation_message(explanations[n]))


def explanation_message(e: Explanation) -> retrieval_pb2.HitExplanation:
    message = retrieval_pb2.HitExplanation(
        dense_rank=e.dense_rank,
        keyword_rank=e.keyword_rank,
        dense_contribution=e.dense_contribution,
        keyword_contribution=e.keyword_contribution,
        candidate_rank=e.candidate_rank,
    )
    for name in ("dense_score", "keyword_score", "fused_score", "rerank_score", "best_positive", "best_negative"):
        value = getattr(e, name)
        if value is not None:
            setattr(message, name, value)
    if e.mmr_score is not None:
        message.mmr_score = e.mmr_score
    return message


def add_result(container: Any, result: QueryResult, space: str) -> None:
    """One query's hits (SearchResponse, HitList): `hits`, or with group_by `groups`."""
    if result.groups is None:
        add_hits(container.hits, result.hits, space, result.explanations, result.own)
        return
    for group in result.groups:
        message = container.groups.add()
        if group.has_value:
            _set_value(message.value, group.value)
        members = [result.hits[i] for i in group.members]
        explanations = [result.explanations[i] for i in group.members] if result.explanations is not None else None
        add_hits(message.hits, members, space, explanations, result.own)


def report_message(report: Report) -> retrieval_pb2.RetrievalReport:
    message = retrieval_pb2.RetrievalReport(
        mode=_MODE_MESSAGES[report.mode],
        dense_candidates=report.dense_candidates,
        keyword_candidates=report.keyword_candidates,
        keyword_language=report.keyword_language,
        rerank_model_version=report.rerank_version,
        diversity_candidates=report.diversity_candidates,
        query_prompt_name=report.query_prompt_name,
        notices=[retrieval_pb2.QueryNotice(query=q, notice=_NOTICES[n]) for q, n in report.notices],
    )
    if report.fusion is not None:
        message.fusion.CopyFrom(fusion_message(report.fusion))
    if report.rerank is not None:
        message.rerank.CopyFrom(
            retrieval_pb2.RerankStage(
                model=report.rerank.model, candidates=report.rerank.candidates, raw_scores=report.rerank.raw_scores
            )
        )
    if report.diversity is not None:
        message.diversity = report.diversity
    if report.example_strategy:
        message.example_strategy = _STRATEGY_MESSAGES[report.example_strategy]
    return message
