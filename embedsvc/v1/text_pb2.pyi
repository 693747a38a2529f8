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
LONG_TEXT_MODE_UNSPECIFIED: LongTextMode
LONG_TEXT_MODE_TRUNCATE: LongTextMode
LONG_TEXT_MODE_CHUNK: LongTextMode

class EmbedTextsRequest(_message.Message):
    __slots__ = ("model", "texts", "normalize", "long_texts", "prompt_name")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    LONG_TEXTS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_NAME_FIELD_NUMBER: _ClassVar[int]
    model: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    normalize: bool
    long_texts: LongTextMode
    prompt_name: str
    def __init__(self, model: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ..., normalize: _Optional[bool] = ..., long_texts: _Optional[_Union[LongTextMode, str]] = ..., prompt_name: _Optional[str] = ...) -> None: ...

class EmbedTextsResponse(_message.Message):
    __slots__ = ("vectors", "truncated", "token_counts", "max_seq_length", "provenance")
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNTS_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    vectors: _containers.RepeatedCompositeFieldContainer[_common_pb2.Vector]
    truncated: _containers.RepeatedScalarFieldContainer[int]
    token_counts: _containers.RepeatedScalarFieldContainer[int]
    max_seq_length: int
    provenance: _common_pb2.Provenance
    def __init__(self, vectors: _Optional[_Iterable[_Union[_common_pb2.Vector, _Mapping]]] = ..., truncated: _Optional[_Iterable[int]] = ..., token_counts: _Optional[_Iterable[int]] = ..., max_seq_length: _Optional[int] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("results", "truncated", "provenance")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RerankResult]
    truncated: _containers.RepeatedScalarFieldContainer[int]
    provenance: _common_pb2.Provenance
    def __init__(self, results: _Optional[_Iterable[_Union[RerankResult, _Mapping]]] = ..., truncated: _Optional[_Iterable[int]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...
