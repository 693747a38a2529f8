import datetime

from embedsvc.v1 import arithmetic_pb2 as _arithmetic_pb2
from embedsvc.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InterpolationMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INTERPOLATION_MODE_UNSPECIFIED: _ClassVar[InterpolationMode]
    INTERPOLATION_MODE_LINEAR: _ClassVar[InterpolationMode]
    INTERPOLATION_MODE_SPHERICAL: _ClassVar[InterpolationMode]
INTERPOLATION_MODE_UNSPECIFIED: InterpolationMode
INTERPOLATION_MODE_LINEAR: InterpolationMode
INTERPOLATION_MODE_SPHERICAL: InterpolationMode

class LatentCode(_message.Message):
    __slots__ = ("mean", "log_variance")
    MEAN_FIELD_NUMBER: _ClassVar[int]
    LOG_VARIANCE_FIELD_NUMBER: _ClassVar[int]
    mean: _common_pb2.Vector
    log_variance: _common_pb2.Vector
    def __init__(self, mean: _Optional[_Union[_common_pb2.Vector, _Mapping]] = ..., log_variance: _Optional[_Union[_common_pb2.Vector, _Mapping]] = ...) -> None: ...

class GeneratedImage(_message.Message):
    __slots__ = ("png", "latent")
    PNG_FIELD_NUMBER: _ClassVar[int]
    LATENT_FIELD_NUMBER: _ClassVar[int]
    png: bytes
    latent: _common_pb2.Vector
    def __init__(self, png: _Optional[bytes] = ..., latent: _Optional[_Union[_common_pb2.Vector, _Mapping]] = ...) -> None: ...

class EncodeImagesRequest(_message.Message):
    __slots__ = ("model", "images", "packed_results")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    PACKED_RESULTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    images: _containers.RepeatedCompositeFieldContainer[_common_pb2.ImageInput]
    packed_results: bool
    def __init__(self, model: _Optional[str] = ..., images: _Optional[_Iterable[_Union[_common_pb2.ImageInput, _Mapping]]] = ..., packed_results: _Optional[bool] = ...) -> None: ...

