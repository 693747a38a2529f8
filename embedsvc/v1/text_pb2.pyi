from embedsvc.v1 import common_pb2 as _common_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LongTextMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LONG_TEXT_MODE_UNSPECIFIED: _ClassVar[LongTextMode]
    LONG_TEXT_MODE_TRUNCATE: _ClassVar[LongTextMode]
    LONG_TEXT_MODE_CHUNK: _ClassVar[LongTextMode]
    LONG_TEXT_MODE_REFUSE: _ClassVar[LongTextMode]

class TruncationDirection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRUNCATION_DIRECTION_UNSPECIFIED: _ClassVar[TruncationDirection]
    TRUNCATION_DIRECTION_RIGHT: _ClassVar[TruncationDirection]
    TRUNCATION_DIRECTION_LEFT: _ClassVar[TruncationDirection]

class EmbeddingDtype(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EMBEDDING_DTYPE_UNSPECIFIED: _ClassVar[EmbeddingDtype]
    EMBEDDING_DTYPE_FLOAT32: _ClassVar[EmbeddingDtype]
    EMBEDDING_DTYPE_INT8: _ClassVar[EmbeddingDtype]
    EMBEDDING_DTYPE_UINT8: _ClassVar[EmbeddingDtype]
    EMBEDDING_DTYPE_BINARY: _ClassVar[EmbeddingDtype]
    EMBEDDING_DTYPE_UBINARY: _ClassVar[EmbeddingDtype]
LONG_TEXT_MODE_UNSPECIFIED: LongTextMode
LONG_TEXT_MODE_TRUNCATE: LongTextMode
LONG_TEXT_MODE_CHUNK: LongTextMode
LONG_TEXT_MODE_REFUSE: LongTextMode
TRUNCATION_DIRECTION_UNSPECIFIED: TruncationDirection
TRUNCATION_DIRECTION_RIGHT: TruncationDirection
TRUNCATION_DIRECTION_LEFT: TruncationDirection
EMBEDDING_DTYPE_UNSPECIFIED: EmbeddingDtype
EMBEDDING_DTYPE_FLOAT32: EmbeddingDtype
EMBEDDING_DTYPE_INT8: EmbeddingDtype
EMBEDDING_DTYPE_UINT8: EmbeddingDtype
EMBEDDING_DTYPE_BINARY: EmbeddingDtype
EMBEDDING_DTYPE_UBINARY: EmbeddingDtype

class EmbedTextsRequest(_message.Message):
    __slots__ = ("model", "texts", "normalize", "long_texts", "prompt_name", "dimensions", "dtype", "truncation_direction", "packed_results")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    LONG_TEXTS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_NAME_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_DIRECTION_FIELD_NUMBER: _ClassVar[int]
    PACKED_RESULTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    normalize: bool
    long_texts: LongTextMode
    prompt_name: str
    dimensions: int
    dtype: EmbeddingDtype
    truncation_direction: TruncationDirection
    packed_results: bool
    def __init__(self, model: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ..., normalize: _Optional[bool] = ..., long_texts: _Optional[_Union[LongTextMode, str]] = ..., prompt_name: _Optional[str] = ..., dimensions: _Optional[int] = ..., dtype: _Optional[_Union[EmbeddingDtype, str]] = ..., truncation_direction: _Optional[_Union[TruncationDirection, str]] = ..., packed_results: _Optional[bool] = ...) -> None: ...

class QuantizedVectors(_message.Message):
    __slots__ = ("rows", "dimension", "dtype", "data", "space")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    rows: int
    dimension: int
    dtype: EmbeddingDtype
    data: bytes
    space: str
    def __init__(self, rows: _Optional[int] = ..., dimension: _Optional[int] = ..., dtype: _Optional[_Union[EmbeddingDtype, str]] = ..., data: _Optional[bytes] = ..., space: _Optional[str] = ...) -> None: ...

class EmbedTextsResponse(_message.Message):
    __slots__ = ("vectors", "truncated", "token_counts", "max_seq_length", "provenance", "packed_vectors", "quantized_vectors", "warnings")
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNTS_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    PACKED_VECTORS_FIELD_NUMBER: _ClassVar[int]
    QUANTIZED_VECTORS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    vectors: _containers.RepeatedCompositeFieldContainer[_common_pb2.Vector]
    truncated: _containers.RepeatedScalarFieldContainer[int]
    token_counts: _containers.RepeatedScalarFieldContainer[int]
    max_seq_length: int
    provenance: _common_pb2.Provenance
    packed_vectors: _common_pb2.PackedVectors
    quantized_vectors: QuantizedVectors
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, vectors: _Optional[_Iterable[_Union[_common_pb2.Vector, _Mapping]]] = ..., truncated: _Optional[_Iterable[int]] = ..., token_counts: _Optional[_Iterable[int]] = ..., max_seq_length: _Optional[int] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ..., packed_vectors: _Optional[_Union[_common_pb2.PackedVectors, _Mapping]] = ..., quantized_vectors: _Optional[_Union[QuantizedVectors, _Mapping]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class EmbedTextsStreamRequest(_message.Message):
    __slots__ = ("batch", "sequence")
    BATCH_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    batch: EmbedTextsRequest
    sequence: int
    def __init__(self, batch: _Optional[_Union[EmbedTextsRequest, _Mapping]] = ..., sequence: _Optional[int] = ...) -> None: ...

class EmbedTextsStreamResponse(_message.Message):
    __slots__ = ("batch", "error", "sequence")
    BATCH_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    batch: EmbedTextsResponse
    error: _status_pb2.Status
    sequence: int
    def __init__(self, batch: _Optional[_Union[EmbedTextsResponse, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., sequence: _Optional[int] = ...) -> None: ...

class TokenizeTextsRequest(_message.Message):
    __slots__ = ("model", "texts", "add_special_tokens")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    ADD_SPECIAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    model: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    add_special_tokens: bool
    def __init__(self, model: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ..., add_special_tokens: _Optional[bool] = ...) -> None: ...

class Token(_message.Message):
    __slots__ = ("id", "token", "special", "start", "end")
    ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SPECIAL_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    id: int
    token: str
    special: bool
    start: int
    end: int
    def __init__(self, id: _Optional[int] = ..., token: _Optional[str] = ..., special: _Optional[bool] = ..., start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class TokenizedText(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[Token]
    def __init__(self, tokens: _Optional[_Iterable[_Union[Token, _Mapping]]] = ...) -> None: ...

class TokenizeTextsResponse(_message.Message):
    __slots__ = ("texts", "max_seq_length", "provenance")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedCompositeFieldContainer[TokenizedText]
    max_seq_length: int
    provenance: _common_pb2.Provenance
    def __init__(self, texts: _Optional[_Iterable[_Union[TokenizedText, _Mapping]]] = ..., max_seq_length: _Optional[int] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...

class RerankRequest(_message.Message):
    __slots__ = ("model", "query", "texts", "top_n", "raw_scores", "return_text", "truncate")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    RAW_SCORES_FIELD_NUMBER: _ClassVar[int]
    RETURN_TEXT_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    model: str
    query: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    top_n: int
    raw_scores: bool
    return_text: bool
    truncate: bool
    def __init__(self, model: _Optional[str] = ..., query: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ..., top_n: _Optional[int] = ..., raw_scores: _Optional[bool] = ..., return_text: _Optional[bool] = ..., truncate: _Optional[bool] = ...) -> None: ...

class RerankResult(_message.Message):
    __slots__ = ("index", "score", "text")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    index: int
    score: float
    text: str
    def __init__(self, index: _Optional[int] = ..., score: _Optional[float] = ..., text: _Optional[str] = ...) -> None: ...

class RerankResponse(_message.Message):
    __slots__ = ("results", "truncated", "provenance", "token_counts", "max_seq_length")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNTS_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_LENGTH_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RerankResult]
    truncated: _containers.RepeatedScalarFieldContainer[int]
    provenance: _common_pb2.Provenance
    token_counts: _containers.RepeatedScalarFieldContainer[int]
    max_seq_length: int
    def __init__(self, results: _Optional[_Iterable[_Union[RerankResult, _Mapping]]] = ..., truncated: _Optional[_Iterable[int]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ..., token_counts: _Optional[_Iterable[int]] = ..., max_seq_length: _Optional[int] = ...) -> None: ...
