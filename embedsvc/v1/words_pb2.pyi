from embedsvc.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EmbedWordsRequest(_message.Message):
    __slots__ = ("model", "words", "normalize")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    model: str
    words: _containers.RepeatedScalarFieldContainer[str]
    normalize: bool
    def __init__(self, model: _Optional[str] = ..., words: _Optional[_Iterable[str]] = ..., normalize: _Optional[bool] = ...) -> None: ...

class EmbedWordsResponse(_message.Message):
    __slots__ = ("vectors", "in_vocabulary", "provenance")
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    IN_VOCABULARY_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    vectors: _containers.RepeatedCompositeFieldContainer[_common_pb2.Vector]
    in_vocabulary: _containers.RepeatedScalarFieldContainer[bool]
    provenance: _common_pb2.Provenance
    def __init__(self, vectors: _Optional[_Iterable[_Union[_common_pb2.Vector, _Mapping]]] = ..., in_vocabulary: _Optional[_Iterable[bool]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...

class ScoredWord(_message.Message):
    __slots__ = ("word", "score")
    WORD_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    word: str
    score: float
    def __init__(self, word: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class NearestWordsRequest(_message.Message):
    __slots__ = ("model", "words", "top_n", "restrict_vocab")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    RESTRICT_VOCAB_FIELD_NUMBER: _ClassVar[int]
    model: str
    words: _containers.RepeatedScalarFieldContainer[str]
    top_n: int
    restrict_vocab: int
    def __init__(self, model: _Optional[str] = ..., words: _Optional[_Iterable[str]] = ..., top_n: _Optional[int] = ..., restrict_vocab: _Optional[int] = ...) -> None: ...

class NeighbourList(_message.Message):
    __slots__ = ("word", "neighbours")
    WORD_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOURS_FIELD_NUMBER: _ClassVar[int]
    word: str
    neighbours: _containers.RepeatedCompositeFieldContainer[ScoredWord]
    def __init__(self, word: _Optional[str] = ..., neighbours: _Optional[_Iterable[_Union[ScoredWord, _Mapping]]] = ...) -> None: ...

class NearestWordsResponse(_message.Message):
    __slots__ = ("results", "provenance")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[NeighbourList]
    provenance: _common_pb2.Provenance
    def __init__(self, results: _Optional[_Iterable[_Union[NeighbourList, _Mapping]]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...

class WordPair(_message.Message):
    __slots__ = ("first", "second")
    FIRST_FIELD_NUMBER: _ClassVar[int]
    SECOND_FIELD_NUMBER: _ClassVar[int]
    first: str
    second: str
    def __init__(self, first: _Optional[str] = ..., second: _Optional[str] = ...) -> None: ...

class SimilarityRequest(_message.Message):
    __slots__ = ("model", "pairs")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    model: str
    pairs: _containers.RepeatedCompositeFieldContainer[WordPair]
    def __init__(self, model: _Optional[str] = ..., pairs: _Optional[_Iterable[_Union[WordPair, _Mapping]]] = ...) -> None: ...

class SimilarityResponse(_message.Message):
    __slots__ = ("similarities", "provenance")
    SIMILARITIES_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    similarities: _containers.RepeatedScalarFieldContainer[float]
    provenance: _common_pb2.Provenance
    def __init__(self, similarities: _Optional[_Iterable[float]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...

class DoesntMatchRequest(_message.Message):
    __slots__ = ("model", "words")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    model: str
    words: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., words: _Optional[_Iterable[str]] = ...) -> None: ...

class DoesntMatchResponse(_message.Message):
    __slots__ = ("odd_one_out", "ranking", "provenance")
    ODD_ONE_OUT_FIELD_NUMBER: _ClassVar[int]
    RANKING_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    odd_one_out: str
    ranking: _containers.RepeatedCompositeFieldContainer[ScoredWord]
    provenance: _common_pb2.Provenance
    def __init__(self, odd_one_out: _Optional[str] = ..., ranking: _Optional[_Iterable[_Union[ScoredWord, _Mapping]]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...

class ExportWordsRequest(_message.Message):
    __slots__ = ("model", "include_vectors", "normalize", "start", "limit", "batch_size")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    model: str
    include_vectors: bool
    normalize: bool
    start: int
    limit: int
    batch_size: int
    def __init__(self, model: _Optional[str] = ..., include_vectors: _Optional[bool] = ..., normalize: _Optional[bool] = ..., start: _Optional[int] = ..., limit: _Optional[int] = ..., batch_size: _Optional[int] = ...) -> None: ...

class ExportWordsResponse(_message.Message):
    __slots__ = ("start", "words", "vectors", "dimension", "vocabulary_size", "space")
    START_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    VOCABULARY_SIZE_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    start: int
    words: _containers.RepeatedScalarFieldContainer[str]
    vectors: bytes
    dimension: int
    vocabulary_size: int
    space: str
    def __init__(self, start: _Optional[int] = ..., words: _Optional[_Iterable[str]] = ..., vectors: _Optional[bytes] = ..., dimension: _Optional[int] = ..., vocabulary_size: _Optional[int] = ..., space: _Optional[str] = ...) -> None: ...
