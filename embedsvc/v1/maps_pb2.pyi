from embedsvc.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClusterMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLUSTER_METHOD_UNSPECIFIED: _ClassVar[ClusterMethod]
    CLUSTER_METHOD_GAUSSIAN_MIXTURE: _ClassVar[ClusterMethod]
    CLUSTER_METHOD_KMEANS: _ClassVar[ClusterMethod]

class CovarianceType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COVARIANCE_TYPE_UNSPECIFIED: _ClassVar[CovarianceType]
    COVARIANCE_TYPE_FULL: _ClassVar[CovarianceType]
    COVARIANCE_TYPE_DIAG: _ClassVar[CovarianceType]
    COVARIANCE_TYPE_SPHERICAL: _ClassVar[CovarianceType]
    COVARIANCE_TYPE_TIED: _ClassVar[CovarianceType]

class PlotStyle(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLOT_STYLE_UNSPECIFIED: _ClassVar[PlotStyle]
    PLOT_STYLE_SCATTER: _ClassVar[PlotStyle]
    PLOT_STYLE_THUMBNAILS: _ClassVar[PlotStyle]
CLUSTER_METHOD_UNSPECIFIED: ClusterMethod
CLUSTER_METHOD_GAUSSIAN_MIXTURE: ClusterMethod
CLUSTER_METHOD_KMEANS: ClusterMethod
COVARIANCE_TYPE_UNSPECIFIED: CovarianceType
COVARIANCE_TYPE_FULL: CovarianceType
COVARIANCE_TYPE_DIAG: CovarianceType
COVARIANCE_TYPE_SPHERICAL: CovarianceType
COVARIANCE_TYPE_TIED: CovarianceType
PLOT_STYLE_UNSPECIFIED: PlotStyle
PLOT_STYLE_SCATTER: PlotStyle
PLOT_STYLE_THUMBNAILS: PlotStyle

class WordPoints(_message.Message):
    __slots__ = ("model", "words", "top_n")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    model: str
    words: _containers.RepeatedScalarFieldContainer[str]
    top_n: int
    def __init__(self, model: _Optional[str] = ..., words: _Optional[_Iterable[str]] = ..., top_n: _Optional[int] = ...) -> None: ...

class TextPoints(_message.Message):
    __slots__ = ("model", "texts")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ...) -> None: ...

class ImagePoints(_message.Message):
    __slots__ = ("model", "images", "labels")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    model: str
    images: _containers.RepeatedCompositeFieldContainer[_common_pb2.ImageInput]
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., images: _Optional[_Iterable[_Union[_common_pb2.ImageInput, _Mapping]]] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...

class CollectionPoints(_message.Message):
    __slots__ = ("collection", "ids")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ...) -> None: ...

class VectorPoints(_message.Message):
    __slots__ = ("vectors", "labels")
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    vectors: _containers.RepeatedCompositeFieldContainer[_common_pb2.Vector]
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, vectors: _Optional[_Iterable[_Union[_common_pb2.Vector, _Mapping]]] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...

class PointSet(_message.Message):
    __slots__ = ("words", "texts", "images", "collection", "vectors", "normalize", "groups")
    WORDS_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    words: WordPoints
    texts: TextPoints
    images: ImagePoints
    collection: CollectionPoints
    vectors: VectorPoints
    normalize: bool
    groups: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, words: _Optional[_Union[WordPoints, _Mapping]] = ..., texts: _Optional[_Union[TextPoints, _Mapping]] = ..., images: _Optional[_Union[ImagePoints, _Mapping]] = ..., collection: _Optional[_Union[CollectionPoints, _Mapping]] = ..., vectors: _Optional[_Union[VectorPoints, _Mapping]] = ..., normalize: _Optional[bool] = ..., groups: _Optional[_Iterable[str]] = ...) -> None: ...

class MapPoint(_message.Message):
    __slots__ = ("label", "coordinates")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    COORDINATES_FIELD_NUMBER: _ClassVar[int]
    label: str
    coordinates: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, label: _Optional[str] = ..., coordinates: _Optional[_Iterable[float]] = ...) -> None: ...

class ProjectRequest(_message.Message):
    __slots__ = ("points", "dimensions", "transform")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    TRANSFORM_FIELD_NUMBER: _ClassVar[int]
    points: PointSet
    dimensions: int
    transform: _containers.RepeatedCompositeFieldContainer[PointSet]
    def __init__(self, points: _Optional[_Union[PointSet, _Mapping]] = ..., dimensions: _Optional[int] = ..., transform: _Optional[_Iterable[_Union[PointSet, _Mapping]]] = ...) -> None: ...

class ProjectedSet(_message.Message):
    __slots__ = ("points",)
    POINTS_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[MapPoint]
    def __init__(self, points: _Optional[_Iterable[_Union[MapPoint, _Mapping]]] = ...) -> None: ...