class EncodeImagesResponse(_message.Message):
    __slots__ = ("codes", "provenance", "packed_means", "packed_log_variances")
    CODES_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    PACKED_MEANS_FIELD_NUMBER: _ClassVar[int]
    PACKED_LOG_VARIANCES_FIELD_NUMBER: _ClassVar[int]
    codes: _containers.RepeatedCompositeFieldContainer[LatentCode]
    provenance: _common_pb2.Provenance
    packed_means: _common_pb2.PackedVectors
    packed_log_variances: _common_pb2.PackedVectors
    def __init__(self, codes: _Optional[_Iterable[_Union[LatentCode, _Mapping]]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ..., packed_means: _Optional[_Union[_common_pb2.PackedVectors, _Mapping]] = ..., packed_log_variances: _Optional[_Union[_common_pb2.PackedVectors, _Mapping]] = ...) -> None: ...

class DecodeLatentsRequest(_message.Message):
    __slots__ = ("model", "latents", "expressions", "packed_latents", "packed_results")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LATENTS_FIELD_NUMBER: _ClassVar[int]
    EXPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    PACKED_LATENTS_FIELD_NUMBER: _ClassVar[int]
    PACKED_RESULTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    latents: _containers.RepeatedCompositeFieldContainer[_common_pb2.Vector]
    expressions: _containers.RepeatedCompositeFieldContainer[_arithmetic_pb2.Expression]
    packed_latents: bytes
    packed_results: bool
    def __init__(self, model: _Optional[str] = ..., latents: _Optional[_Iterable[_Union[_common_pb2.Vector, _Mapping]]] = ..., expressions: _Optional[_Iterable[_Union[_arithmetic_pb2.Expression, _Mapping]]] = ..., packed_latents: _Optional[bytes] = ..., packed_results: _Optional[bool] = ...) -> None: ...

class DecodeLatentsResponse(_message.Message):
    __slots__ = ("images", "provenance", "pngs", "packed_latents")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    PNGS_FIELD_NUMBER: _ClassVar[int]
    PACKED_LATENTS_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[GeneratedImage]
    provenance: _common_pb2.Provenance
    pngs: _containers.RepeatedScalarFieldContainer[bytes]
    packed_latents: _common_pb2.PackedVectors
    def __init__(self, images: _Optional[_Iterable[_Union[GeneratedImage, _Mapping]]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ..., pngs: _Optional[_Iterable[bytes]] = ..., packed_latents: _Optional[_Union[_common_pb2.PackedVectors, _Mapping]] = ...) -> None: ...

class SampleRequest(_message.Message):
    __slots__ = ("model", "n", "seed", "temperature")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    model: str
    n: int
    seed: int
    temperature: float
    def __init__(self, model: _Optional[str] = ..., n: _Optional[int] = ..., seed: _Optional[int] = ..., temperature: _Optional[float] = ...) -> None: ...

class SampleResponse(_message.Message):
    __slots__ = ("images", "seed", "provenance")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[GeneratedImage]
    seed: int
    provenance: _common_pb2.Provenance
    def __init__(self, images: _Optional[_Iterable[_Union[GeneratedImage, _Mapping]]] = ..., seed: _Optional[int] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...

class ReconstructRequest(_message.Message):
    __slots__ = ("model", "images")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    model: str
    images: _containers.RepeatedCompositeFieldContainer[_common_pb2.ImageInput]
    def __init__(self, model: _Optional[str] = ..., images: _Optional[_Iterable[_Union[_common_pb2.ImageInput, _Mapping]]] = ...) -> None: ...

class ReconstructResponse(_message.Message):
    __slots__ = ("images", "provenance")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[GeneratedImage]
    provenance: _common_pb2.Provenance
    def __init__(self, images: _Optional[_Iterable[_Union[GeneratedImage, _Mapping]]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...

class LatentPoint(_message.Message):
    __slots__ = ("image", "latent")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    LATENT_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.ImageInput
    latent: _common_pb2.Vector
    def __init__(self, image: _Optional[_Union[_common_pb2.ImageInput, _Mapping]] = ..., latent: _Optional[_Union[_common_pb2.Vector, _Mapping]] = ...) -> None: ...

class InterpolateRequest(_message.Message):
    __slots__ = ("model", "start", "end", "steps", "mode")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    model: str
    start: LatentPoint
    end: LatentPoint
    steps: int
    mode: InterpolationMode
    def __init__(self, model: _Optional[str] = ..., start: _Optional[_Union[LatentPoint, _Mapping]] = ..., end: _Optional[_Union[LatentPoint, _Mapping]] = ..., steps: _Optional[int] = ..., mode: _Optional[_Union[InterpolationMode, str]] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("index", "position", "image", "provenance")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    index: int
    position: float
    image: GeneratedImage
    provenance: _common_pb2.Provenance
    def __init__(self, index: _Optional[int] = ..., position: _Optional[float] = ..., image: _Optional[_Union[GeneratedImage, _Mapping]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...

class InterpolateResponse(_message.Message):
    __slots__ = ("frame",)
    FRAME_FIELD_NUMBER: _ClassVar[int]
    frame: Frame
    def __init__(self, frame: _Optional[_Union[Frame, _Mapping]] = ...) -> None: ...

class TraverseResponse(_message.Message):
    __slots__ = ("frame",)
    FRAME_FIELD_NUMBER: _ClassVar[int]
    frame: Frame
    def __init__(self, frame: _Optional[_Union[Frame, _Mapping]] = ...) -> None: ...

class ExampleSet(_message.Message):
    __slots__ = ("label", "images", "latents")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    LATENTS_FIELD_NUMBER: _ClassVar[int]
    label: str
    images: _containers.RepeatedCompositeFieldContainer[_common_pb2.ImageInput]
    latents: _containers.RepeatedCompositeFieldContainer[_common_pb2.Vector]
    def __init__(self, label: _Optional[str] = ..., images: _Optional[_Iterable[_Union[_common_pb2.ImageInput, _Mapping]]] = ..., latents: _Optional[_Iterable[_Union[_common_pb2.Vector, _Mapping]]] = ...) -> None: ...

class Direction(_message.Message):
    __slots__ = ("name", "model", "model_version", "vector", "from_label", "to_label", "from_count", "to_count", "norm", "description", "create_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    FROM_LABEL_FIELD_NUMBER: _ClassVar[int]
    TO_LABEL_FIELD_NUMBER: _ClassVar[int]
    FROM_COUNT_FIELD_NUMBER: _ClassVar[int]
    TO_COUNT_FIELD_NUMBER: _ClassVar[int]
    NORM_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    model_version: str
    vector: _common_pb2.Vector
    from_label: str
    to_label: str
    from_count: int
    to_count: int
    norm: float
    description: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., vector: _Optional[_Union[_common_pb2.Vector, _Mapping]] = ..., from_label: _Optional[str] = ..., to_label: _Optional[str] = ..., from_count: _Optional[int] = ..., to_count: _Optional[int] = ..., norm: _Optional[float] = ..., description: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateDirectionRequest(_message.Message):
    __slots__ = ("model", "name", "from_examples", "to_examples", "description", "replace")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FROM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    TO_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    model: str
    name: str
    from_examples: ExampleSet
    to_examples: ExampleSet
    description: str
    replace: bool
    def __init__(self, model: _Optional[str] = ..., name: _Optional[str] = ..., from_examples: _Optional[_Union[ExampleSet, _Mapping]] = ..., to_examples: _Optional[_Union[ExampleSet, _Mapping]] = ..., description: _Optional[str] = ..., replace: _Optional[bool] = ...) -> None: ...

class CreateDirectionResponse(_message.Message):
    __slots__ = ("direction",)
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    direction: Direction
    def __init__(self, direction: _Optional[_Union[Direction, _Mapping]] = ...) -> None: ...

class ListDirectionsRequest(_message.Message):
    __slots__ = ("model", "page_size", "page_token", "include_vectors")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    model: str
    page_size: int
    page_token: str
    include_vectors: bool
    def __init__(self, model: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., include_vectors: _Optional[bool] = ...) -> None: ...

class ListDirectionsResponse(_message.Message):
    __slots__ = ("directions", "next_page_token")
    DIRECTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    directions: _containers.RepeatedCompositeFieldContainer[Direction]
    next_page_token: str
    def __init__(self, directions: _Optional[_Iterable[_Union[Direction, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteDirectionRequest(_message.Message):
    __slots__ = ("model", "name")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    model: str
    name: str
    def __init__(self, model: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class DeleteDirectionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TraverseRequest(_message.Message):
    __slots__ = ("model", "start", "direction", "strengths")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    STRENGTHS_FIELD_NUMBER: _ClassVar[int]
    model: str
    start: LatentPoint
    direction: str
    strengths: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, model: _Optional[str] = ..., start: _Optional[_Union[LatentPoint, _Mapping]] = ..., direction: _Optional[str] = ..., strengths: _Optional[_Iterable[float]] = ...) -> None: ...

class AnomalyScoreRequest(_message.Message):
    __slots__ = ("model", "images", "samples", "seed")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    model: str
    images: _containers.RepeatedCompositeFieldContainer[_common_pb2.ImageInput]
    samples: int
    seed: int
    def __init__(self, model: _Optional[str] = ..., images: _Optional[_Iterable[_Union[_common_pb2.ImageInput, _Mapping]]] = ..., samples: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class ImageScore(_message.Message):
    __slots__ = ("negative_elbo", "reconstruction_nll", "kl")
    NEGATIVE_ELBO_FIELD_NUMBER: _ClassVar[int]
    RECONSTRUCTION_NLL_FIELD_NUMBER: _ClassVar[int]
    KL_FIELD_NUMBER: _ClassVar[int]
    negative_elbo: float
    reconstruction_nll: float
    kl: float
    def __init__(self, negative_elbo: _Optional[float] = ..., reconstruction_nll: _Optional[float] = ..., kl: _Optional[float] = ...) -> None: ...

class AnomalyScoreResponse(_message.Message):
    __slots__ = ("scores", "provenance")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedCompositeFieldContainer[ImageScore]
    provenance: _common_pb2.Provenance
    def __init__(self, scores: _Optional[_Iterable[_Union[ImageScore, _Mapping]]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...

class InpaintRequest(_message.Message):
    __slots__ = ("model", "image", "mask", "steps", "seed")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    model: str
    image: _common_pb2.ImageInput
    mask: _common_pb2.ImageInput
    steps: int
    seed: int
    def __init__(self, model: _Optional[str] = ..., image: _Optional[_Union[_common_pb2.ImageInput, _Mapping]] = ..., mask: _Optional[_Union[_common_pb2.ImageInput, _Mapping]] = ..., steps: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class InpaintResponse(_message.Message):
    __slots__ = ("image", "provenance")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    image: GeneratedImage
    provenance: _common_pb2.Provenance
    def __init__(self, image: _Optional[_Union[GeneratedImage, _Mapping]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...
