import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PixelType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PIXEL_TYPE_UNSPECIFIED: _ClassVar[PixelType]
    PIXEL_TYPE_UINT8: _ClassVar[PixelType]
    PIXEL_TYPE_FLOAT32: _ClassVar[PixelType]
PIXEL_TYPE_UNSPECIFIED: PixelType
PIXEL_TYPE_UINT8: PixelType
PIXEL_TYPE_FLOAT32: PixelType

class Vector(_message.Message):
    __slots__ = ("values", "space")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    space: str
    def __init__(self, values: _Optional[_Iterable[float]] = ..., space: _Optional[str] = ...) -> None: ...

class PackedVectors(_message.Message):
    __slots__ = ("rows", "dimension", "data", "space")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    rows: int
    dimension: int
    data: bytes
    space: str
    def __init__(self, rows: _Optional[int] = ..., dimension: _Optional[int] = ..., data: _Optional[bytes] = ..., space: _Optional[str] = ...) -> None: ...

class Provenance(_message.Message):
    __slots__ = ("model", "model_version", "method", "parameters")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: str
    method: str
    parameters: _containers.ScalarMap[str, str]
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[str] = ..., method: _Optional[str] = ..., parameters: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RawImage(_message.Message):
    __slots__ = ("pixels", "height", "width", "channels", "dtype")
    PIXELS_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    pixels: bytes
    height: int
    width: int
    channels: int
    dtype: PixelType
    def __init__(self, pixels: _Optional[bytes] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., channels: _Optional[int] = ..., dtype: _Optional[_Union[PixelType, str]] = ...) -> None: ...

class ImageInput(_message.Message):
    __slots__ = ("data", "raw")
    DATA_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    raw: RawImage
    def __init__(self, data: _Optional[bytes] = ..., raw: _Optional[_Union[RawImage, _Mapping]] = ...) -> None: ...

class MetadataValue(_message.Message):
    __slots__ = ("string_value", "int_value", "double_value", "bool_value", "list_value", "timestamp_value")
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    LIST_VALUE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_VALUE_FIELD_NUMBER: _ClassVar[int]
    string_value: str
    int_value: int
    double_value: float
    bool_value: bool
    list_value: MetadataList
    timestamp_value: _timestamp_pb2.Timestamp
    def __init__(self, string_value: _Optional[str] = ..., int_value: _Optional[int] = ..., double_value: _Optional[float] = ..., bool_value: _Optional[bool] = ..., list_value: _Optional[_Union[MetadataList, _Mapping]] = ..., timestamp_value: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class MetadataList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[MetadataValue]
    def __init__(self, values: _Optional[_Iterable[_Union[MetadataValue, _Mapping]]] = ...) -> None: ...
