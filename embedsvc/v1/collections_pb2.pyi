import datetime

from embedsvc.v1 import arithmetic_pb2 as _arithmetic_pb2
from embedsvc.v1 import common_pb2 as _common_pb2
from embedsvc.v1 import operations_pb2 as _operations_pb2
from embedsvc.v1 import retrieval_pb2 as _retrieval_pb2
from embedsvc.v1 import text_pb2 as _text_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Metric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METRIC_UNSPECIFIED: _ClassVar[Metric]
    METRIC_COSINE: _ClassVar[Metric]
    METRIC_L2: _ClassVar[Metric]
    METRIC_INNER_PRODUCT: _ClassVar[Metric]

class IndexKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INDEX_KIND_UNSPECIFIED: _ClassVar[IndexKind]
    INDEX_KIND_FLAT: _ClassVar[IndexKind]
    INDEX_KIND_HNSW: _ClassVar[IndexKind]
    INDEX_KIND_IVF_FLAT: _ClassVar[IndexKind]
    INDEX_KIND_IVF_PQ: _ClassVar[IndexKind]

class Quantization(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUANTIZATION_UNSPECIFIED: _ClassVar[Quantization]
    QUANTIZATION_NONE: _ClassVar[Quantization]
    QUANTIZATION_INT8: _ClassVar[Quantization]
    QUANTIZATION_RABITQ: _ClassVar[Quantization]

class FieldType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FIELD_TYPE_UNSPECIFIED: _ClassVar[FieldType]
    FIELD_TYPE_STRING: _ClassVar[FieldType]
    FIELD_TYPE_INTEGER: _ClassVar[FieldType]
    FIELD_TYPE_TIMESTAMP: _ClassVar[FieldType]

class CollectionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COLLECTION_STATE_UNSPECIFIED: _ClassVar[CollectionState]
    COLLECTION_STATE_RECOVERING: _ClassVar[CollectionState]
    COLLECTION_STATE_READY: _ClassVar[CollectionState]
    COLLECTION_STATE_DATA_LOSS: _ClassVar[CollectionState]
    COLLECTION_STATE_REBUILDING: _ClassVar[CollectionState]

class Backend(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BACKEND_UNSPECIFIED: _ClassVar[Backend]
    BACKEND_FAISS: _ClassVar[Backend]
    BACKEND_MILVUS: _ClassVar[Backend]
METRIC_UNSPECIFIED: Metric
METRIC_COSINE: Metric
METRIC_L2: Metric
METRIC_INNER_PRODUCT: Metric
INDEX_KIND_UNSPECIFIED: IndexKind
INDEX_KIND_FLAT: IndexKind
INDEX_KIND_HNSW: IndexKind
INDEX_KIND_IVF_FLAT: IndexKind
INDEX_KIND_IVF_PQ: IndexKind
QUANTIZATION_UNSPECIFIED: Quantization
QUANTIZATION_NONE: Quantization
QUANTIZATION_INT8: Quantization
QUANTIZATION_RABITQ: Quantization
FIELD_TYPE_UNSPECIFIED: FieldType
FIELD_TYPE_STRING: FieldType
FIELD_TYPE_INTEGER: FieldType
FIELD_TYPE_TIMESTAMP: FieldType
COLLECTION_STATE_UNSPECIFIED: CollectionState
COLLECTION_STATE_RECOVERING: CollectionState
COLLECTION_STATE_READY: CollectionState
COLLECTION_STATE_DATA_LOSS: CollectionState
COLLECTION_STATE_REBUILDING: CollectionState
BACKEND_UNSPECIFIED: Backend
BACKEND_FAISS: Backend
BACKEND_MILVUS: Backend

class IndexSpec(_message.Message):
    __slots__ = ("kind", "m", "ef_construction", "ef_search", "nlist", "nprobe", "pq_m", "pq_bits", "quantization", "rabitq_bits", "oversample", "target_recall", "mmap")
    KIND_FIELD_NUMBER: _ClassVar[int]
    M_FIELD_NUMBER: _ClassVar[int]
    EF_CONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    EF_SEARCH_FIELD_NUMBER: _ClassVar[int]
    NLIST_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    PQ_M_FIELD_NUMBER: _ClassVar[int]
    PQ_BITS_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    RABITQ_BITS_FIELD_NUMBER: _ClassVar[int]
    OVERSAMPLE_FIELD_NUMBER: _ClassVar[int]
    TARGET_RECALL_FIELD_NUMBER: _ClassVar[int]
    MMAP_FIELD_NUMBER: _ClassVar[int]
    kind: IndexKind
    m: int
    ef_construction: int
    ef_search: int
    nlist: int
    nprobe: int
    pq_m: int
    pq_bits: int
    quantization: Quantization
    rabitq_bits: int
    oversample: int
    target_recall: float
    mmap: bool
    def __init__(self, kind: _Optional[_Union[IndexKind, str]] = ..., m: _Optional[int] = ..., ef_construction: _Optional[int] = ..., ef_search: _Optional[int] = ..., nlist: _Optional[int] = ..., nprobe: _Optional[int] = ..., pq_m: _Optional[int] = ..., pq_bits: _Optional[int] = ..., quantization: _Optional[_Union[Quantization, str]] = ..., rabitq_bits: _Optional[int] = ..., oversample: _Optional[int] = ..., target_recall: _Optional[float] = ..., mmap: _Optional[bool] = ...) -> None: ...

class IndexedField(_message.Message):
    __slots__ = ("name", "type")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: FieldType
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[FieldType, str]] = ...) -> None: ...

