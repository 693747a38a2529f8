from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_KIND_UNSPECIFIED: _ClassVar[ModelKind]
    MODEL_KIND_WORD_VECTORS: _ClassVar[ModelKind]
    MODEL_KIND_TEXT_ENCODER: _ClassVar[ModelKind]
    MODEL_KIND_VAE: _ClassVar[ModelKind]
    MODEL_KIND_IMAGE_ENCODER: _ClassVar[ModelKind]
    MODEL_KIND_CROSS_ENCODER: _ClassVar[ModelKind]
    MODEL_KIND_GAN: _ClassVar[ModelKind]
    MODEL_KIND_AUTOENCODER: _ClassVar[ModelKind]

class LatentOperation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LATENT_OPERATION_UNSPECIFIED: _ClassVar[LatentOperation]
    LATENT_OPERATION_DECODE: _ClassVar[LatentOperation]
    LATENT_OPERATION_ENCODE: _ClassVar[LatentOperation]
    LATENT_OPERATION_SAMPLE: _ClassVar[LatentOperation]
    LATENT_OPERATION_ANOMALY_SCORE: _ClassVar[LatentOperation]
    LATENT_OPERATION_INPAINT: _ClassVar[LatentOperation]

class ModelState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_STATE_UNSPECIFIED: _ClassVar[ModelState]
    MODEL_STATE_LOADING: _ClassVar[ModelState]
    MODEL_STATE_READY: _ClassVar[ModelState]
    MODEL_STATE_FAILED: _ClassVar[ModelState]
    MODEL_STATE_UNLOADED: _ClassVar[ModelState]
MODEL_KIND_UNSPECIFIED: ModelKind
MODEL_KIND_WORD_VECTORS: ModelKind
MODEL_KIND_TEXT_ENCODER: ModelKind
MODEL_KIND_VAE: ModelKind
MODEL_KIND_IMAGE_ENCODER: ModelKind
MODEL_KIND_CROSS_ENCODER: ModelKind
MODEL_KIND_GAN: ModelKind
MODEL_KIND_AUTOENCODER: ModelKind
LATENT_OPERATION_UNSPECIFIED: LatentOperation
LATENT_OPERATION_DECODE: LatentOperation
LATENT_OPERATION_ENCODE: LatentOperation
LATENT_OPERATION_SAMPLE: LatentOperation
LATENT_OPERATION_ANOMALY_SCORE: LatentOperation
LATENT_OPERATION_INPAINT: LatentOperation
MODEL_STATE_UNSPECIFIED: ModelState
MODEL_STATE_LOADING: ModelState
MODEL_STATE_READY: ModelState
MODEL_STATE_FAILED: ModelState
MODEL_STATE_UNLOADED: ModelState

class ModelInfo(_message.Message):
    __slots__ = ("name", "kind", "dimension", "vocabulary_size", "device", "state", "version", "format", "source", "has_subwords", "description", "space", "error", "embeds_texts", "max_seq_length", "image_size", "image_channels", "memory_bytes", "requires", "engine", "precision", "quality", "prompts", "default_prompt_name", "reranks", "matryoshka_dimensions", "any_dimensions", "latent_operations")
    class PromptsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    VOCABULARY_SIZE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    HAS_SUBWORDS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EMBEDS_TEXTS_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_LENGTH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PROMPT_NAME_FIELD_NUMBER: _ClassVar[int]
    RERANKS_FIELD_NUMBER: _ClassVar[int]
    MATRYOSHKA_DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    ANY_DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    LATENT_OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: ModelKind
    dimension: int
    vocabulary_size: int
    device: str
    state: ModelState
    version: str
    format: str
    source: str
    has_subwords: bool
    description: str
    space: str
    error: str
    embeds_texts: bool
    max_seq_length: int
    image_size: int
    image_channels: int
    memory_bytes: int
    requires: _containers.RepeatedScalarFieldContainer[str]
    engine: str
    precision: str
    quality: Quality
    prompts: _containers.ScalarMap[str, str]
    default_prompt_name: str
    reranks: bool
    matryoshka_dimensions: _containers.RepeatedScalarFieldContainer[int]
    any_dimensions: bool
    latent_operations: _containers.RepeatedScalarFieldContainer[LatentOperation]
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[ModelKind, str]] = ..., dimension: _Optional[int] = ..., vocabulary_size: _Optional[int] = ..., device: _Optional[str] = ..., state: _Optional[_Union[ModelState, str]] = ..., version: _Optional[str] = ..., format: _Optional[str] = ..., source: _Optional[str] = ..., has_subwords: _Optional[bool] = ..., description: _Optional[str] = ..., space: _Optional[str] = ..., error: _Optional[str] = ..., embeds_texts: _Optional[bool] = ..., max_seq_length: _Optional[int] = ..., image_size: _Optional[int] = ..., image_channels: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., requires: _Optional[_Iterable[str]] = ..., engine: _Optional[str] = ..., precision: _Optional[str] = ..., quality: _Optional[_Union[Quality, _Mapping]] = ..., prompts: _Optional[_Mapping[str, str]] = ..., default_prompt_name: _Optional[str] = ..., reranks: _Optional[bool] = ..., matryoshka_dimensions: _Optional[_Iterable[int]] = ..., any_dimensions: _Optional[bool] = ..., latent_operations: _Optional[_Iterable[_Union[LatentOperation, str]]] = ...) -> None: ...

class Quality(_message.Message):
    __slots__ = ("mean_cosine", "min_cosine", "top10_agreement", "sentences")
    MEAN_COSINE_FIELD_NUMBER: _ClassVar[int]
    MIN_COSINE_FIELD_NUMBER: _ClassVar[int]
    TOP10_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    SENTENCES_FIELD_NUMBER: _ClassVar[int]
    mean_cosine: float
    min_cosine: float
    top10_agreement: float
    sentences: int
    def __init__(self, mean_cosine: _Optional[float] = ..., min_cosine: _Optional[float] = ..., top10_agreement: _Optional[float] = ..., sentences: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "next_page_token")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    next_page_token: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("name", "config")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    name: str
    config: str
    def __init__(self, name: _Optional[str] = ..., config: _Optional[str] = ...) -> None: ...

class LoadModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UnloadModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...

class ReloadModelRequest(_message.Message):
    __slots__ = ("name", "config")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    name: str
    config: str
    def __init__(self, name: _Optional[str] = ..., config: _Optional[str] = ...) -> None: ...

class ReloadModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...
