from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_MODE_UNSPECIFIED: _ClassVar[SearchMode]
    SEARCH_MODE_DENSE: _ClassVar[SearchMode]
    SEARCH_MODE_KEYWORD: _ClassVar[SearchMode]
    SEARCH_MODE_HYBRID: _ClassVar[SearchMode]

class FusionMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FUSION_METHOD_UNSPECIFIED: _ClassVar[FusionMethod]
    FUSION_METHOD_RRF: _ClassVar[FusionMethod]
    FUSION_METHOD_WEIGHTED: _ClassVar[FusionMethod]

class ExampleStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXAMPLE_STRATEGY_UNSPECIFIED: _ClassVar[ExampleStrategy]
    EXAMPLE_STRATEGY_AVERAGE_VECTOR: _ClassVar[ExampleStrategy]
    EXAMPLE_STRATEGY_BEST_SCORE: _ClassVar[ExampleStrategy]

class SearchNotice(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_NOTICE_UNSPECIFIED: _ClassVar[SearchNotice]
    SEARCH_NOTICE_KEYWORD_QUERY_EMPTY: _ClassVar[SearchNotice]
    SEARCH_NOTICE_NO_KEYWORD_MATCH: _ClassVar[SearchNotice]
    SEARCH_NOTICE_GROUPS_INCOMPLETE: _ClassVar[SearchNotice]
    SEARCH_NOTICE_RERANK_MISSING_TEXT: _ClassVar[SearchNotice]
SEARCH_MODE_UNSPECIFIED: SearchMode
SEARCH_MODE_DENSE: SearchMode
SEARCH_MODE_KEYWORD: SearchMode
SEARCH_MODE_HYBRID: SearchMode
FUSION_METHOD_UNSPECIFIED: FusionMethod
FUSION_METHOD_RRF: FusionMethod
FUSION_METHOD_WEIGHTED: FusionMethod
EXAMPLE_STRATEGY_UNSPECIFIED: ExampleStrategy
EXAMPLE_STRATEGY_AVERAGE_VECTOR: ExampleStrategy
EXAMPLE_STRATEGY_BEST_SCORE: ExampleStrategy
SEARCH_NOTICE_UNSPECIFIED: SearchNotice
SEARCH_NOTICE_KEYWORD_QUERY_EMPTY: SearchNotice
SEARCH_NOTICE_NO_KEYWORD_MATCH: SearchNotice
SEARCH_NOTICE_GROUPS_INCOMPLETE: SearchNotice
SEARCH_NOTICE_RERANK_MISSING_TEXT: SearchNotice

class Fusion(_message.Message):
    __slots__ = ("method", "rrf_k", "dense_weight", "candidates")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    RRF_K_FIELD_NUMBER: _ClassVar[int]
    DENSE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    method: FusionMethod
    rrf_k: int
    dense_weight: float
    candidates: int
    def __init__(self, method: _Optional[_Union[FusionMethod, str]] = ..., rrf_k: _Optional[int] = ..., dense_weight: _Optional[float] = ..., candidates: _Optional[int] = ...) -> None: ...

class SearchDefaults(_message.Message):
    __slots__ = ("mode", "fusion")
    MODE_FIELD_NUMBER: _ClassVar[int]
    FUSION_FIELD_NUMBER: _ClassVar[int]
    mode: SearchMode
    fusion: Fusion
    def __init__(self, mode: _Optional[_Union[SearchMode, str]] = ..., fusion: _Optional[_Union[Fusion, _Mapping]] = ...) -> None: ...

class KeywordIndexSpec(_message.Message):
    __slots__ = ("language", "enabled")
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    language: str
    enabled: bool
    def __init__(self, language: _Optional[str] = ..., enabled: _Optional[bool] = ...) -> None: ...

class CollectionPrompts(_message.Message):
    __slots__ = ("document_prompt_name", "query_prompt_name")
    DOCUMENT_PROMPT_NAME_FIELD_NUMBER: _ClassVar[int]
    QUERY_PROMPT_NAME_FIELD_NUMBER: _ClassVar[int]
    document_prompt_name: str
    query_prompt_name: str
    def __init__(self, document_prompt_name: _Optional[str] = ..., query_prompt_name: _Optional[str] = ...) -> None: ...

class RerankStage(_message.Message):
    __slots__ = ("model", "candidates", "raw_scores")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    RAW_SCORES_FIELD_NUMBER: _ClassVar[int]
    model: str
    candidates: int
    raw_scores: bool
    def __init__(self, model: _Optional[str] = ..., candidates: _Optional[int] = ..., raw_scores: _Optional[bool] = ...) -> None: ...

class Examples(_message.Message):
    __slots__ = ("positive_ids", "negative_ids", "strategy")
    POSITIVE_IDS_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_IDS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    positive_ids: _containers.RepeatedScalarFieldContainer[str]
    negative_ids: _containers.RepeatedScalarFieldContainer[str]
    strategy: ExampleStrategy
    def __init__(self, positive_ids: _Optional[_Iterable[str]] = ..., negative_ids: _Optional[_Iterable[str]] = ..., strategy: _Optional[_Union[ExampleStrategy, str]] = ...) -> None: ...

class QueryNotice(_message.Message):
    __slots__ = ("query", "notice")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    query: int
    notice: SearchNotice
    def __init__(self, query: _Optional[int] = ..., notice: _Optional[_Union[SearchNotice, str]] = ...) -> None: ...

class RetrievalReport(_message.Message):
    __slots__ = ("mode", "fusion", "dense_candidates", "keyword_candidates", "keyword_language", "rerank", "rerank_model_version", "diversity", "diversity_candidates", "example_strategy", "query_prompt_name", "notices")
    MODE_FIELD_NUMBER: _ClassVar[int]
    FUSION_FIELD_NUMBER: _ClassVar[int]
    DENSE_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    RERANK_FIELD_NUMBER: _ClassVar[int]
    RERANK_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    QUERY_PROMPT_NAME_FIELD_NUMBER: _ClassVar[int]
    NOTICES_FIELD_NUMBER: _ClassVar[int]
    mode: SearchMode
    fusion: Fusion
    dense_candidates: int
    keyword_candidates: int
    keyword_language: str
    rerank: RerankStage
    rerank_model_version: str
    diversity: float
    diversity_candidates: int
    example_strategy: ExampleStrategy
    query_prompt_name: str
    notices: _containers.RepeatedCompositeFieldContainer[QueryNotice]
    def __init__(self, mode: _Optional[_Union[SearchMode, str]] = ..., fusion: _Optional[_Union[Fusion, _Mapping]] = ..., dense_candidates: _Optional[int] = ..., keyword_candidates: _Optional[int] = ..., keyword_language: _Optional[str] = ..., rerank: _Optional[_Union[RerankStage, _Mapping]] = ..., rerank_model_version: _Optional[str] = ..., diversity: _Optional[float] = ..., diversity_candidates: _Optional[int] = ..., example_strategy: _Optional[_Union[ExampleStrategy, str]] = ..., query_prompt_name: _Optional[str] = ..., notices: _Optional[_Iterable[_Union[QueryNotice, _Mapping]]] = ...) -> None: ...

class HitExplanation(_message.Message):
    __slots__ = ("dense_rank", "dense_score", "keyword_rank", "keyword_score", "dense_contribution", "keyword_contribution", "fused_score", "rerank_score", "best_positive", "best_negative", "mmr_score", "candidate_rank")
    DENSE_RANK_FIELD_NUMBER: _ClassVar[int]
    DENSE_SCORE_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_RANK_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_SCORE_FIELD_NUMBER: _ClassVar[int]
    DENSE_CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    FUSED_SCORE_FIELD_NUMBER: _ClassVar[int]
    RERANK_SCORE_FIELD_NUMBER: _ClassVar[int]
    BEST_POSITIVE_FIELD_NUMBER: _ClassVar[int]
    BEST_NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    MMR_SCORE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_RANK_FIELD_NUMBER: _ClassVar[int]
    dense_rank: int
    dense_score: float
    keyword_rank: int
    keyword_score: float
    dense_contribution: float
    keyword_contribution: float
    fused_score: float
    rerank_score: float
    best_positive: float
    best_negative: float
    mmr_score: float
    candidate_rank: int
    def __init__(self, dense_rank: _Optional[int] = ..., dense_score: _Optional[float] = ..., keyword_rank: _Optional[int] = ..., keyword_score: _Optional[float] = ..., dense_contribution: _Optional[float] = ..., keyword_contribution: _Optional[float] = ..., fused_score: _Optional[float] = ..., rerank_score: _Optional[float] = ..., best_positive: _Optional[float] = ..., best_negative: _Optional[float] = ..., mmr_score: _Optional[float] = ..., candidate_rank: _Optional[int] = ...) -> None: ...