class RecallCalibration(_message.Message):
    __slots__ = ("knob", "points", "count", "queries", "k")
    KNOB_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    knob: str
    points: _containers.RepeatedCompositeFieldContainer[RecallPoint]
    count: int
    queries: int
    k: int
    def __init__(self, knob: _Optional[str] = ..., points: _Optional[_Iterable[_Union[RecallPoint, _Mapping]]] = ..., count: _Optional[int] = ..., queries: _Optional[int] = ..., k: _Optional[int] = ...) -> None: ...

class RecallPoint(_message.Message):
    __slots__ = ("value", "oversample", "recall")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    OVERSAMPLE_FIELD_NUMBER: _ClassVar[int]
    RECALL_FIELD_NUMBER: _ClassVar[int]
    value: int
    oversample: int
    recall: float
    def __init__(self, value: _Optional[int] = ..., oversample: _Optional[int] = ..., recall: _Optional[float] = ...) -> None: ...

class CollectionInfo(_message.Message):
    __slots__ = ("name", "dimension", "metric", "index", "count", "trained", "model", "model_version", "space", "disk_bytes", "memory_bytes", "state", "error", "tombstones", "create_time", "aliases", "checkpoint_error", "checkpoint_failures", "backend", "keyword", "search_defaults", "prompts", "query_space", "indexed_fields", "mapped_bytes", "calibration", "shape", "training")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TRAINED_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TOMBSTONES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ERROR_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FAILURES_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_FIELD_NUMBER: _ClassVar[int]
    SEARCH_DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    QUERY_SPACE_FIELD_NUMBER: _ClassVar[int]
    INDEXED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    MAPPED_BYTES_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    name: str
    dimension: int
    metric: Metric
    index: IndexSpec
    count: int
    trained: bool
    model: str
    model_version: str
    space: str
    disk_bytes: int
    memory_bytes: int
    state: CollectionState
    error: str
    tombstones: int
    create_time: _timestamp_pb2.Timestamp
    aliases: _containers.RepeatedScalarFieldContainer[str]
    checkpoint_error: str
    checkpoint_failures: int
    backend: Backend
    keyword: _retrieval_pb2.KeywordIndexSpec
    search_defaults: _retrieval_pb2.SearchDefaults
    prompts: _retrieval_pb2.CollectionPrompts
    query_space: str
    indexed_fields: _containers.RepeatedCompositeFieldContainer[IndexedField]
    mapped_bytes: int
    calibration: RecallCalibration
    shape: VectorShape
    training: IndexTraining
    def __init__(self, name: _Optional[str] = ..., dimension: _Optional[int] = ..., metric: _Optional[_Union[Metric, str]] = ..., index: _Optional[_Union[IndexSpec, _Mapping]] = ..., count: _Optional[int] = ..., trained: _Optional[bool] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., space: _Optional[str] = ..., disk_bytes: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., state: _Optional[_Union[CollectionState, str]] = ..., error: _Optional[str] = ..., tombstones: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., aliases: _Optional[_Iterable[str]] = ..., checkpoint_error: _Optional[str] = ..., checkpoint_failures: _Optional[int] = ..., backend: _Optional[_Union[Backend, str]] = ..., keyword: _Optional[_Union[_retrieval_pb2.KeywordIndexSpec, _Mapping]] = ..., search_defaults: _Optional[_Union[_retrieval_pb2.SearchDefaults, _Mapping]] = ..., prompts: _Optional[_Union[_retrieval_pb2.CollectionPrompts, _Mapping]] = ..., query_space: _Optional[str] = ..., indexed_fields: _Optional[_Iterable[_Union[IndexedField, _Mapping]]] = ..., mapped_bytes: _Optional[int] = ..., calibration: _Optional[_Union[RecallCalibration, _Mapping]] = ..., shape: _Optional[_Union[VectorShape, _Mapping]] = ..., training: _Optional[_Union[IndexTraining, _Mapping]] = ...) -> None: ...

