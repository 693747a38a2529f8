from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    ERROR_REASON_MISSING_FIELD: _ClassVar[ErrorReason]
    ERROR_REASON_INVALID_VALUE: _ClassVar[ErrorReason]
    ERROR_REASON_LIMIT_EXCEEDED: _ClassVar[ErrorReason]
    ERROR_REASON_NOT_FINITE: _ClassVar[ErrorReason]
    ERROR_REASON_OUT_OF_VOCABULARY: _ClassVar[ErrorReason]
    ERROR_REASON_INVALID_EXPRESSION: _ClassVar[ErrorReason]
    ERROR_REASON_TERM_KIND_NOT_SUPPORTED: _ClassVar[ErrorReason]
    ERROR_REASON_DIMENSION_MISMATCH: _ClassVar[ErrorReason]
    ERROR_REASON_SPACE_MISMATCH: _ClassVar[ErrorReason]
    ERROR_REASON_INVALID_ANALOGY_FILE: _ClassVar[ErrorReason]
    ERROR_REASON_MODEL_KIND_MISMATCH: _ClassVar[ErrorReason]
    ERROR_REASON_MODEL_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_MODEL_NOT_READY: _ClassVar[ErrorReason]
    ERROR_REASON_INTERNAL: _ClassVar[ErrorReason]
ERROR_REASON_UNSPECIFIED: ErrorReason
ERROR_REASON_MISSING_FIELD: ErrorReason
ERROR_REASON_INVALID_VALUE: ErrorReason
ERROR_REASON_LIMIT_EXCEEDED: ErrorReason
ERROR_REASON_NOT_FINITE: ErrorReason
ERROR_REASON_OUT_OF_VOCABULARY: ErrorReason
ERROR_REASON_INVALID_EXPRESSION: ErrorReason
ERROR_REASON_TERM_KIND_NOT_SUPPORTED: ErrorReason
ERROR_REASON_DIMENSION_MISMATCH: ErrorReason
ERROR_REASON_SPACE_MISMATCH: ErrorReason
ERROR_REASON_INVALID_ANALOGY_FILE: ErrorReason
ERROR_REASON_MODEL_KIND_MISMATCH: ErrorReason
ERROR_REASON_MODEL_NOT_FOUND: ErrorReason
ERROR_REASON_MODEL_NOT_READY: ErrorReason
ERROR_REASON_INTERNAL: ErrorReason
