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
    __slots__ = ("model", "texts", "normalize", "long_texts")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    LONG_TEXTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    normalize: bool
    long_texts: LongTextMode
    def __init__(self, model: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ..., normalize: _Optional[bool] = ..., long_texts: _Optional[_Union[LongTextMode, str]] = ...) -> None: ...

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