class IndexTraining(_message.Message):
    __slots__ = ("count", "sample", "retrain_at")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    RETRAIN_AT_FIELD_NUMBER: _ClassVar[int]
    count: int
    sample: int
    retrain_at: int
    def __init__(self, count: _Optional[int] = ..., sample: _Optional[int] = ..., retrain_at: _Optional[int] = ...) -> None: ...

class VectorShape(_message.Message):
    __slots__ = ("dimensions", "dtype", "calibration")
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    dimensions: int
    dtype: _text_pb2.EmbeddingDtype
    calibration: str
    def __init__(self, dimensions: _Optional[int] = ..., dtype: _Optional[_Union[_text_pb2.EmbeddingDtype, str]] = ..., calibration: _Optional[str] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("id", "vector", "input", "image", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.MetadataValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.MetadataValue, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    id: str
    vector: _common_pb2.Vector
    input: str
    image: _common_pb2.ImageInput
    metadata: _containers.MessageMap[str, _common_pb2.MetadataValue]
    def __init__(self, id: _Optional[str] = ..., vector: _Optional[_Union[_common_pb2.Vector, _Mapping]] = ..., input: _Optional[str] = ..., image: _Optional[_Union[_common_pb2.ImageInput, _Mapping]] = ..., metadata: _Optional[_Mapping[str, _common_pb2.MetadataValue]] = ...) -> None: ...

class CreateCollectionRequest(_message.Message):
    __slots__ = ("name", "dimension", "metric", "index", "model", "backend", "keyword", "search_defaults", "prompts", "indexed_fields", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_FIELD_NUMBER: _ClassVar[int]
    SEARCH_DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    INDEXED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dimension: int
    metric: Metric
    index: IndexSpec
    model: str
    backend: Backend
    keyword: _retrieval_pb2.KeywordIndexSpec
    search_defaults: _retrieval_pb2.SearchDefaults
    prompts: _retrieval_pb2.CollectionPrompts
    indexed_fields: _containers.RepeatedCompositeFieldContainer[IndexedField]
    shape: VectorShape
    def __init__(self, name: _Optional[str] = ..., dimension: _Optional[int] = ..., metric: _Optional[_Union[Metric, str]] = ..., index: _Optional[_Union[IndexSpec, _Mapping]] = ..., model: _Optional[str] = ..., backend: _Optional[_Union[Backend, str]] = ..., keyword: _Optional[_Union[_retrieval_pb2.KeywordIndexSpec, _Mapping]] = ..., search_defaults: _Optional[_Union[_retrieval_pb2.SearchDefaults, _Mapping]] = ..., prompts: _Optional[_Union[_retrieval_pb2.CollectionPrompts, _Mapping]] = ..., indexed_fields: _Optional[_Iterable[_Union[IndexedField, _Mapping]]] = ..., shape: _Optional[_Union[VectorShape, _Mapping]] = ...) -> None: ...

class CreateCollectionResponse(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: CollectionInfo
    def __init__(self, collection: _Optional[_Union[CollectionInfo, _Mapping]] = ...) -> None: ...

class GetCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetCollectionResponse(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: CollectionInfo
    def __init__(self, collection: _Optional[_Union[CollectionInfo, _Mapping]] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections", "next_page_token")
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[CollectionInfo]
    next_page_token: str
    def __init__(self, collections: _Optional[_Iterable[_Union[CollectionInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteCollectionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("collection", "items", "packed_vectors")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    PACKED_VECTORS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    items: _containers.RepeatedCompositeFieldContainer[Item]
    packed_vectors: bytes
    def __init__(self, collection: _Optional[str] = ..., items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., packed_vectors: _Optional[bytes] = ...) -> None: ...

class UpsertResponse(_message.Message):
    __slots__ = ("upserted", "count")
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    upserted: int
    count: int
    def __init__(self, upserted: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class UpsertStreamRequest(_message.Message):
    __slots__ = ("collection", "items", "packed_vectors", "sequence")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    PACKED_VECTORS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    items: _containers.RepeatedCompositeFieldContainer[Item]
    packed_vectors: bytes
    sequence: int
    def __init__(self, collection: _Optional[str] = ..., items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., packed_vectors: _Optional[bytes] = ..., sequence: _Optional[int] = ...) -> None: ...

class UpsertStreamResponse(_message.Message):
    __slots__ = ("sequence", "upserted", "count", "stream_upserted")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    STREAM_UPSERTED_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    upserted: int
    count: int
    stream_upserted: int
    def __init__(self, sequence: _Optional[int] = ..., upserted: _Optional[int] = ..., count: _Optional[int] = ..., stream_upserted: _Optional[int] = ...) -> None: ...

class DeleteItemsRequest(_message.Message):
    __slots__ = ("collection", "ids")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteItemsResponse(_message.Message):
    __slots__ = ("deleted", "missing")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    missing: int
    def __init__(self, deleted: _Optional[int] = ..., missing: _Optional[int] = ...) -> None: ...

class GetItemsRequest(_message.Message):
    __slots__ = ("collection", "ids", "include_vectors")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    include_vectors: bool
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., include_vectors: _Optional[bool] = ...) -> None: ...

class GetItemsResponse(_message.Message):
    __slots__ = ("items", "missing_ids")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MISSING_IDS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    missing_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., missing_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Query(_message.Message):
    __slots__ = ("vector", "item_id", "input", "expression", "image", "examples", "keyword_text")
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_TEXT_FIELD_NUMBER: _ClassVar[int]
    vector: _common_pb2.Vector
    item_id: str
    input: str
    expression: _arithmetic_pb2.Expression
    image: _common_pb2.ImageInput
    examples: _retrieval_pb2.Examples
    keyword_text: str
    def __init__(self, vector: _Optional[_Union[_common_pb2.Vector, _Mapping]] = ..., item_id: _Optional[str] = ..., input: _Optional[str] = ..., expression: _Optional[_Union[_arithmetic_pb2.Expression, _Mapping]] = ..., image: _Optional[_Union[_common_pb2.ImageInput, _Mapping]] = ..., examples: _Optional[_Union[_retrieval_pb2.Examples, _Mapping]] = ..., keyword_text: _Optional[str] = ...) -> None: ...

class SearchOptions(_message.Message):
    __slots__ = ("k", "filter", "ef_search", "nprobe", "exact", "include_vectors", "include_metadata", "mode", "fusion", "rerank", "group_by", "group_size", "diversity", "diversity_candidates", "keep_inputs", "include_explanations", "target_recall", "oversample")
    K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    EF_SEARCH_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_METADATA_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FUSION_FIELD_NUMBER: _ClassVar[int]
    RERANK_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    KEEP_INPUTS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_EXPLANATIONS_FIELD_NUMBER: _ClassVar[int]
    TARGET_RECALL_FIELD_NUMBER: _ClassVar[int]
    OVERSAMPLE_FIELD_NUMBER: _ClassVar[int]
    k: int
    filter: str
    ef_search: int
    nprobe: int
    exact: bool
    include_vectors: bool
    include_metadata: bool
    mode: _retrieval_pb2.SearchMode
    fusion: _retrieval_pb2.Fusion
    rerank: _retrieval_pb2.RerankStage
    group_by: str
    group_size: int
    diversity: float
    diversity_candidates: int
    keep_inputs: bool
    include_explanations: bool
    target_recall: float
    oversample: int
    def __init__(self, k: _Optional[int] = ..., filter: _Optional[str] = ..., ef_search: _Optional[int] = ..., nprobe: _Optional[int] = ..., exact: _Optional[bool] = ..., include_vectors: _Optional[bool] = ..., include_metadata: _Optional[bool] = ..., mode: _Optional[_Union[_retrieval_pb2.SearchMode, str]] = ..., fusion: _Optional[_Union[_retrieval_pb2.Fusion, _Mapping]] = ..., rerank: _Optional[_Union[_retrieval_pb2.RerankStage, _Mapping]] = ..., group_by: _Optional[str] = ..., group_size: _Optional[int] = ..., diversity: _Optional[float] = ..., diversity_candidates: _Optional[int] = ..., keep_inputs: _Optional[bool] = ..., include_explanations: _Optional[bool] = ..., target_recall: _Optional[float] = ..., oversample: _Optional[int] = ...) -> None: ...

class SearchHit(_message.Message):
    __slots__ = ("id", "score", "vector", "input", "metadata", "is_input", "explanation")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.MetadataValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.MetadataValue, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    IS_INPUT_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    vector: _common_pb2.Vector
    input: str
    metadata: _containers.MessageMap[str, _common_pb2.MetadataValue]
    is_input: bool
    explanation: _retrieval_pb2.HitExplanation
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ..., vector: _Optional[_Union[_common_pb2.Vector, _Mapping]] = ..., input: _Optional[str] = ..., metadata: _Optional[_Mapping[str, _common_pb2.MetadataValue]] = ..., is_input: _Optional[bool] = ..., explanation: _Optional[_Union[_retrieval_pb2.HitExplanation, _Mapping]] = ...) -> None: ...

class HitGroup(_message.Message):
    __slots__ = ("value", "hits")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    value: _common_pb2.MetadataValue
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    def __init__(self, value: _Optional[_Union[_common_pb2.MetadataValue, _Mapping]] = ..., hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("collection", "query", "options")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    query: Query
    options: SearchOptions
    def __init__(self, collection: _Optional[str] = ..., query: _Optional[_Union[Query, _Mapping]] = ..., options: _Optional[_Union[SearchOptions, _Mapping]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "provenance", "retrieval", "groups")
    HITS_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    provenance: _common_pb2.Provenance
    retrieval: _retrieval_pb2.RetrievalReport
    groups: _containers.RepeatedCompositeFieldContainer[HitGroup]
    def __init__(self, hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ..., retrieval: _Optional[_Union[_retrieval_pb2.RetrievalReport, _Mapping]] = ..., groups: _Optional[_Iterable[_Union[HitGroup, _Mapping]]] = ...) -> None: ...

class BatchSearchRequest(_message.Message):
    __slots__ = ("collection", "queries", "options", "packed_queries", "packed_results")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    PACKED_QUERIES_FIELD_NUMBER: _ClassVar[int]
    PACKED_RESULTS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    queries: _containers.RepeatedCompositeFieldContainer[Query]
    options: SearchOptions
    packed_queries: bytes
    packed_results: bool
    def __init__(self, collection: _Optional[str] = ..., queries: _Optional[_Iterable[_Union[Query, _Mapping]]] = ..., options: _Optional[_Union[SearchOptions, _Mapping]] = ..., packed_queries: _Optional[bytes] = ..., packed_results: _Optional[bool] = ...) -> None: ...

class PackedHits(_message.Message):
    __slots__ = ("counts", "ids", "scores", "vectors")
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    counts: _containers.RepeatedScalarFieldContainer[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    scores: bytes
    vectors: _common_pb2.PackedVectors
    def __init__(self, counts: _Optional[_Iterable[int]] = ..., ids: _Optional[_Iterable[str]] = ..., scores: _Optional[bytes] = ..., vectors: _Optional[_Union[_common_pb2.PackedVectors, _Mapping]] = ...) -> None: ...

class HitList(_message.Message):
    __slots__ = ("hits", "groups")
    HITS_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    groups: _containers.RepeatedCompositeFieldContainer[HitGroup]
    def __init__(self, hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ..., groups: _Optional[_Iterable[_Union[HitGroup, _Mapping]]] = ...) -> None: ...

class BatchSearchResponse(_message.Message):
    __slots__ = ("results", "provenance", "packed", "retrieval")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[HitList]
    provenance: _common_pb2.Provenance
    packed: PackedHits
    retrieval: _retrieval_pb2.RetrievalReport
    def __init__(self, results: _Optional[_Iterable[_Union[HitList, _Mapping]]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ..., packed: _Optional[_Union[PackedHits, _Mapping]] = ..., retrieval: _Optional[_Union[_retrieval_pb2.RetrievalReport, _Mapping]] = ...) -> None: ...

class RebuildRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ReembedRequest(_message.Message):
    __slots__ = ("collection", "model", "target_name", "drop_unembeddable")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TARGET_NAME_FIELD_NUMBER: _ClassVar[int]
    DROP_UNEMBEDDABLE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    model: str
    target_name: str
    drop_unembeddable: bool
    def __init__(self, collection: _Optional[str] = ..., model: _Optional[str] = ..., target_name: _Optional[str] = ..., drop_unembeddable: _Optional[bool] = ...) -> None: ...

class ReembedResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: _operations_pb2.Operation
    def __init__(self, operation: _Optional[_Union[_operations_pb2.Operation, _Mapping]] = ...) -> None: ...

class ReembedResult(_message.Message):
    __slots__ = ("collection", "source", "switched_aliases", "reembedded", "dropped", "dropped_sample")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SWITCHED_ALIASES_FIELD_NUMBER: _ClassVar[int]
    REEMBEDDED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    collection: CollectionInfo
    source: str
    switched_aliases: _containers.RepeatedScalarFieldContainer[str]
    reembedded: int
    dropped: int
    dropped_sample: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[_Union[CollectionInfo, _Mapping]] = ..., source: _Optional[str] = ..., switched_aliases: _Optional[_Iterable[str]] = ..., reembedded: _Optional[int] = ..., dropped: _Optional[int] = ..., dropped_sample: _Optional[_Iterable[str]] = ...) -> None: ...

class RebuildResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: _operations_pb2.Operation
    def __init__(self, operation: _Optional[_Union[_operations_pb2.Operation, _Mapping]] = ...) -> None: ...

class ExportItemsRequest(_message.Message):
    __slots__ = ("collection", "batch_size", "page_token")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    collection: str
    batch_size: int
    page_token: str
    def __init__(self, collection: _Optional[str] = ..., batch_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ExportItemsResponse(_message.Message):
    __slots__ = ("items", "next_page_token")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    next_page_token: str
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Alias(_message.Message):
    __slots__ = ("alias", "collection", "update_time")
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    alias: str
    collection: str
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, alias: _Optional[str] = ..., collection: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateAliasRequest(_message.Message):
    __slots__ = ("alias", "collection")
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    alias: str
    collection: str
    def __init__(self, alias: _Optional[str] = ..., collection: _Optional[str] = ...) -> None: ...

class CreateAliasResponse(_message.Message):
    __slots__ = ("alias",)
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    alias: Alias
    def __init__(self, alias: _Optional[_Union[Alias, _Mapping]] = ...) -> None: ...

class UpdateAliasRequest(_message.Message):
    __slots__ = ("alias", "collection")
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    alias: str
    collection: str
    def __init__(self, alias: _Optional[str] = ..., collection: _Optional[str] = ...) -> None: ...

class UpdateAliasResponse(_message.Message):
    __slots__ = ("alias", "previous_collection")
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_COLLECTION_FIELD_NUMBER: _ClassVar[int]
    alias: Alias
    previous_collection: str
    def __init__(self, alias: _Optional[_Union[Alias, _Mapping]] = ..., previous_collection: _Optional[str] = ...) -> None: ...

class DeleteAliasRequest(_message.Message):
    __slots__ = ("alias",)
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    alias: str
    def __init__(self, alias: _Optional[str] = ...) -> None: ...

class DeleteAliasResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAliasesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "collection")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    collection: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., collection: _Optional[str] = ...) -> None: ...

class ListAliasesResponse(_message.Message):
    __slots__ = ("aliases", "next_page_token")
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    aliases: _containers.RepeatedCompositeFieldContainer[Alias]
    next_page_token: str
    def __init__(self, aliases: _Optional[_Iterable[_Union[Alias, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
