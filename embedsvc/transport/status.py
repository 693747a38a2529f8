"""THE table from domain errors to gRPC status codes, and the google.rpc.Status each error travels as."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from embedsvc.errors import EmbedsvcError, Reason

# The ErrorInfo domain: the service, not the API version (a reason means the same in every version).
DOMAIN = "embedsvc"

# Why: bad input is INVALID_ARGUMENT (including over-limit requests: AIP-193 keeps RESOURCE_EXHAUSTED for quota and
# overload); a missing model is NOT_FOUND; a model still loading is UNAVAILABLE because retrying soon succeeds.
STATUS_CODES: dict[Reason, grpc.StatusCode] = {
    Reason.MISSING_FIELD: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.INVALID_VALUE: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.LIMIT_EXCEEDED: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.NOT_FINITE: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.OUT_OF_VOCABULARY: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.INVALID_EXPRESSION: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.TERM_KIND_NOT_SUPPORTED: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.DIMENSION_MISMATCH: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.SPACE_MISMATCH: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.INVALID_ANALOGY_FILE: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.MODEL_KIND_MISMATCH: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.MODEL_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Reason.MODEL_NOT_READY: grpc.StatusCode.UNAVAILABLE,
    Reason.INTERNAL: grpc.StatusCode.INTERNAL,
    Reason.COLLECTION_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Reason.COLLECTION_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    Reason.COLLECTION_NOT_READY: grpc.StatusCode.UNAVAILABLE,
    Reason.DATA_LOSS: grpc.StatusCode.DATA_LOSS,
    Reason.INVALID_FILTER: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.INVALID_METADATA: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.DUPLICATE_ID: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.ITEM_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Reason.MODEL_BINDING: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.STORAGE_FULL: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.STORAGE_ERROR: grpc.StatusCode.UNAVAILABLE,
    Reason.INVALID_ENCODING: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    Reason.CANCELLED: grpc.StatusCode.CANCELLED,
    Reason.OVERLOADED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.UNEMBEDDABLE_INPUT: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.INVALID_IMAGE: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.UNSUPPORTED_IMAGE_FORMAT: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.DIRECTION_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Reason.DIRECTION_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    Reason.INVALID_PAGE_TOKEN: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.MODEL_VERSION_CHANGED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.ALIAS_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Reason.ALIAS_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    Reason.COLLECTION_HAS_ALIASES: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.OPERATION_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Reason.INTERRUPTED: grpc.StatusCode.ABORTED,
    Reason.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Reason.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    Reason.RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.STREAM_IDLE: grpc.StatusCode.DEADLINE_EXCEEDED,
    Reason.MODEL_UNLOADED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.MODEL_IN_USE: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.MODEL_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    Reason.OPERATION_NOT_SUPPORTED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.KEYWORD_INDEX_MISSING: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.BACKEND_UNSUPPORTED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.SNAPSHOT_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Reason.INPUTS_NOT_STORED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.SNAPSHOT_ELSEWHERE: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.DIMENSIONS_NOT_SUPPORTED: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.COLLECTION_SWITCHING: grpc.StatusCode.UNAVAILABLE,
}

# Reasons a caller should retry after a pause, and the pause (seconds) sent as google.rpc.RetryInfo.
RETRY_AFTER: dict[Reason, float] = {
    Reason.MODEL_NOT_READY: 1.0,
    Reason.COLLECTION_NOT_READY: 1.0,
    Reason.OVERLOADED: 0.1,
    Reason.STORAGE_ERROR: 1.0,
    Reason.RATE_LIMITED: 1.0,
    # A re-embed's switch holds writes back for about two of its leases (core/collections/fence.py): try again then.
    Reason.COLLECTION_SWITCHING: 1.0,
}

INTERNAL_MESSAGE = "internal error; the server log has the details"


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(error: EmbedsvcError) -> status_pb2.Status:
    """The google.rpc.Status of a domain error: code, message, ErrorInfo and, with a field, BadRequest."""
    code = STATUS_CODES[error.reason]
    metadata = dict(error.metadata)
    if error.field:
        metadata["field"] = error.field
    details = [_pack(error_details_pb2.ErrorInfo(reason=error.reason.value, domain=DOMAIN, metadata=metadata))]
    if error.field:
        violation = error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.message)
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
    delay = RETRY_AFTER.get(error.reason)
    if delay is not None and error.retry_after_s is not None:
        delay = error.retry_after_s
    if delay is not None:
        pause = duration_pb2.Duration()
        pause.FromNanoseconds(int(delay * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=pause)))
    return status_pb2.Status(code=code.value[0], message=error.message, details=details)


def internal_status() -> status_pb2.Status:
    return to_status(EmbedsvcError(Reason.INTERNAL, INTERNAL_MESSAGE))
