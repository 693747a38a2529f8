from embedsvc.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Method(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METHOD_UNSPECIFIED: _ClassVar[Method]
    METHOD_COSADD: _ClassVar[Method]
    METHOD_COSMUL: _ClassVar[Method]
METHOD_UNSPECIFIED: Method
METHOD_COSADD: Method
METHOD_COSMUL: Method

class ItemRef(_message.Message):
    __slots__ = ("collection", "id")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    collection: str
    id: str
    def __init__(self, collection: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class Term(_message.Message):
    __slots__ = ("weight", "word", "vector", "text", "image", "item", "direction")
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    WORD_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    weight: float
    word: str
    vector: _common_pb2.Vector
    text: str
    image: _common_pb2.ImageInput
    item: ItemRef
    direction: str
    def __init__(self, weight: _Optional[float] = ..., word: _Optional[str] = ..., vector: _Optional[_Union[_common_pb2.Vector, _Mapping]] = ..., text: _Optional[str] = ..., image: _Optional[_Union[_common_pb2.ImageInput, _Mapping]] = ..., item: _Optional[_Union[ItemRef, _Mapping]] = ..., direction: _Optional[str] = ...) -> None: ...

class Expression(_message.Message):
    __slots__ = ("text", "terms")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    text: str
    terms: _containers.RepeatedCompositeFieldContainer[Term]
    def __init__(self, text: _Optional[str] = ..., terms: _Optional[_Iterable[_Union[Term, _Mapping]]] = ...) -> None: ...

class ResolvedTerm(_message.Message):
    __slots__ = ("weight", "word", "kind", "in_vocabulary")
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    WORD_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    IN_VOCABULARY_FIELD_NUMBER: _ClassVar[int]
    weight: float
    word: str
    kind: str
    in_vocabulary: bool
    def __init__(self, weight: _Optional[float] = ..., word: _Optional[str] = ..., kind: _Optional[str] = ..., in_vocabulary: _Optional[bool] = ...) -> None: ...

class ArithmeticHit(_message.Message):
    __slots__ = ("word", "score", "is_input", "contributions")
    WORD_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    IS_INPUT_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    word: str
    score: float
    is_input: bool
    contributions: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, word: _Optional[str] = ..., score: _Optional[float] = ..., is_input: _Optional[bool] = ..., contributions: _Optional[_Iterable[float]] = ...) -> None: ...

class ExpressionResult(_message.Message):
    __slots__ = ("terms", "hits", "query_vector")
    TERMS_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    QUERY_VECTOR_FIELD_NUMBER: _ClassVar[int]
    terms: _containers.RepeatedCompositeFieldContainer[ResolvedTerm]
    hits: _containers.RepeatedCompositeFieldContainer[ArithmeticHit]
    query_vector: _common_pb2.Vector
    def __init__(self, terms: _Optional[_Iterable[_Union[ResolvedTerm, _Mapping]]] = ..., hits: _Optional[_Iterable[_Union[ArithmeticHit, _Mapping]]] = ..., query_vector: _Optional[_Union[_common_pb2.Vector, _Mapping]] = ...) -> None: ...

class ArithmeticRequest(_message.Message):
    __slots__ = ("model", "expressions", "method", "top_n", "restrict_vocab", "keep_inputs", "return_query_vector", "return_contributions")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EXPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    RESTRICT_VOCAB_FIELD_NUMBER: _ClassVar[int]
    KEEP_INPUTS_FIELD_NUMBER: _ClassVar[int]
    RETURN_QUERY_VECTOR_FIELD_NUMBER: _ClassVar[int]
    RETURN_CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    model: str
    expressions: _containers.RepeatedCompositeFieldContainer[Expression]
    method: Method
    top_n: int
    restrict_vocab: int
    keep_inputs: bool
    return_query_vector: bool
    return_contributions: bool
    def __init__(self, model: _Optional[str] = ..., expressions: _Optional[_Iterable[_Union[Expression, _Mapping]]] = ..., method: _Optional[_Union[Method, str]] = ..., top_n: _Optional[int] = ..., restrict_vocab: _Optional[int] = ..., keep_inputs: _Optional[bool] = ..., return_query_vector: _Optional[bool] = ..., return_contributions: _Optional[bool] = ...) -> None: ...

class ArithmeticResponse(_message.Message):
    __slots__ = ("results", "provenance")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ExpressionResult]
    provenance: _common_pb2.Provenance
    def __init__(self, results: _Optional[_Iterable[_Union[ExpressionResult, _Mapping]]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...

class EvaluateAnalogiesRequest(_message.Message):
    __slots__ = ("model", "analogies", "restrict_vocab", "case_sensitive", "dummy4unknown", "method")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ANALOGIES_FIELD_NUMBER: _ClassVar[int]
    RESTRICT_VOCAB_FIELD_NUMBER: _ClassVar[int]
    CASE_SENSITIVE_FIELD_NUMBER: _ClassVar[int]
    DUMMY4UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    model: str
    analogies: bytes
    restrict_vocab: int
    case_sensitive: bool
    dummy4unknown: bool
    method: Method
    def __init__(self, model: _Optional[str] = ..., analogies: _Optional[bytes] = ..., restrict_vocab: _Optional[int] = ..., case_sensitive: _Optional[bool] = ..., dummy4unknown: _Optional[bool] = ..., method: _Optional[_Union[Method, str]] = ...) -> None: ...

class SectionScore(_message.Message):
    __slots__ = ("name", "correct", "incorrect", "accuracy")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    INCORRECT_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    name: str
    correct: int
    incorrect: int
    accuracy: float
    def __init__(self, name: _Optional[str] = ..., correct: _Optional[int] = ..., incorrect: _Optional[int] = ..., accuracy: _Optional[float] = ...) -> None: ...

class EvaluateAnalogiesResponse(_message.Message):
    __slots__ = ("sections", "total", "questions", "oov_questions", "skipped_lines", "provenance")
    SECTIONS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    QUESTIONS_FIELD_NUMBER: _ClassVar[int]
    OOV_QUESTIONS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_LINES_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    sections: _containers.RepeatedCompositeFieldContainer[SectionScore]
    total: SectionScore
    questions: int
    oov_questions: int
    skipped_lines: int
    provenance: _common_pb2.Provenance
    def __init__(self, sections: _Optional[_Iterable[_Union[SectionScore, _Mapping]]] = ..., total: _Optional[_Union[SectionScore, _Mapping]] = ..., questions: _Optional[int] = ..., oov_questions: _Optional[int] = ..., skipped_lines: _Optional[int] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...