class ProjectResponse(_message.Message):
    __slots__ = ("points", "transformed", "explained_variance_ratio", "explained_variance", "mean", "components", "space")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    TRANSFORMED_FIELD_NUMBER: _ClassVar[int]
    EXPLAINED_VARIANCE_RATIO_FIELD_NUMBER: _ClassVar[int]
    EXPLAINED_VARIANCE_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[MapPoint]
    transformed: _containers.RepeatedCompositeFieldContainer[ProjectedSet]
    explained_variance_ratio: _containers.RepeatedScalarFieldContainer[float]
    explained_variance: _containers.RepeatedScalarFieldContainer[float]
    mean: _common_pb2.Vector
    components: _containers.RepeatedCompositeFieldContainer[_common_pb2.Vector]
    space: str
    def __init__(self, points: _Optional[_Iterable[_Union[MapPoint, _Mapping]]] = ..., transformed: _Optional[_Iterable[_Union[ProjectedSet, _Mapping]]] = ..., explained_variance_ratio: _Optional[_Iterable[float]] = ..., explained_variance: _Optional[_Iterable[float]] = ..., mean: _Optional[_Union[_common_pb2.Vector, _Mapping]] = ..., components: _Optional[_Iterable[_Union[_common_pb2.Vector, _Mapping]]] = ..., space: _Optional[str] = ...) -> None: ...

class ClusterRequest(_message.Message):
    __slots__ = ("points", "k", "max_k", "method", "covariance", "reduce_to", "seed")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MAX_K_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    COVARIANCE_FIELD_NUMBER: _ClassVar[int]
    REDUCE_TO_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    points: PointSet
    k: int
    max_k: int
    method: ClusterMethod
    covariance: CovarianceType
    reduce_to: int
    seed: int
    def __init__(self, points: _Optional[_Union[PointSet, _Mapping]] = ..., k: _Optional[int] = ..., max_k: _Optional[int] = ..., method: _Optional[_Union[ClusterMethod, str]] = ..., covariance: _Optional[_Union[CovarianceType, str]] = ..., reduce_to: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class BicScore(_message.Message):
    __slots__ = ("k", "bic")
    K_FIELD_NUMBER: _ClassVar[int]
    BIC_FIELD_NUMBER: _ClassVar[int]
    k: int
    bic: float
    def __init__(self, k: _Optional[int] = ..., bic: _Optional[float] = ...) -> None: ...

class Responsibilities(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class ClusterResponse(_message.Message):
    __slots__ = ("k", "assignments", "responsibilities", "means", "weights", "bic", "labels", "mean_log_likelihood", "provenance")
    K_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    RESPONSIBILITIES_FIELD_NUMBER: _ClassVar[int]
    MEANS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    BIC_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MEAN_LOG_LIKELIHOOD_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    k: int
    assignments: _containers.RepeatedScalarFieldContainer[int]
    responsibilities: _containers.RepeatedCompositeFieldContainer[Responsibilities]
    means: _containers.RepeatedCompositeFieldContainer[_common_pb2.Vector]
    weights: _containers.RepeatedScalarFieldContainer[float]
    bic: _containers.RepeatedCompositeFieldContainer[BicScore]
    labels: _containers.RepeatedScalarFieldContainer[str]
    mean_log_likelihood: float
    provenance: _common_pb2.Provenance
    def __init__(self, k: _Optional[int] = ..., assignments: _Optional[_Iterable[int]] = ..., responsibilities: _Optional[_Iterable[_Union[Responsibilities, _Mapping]]] = ..., means: _Optional[_Iterable[_Union[_common_pb2.Vector, _Mapping]]] = ..., weights: _Optional[_Iterable[float]] = ..., bic: _Optional[_Iterable[_Union[BicScore, _Mapping]]] = ..., labels: _Optional[_Iterable[str]] = ..., mean_log_likelihood: _Optional[float] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...

class PlotRequest(_message.Message):
    __slots__ = ("points", "width", "height", "title", "annotate", "style", "by_group", "by_cluster", "by_metadata_field")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    ANNOTATE_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    BY_GROUP_FIELD_NUMBER: _ClassVar[int]
    BY_CLUSTER_FIELD_NUMBER: _ClassVar[int]
    BY_METADATA_FIELD_FIELD_NUMBER: _ClassVar[int]
    points: PointSet
    width: int
    height: int
    title: str
    annotate: bool
    style: PlotStyle
    by_group: ColorByGroup
    by_cluster: ColorByCluster
    by_metadata_field: str
    def __init__(self, points: _Optional[_Union[PointSet, _Mapping]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., title: _Optional[str] = ..., annotate: _Optional[bool] = ..., style: _Optional[_Union[PlotStyle, str]] = ..., by_group: _Optional[_Union[ColorByGroup, _Mapping]] = ..., by_cluster: _Optional[_Union[ColorByCluster, _Mapping]] = ..., by_metadata_field: _Optional[str] = ...) -> None: ...

class ColorByGroup(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ColorByCluster(_message.Message):
    __slots__ = ("k",)
    K_FIELD_NUMBER: _ClassVar[int]
    k: int
    def __init__(self, k: _Optional[int] = ...) -> None: ...

class PlotResponse(_message.Message):
    __slots__ = ("png", "projection")
    PNG_FIELD_NUMBER: _ClassVar[int]
    PROJECTION_FIELD_NUMBER: _ClassVar[int]
    png: bytes
    projection: ProjectResponse
    def __init__(self, png: _Optional[bytes] = ..., projection: _Optional[_Union[ProjectResponse, _Mapping]] = ...) -> None: ...
