"""The domain error family: every failure the service reports on purpose, with a machine-readable reason.

Nothing here knows about gRPC; `embedsvc.transport.status` maps each reason to a status code in one table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum


class Reason(StrEnum):
    """Machine-readable error reasons; mirrors the `ErrorReason` enum of protos/embedsvc/v1/errors.proto."""

    MISSING_FIELD = "MISSING_FIELD"
    INVALID_VALUE = "INVALID_VALUE"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    NOT_FINITE = "NOT_FINITE"
    OUT_OF_VOCABULARY = "OUT_OF_VOCABULARY"
    INVALID_EXPRESSION = "INVALID_EXPRESSION"
    TERM_KIND_NOT_SUPPORTED = "TERM_KIND_NOT_SUPPORTED"
    DIMENSION_MISMATCH = "DIMENSION_MISMATCH"
    SPACE_MISMATCH = "SPACE_MISMATCH"
    INVALID_ANALOGY_FILE = "INVALID_ANALOGY_FILE"
    MODEL_KIND_MISMATCH = "MODEL_KIND_MISMATCH"
    MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
    MODEL_NOT_READY = "MODEL_NOT_READY"
    INTERNAL = "INTERNAL"
    COLLECTION_NOT_FOUND = "COLLECTION_NOT_FOUND"
    COLLECTION_EXISTS = "COLLECTION_EXISTS"
    COLLECTION_NOT_READY = "COLLECTION_NOT_READY"
    DATA_LOSS = "DATA_LOSS"
    INVALID_FILTER = "INVALID_FILTER"
    INVALID_METADATA = "INVALID_METADATA"
    DUPLICATE_ID = "DUPLICATE_ID"
    ITEM_NOT_FOUND = "ITEM_NOT_FOUND"
    MODEL_BINDING = "MODEL_BINDING"
    STORAGE_FULL = "STORAGE_FULL"
    STORAGE_ERROR = "STORAGE_ERROR"
    INVALID_ENCODING = "INVALID_ENCODING"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    CANCELLED = "CANCELLED"
    OVERLOADED = "OVERLOADED"
    UNEMBEDDABLE_INPUT = "UNEMBEDDABLE_INPUT"
    INVALID_IMAGE = "INVALID_IMAGE"
    UNSUPPORTED_IMAGE_FORMAT = "UNSUPPORTED_IMAGE_FORMAT"
    DIRECTION_NOT_FOUND = "DIRECTION_NOT_FOUND"
    DIRECTION_EXISTS = "DIRECTION_EXISTS"
    INVALID_PAGE_TOKEN = "INVALID_PAGE_TOKEN"  # noqa: S105 - a reason, not a secret
    MODEL_VERSION_CHANGED = "MODEL_VERSION_CHANGED"
    ALIAS_NOT_FOUND = "ALIAS_NOT_FOUND"
    ALIAS_EXISTS = "ALIAS_EXISTS"
    COLLECTION_HAS_ALIASES = "COLLECTION_HAS_ALIASES"
    OPERATION_NOT_FOUND = "OPERATION_NOT_FOUND"
    INTERRUPTED = "INTERRUPTED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    RATE_LIMITED = "RATE_LIMITED"
    STREAM_IDLE = "STREAM_IDLE"
    MODEL_UNLOADED = "MODEL_UNLOADED"
    MODEL_IN_USE = "MODEL_IN_USE"
    MODEL_EXISTS = "MODEL_EXISTS"
    DIMENSIONS_NOT_SUPPORTED = "DIMENSIONS_NOT_SUPPORTED"


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the key and the problem in one line."""


class EmbedsvcError(Exception):
    """A failure with a reason, an optional offending request field and string metadata for machines."""

    def __init__(
        self,
        reason: Reason,
        message: str,
        *,
        field: str | None = None,
        metadata: Mapping[str, str] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.field = field
        self.metadata: dict[str, str] = dict(metadata or {})
        # For a retryable reason: the pause to ask for, instead of the reason's usual one.
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}" + (f" (field {self.field})" if self.field else "")


def missing(field: str, what: str) -> EmbedsvcError:
    return EmbedsvcError(Reason.MISSING_FIELD, f"{what} is required", field=field)


def invalid(field: str, message: str) -> EmbedsvcError:
    return EmbedsvcError(Reason.INVALID_VALUE, message, field=field)


def limit_exceeded(field: str, what: str, actual: int, limit: int) -> EmbedsvcError:
    return EmbedsvcError(
        Reason.LIMIT_EXCEEDED,
        f"{what}: {actual} is over the limit of {limit}",
        field=field,
        metadata={"limit": str(limit), "actual": str(actual)},
    )


def check_count(field: str, what: str, count: int, limit: int, *, minimum: int = 1) -> None:
    """Raise MISSING_FIELD for fewer than `minimum` items and LIMIT_EXCEEDED above `limit`."""
    if count < minimum:
        if count == 0:
            raise missing(field, what)
        raise invalid(field, f"{what}: at least {minimum} are needed, got {count}")
    if count > limit:
        raise limit_exceeded(field, what, count, limit)


def out_of_vocabulary(model: str, words: Iterable[str], field: str | None = None) -> EmbedsvcError:
    missing_words = list(dict.fromkeys(words))
    shown = " ".join(missing_words)
    return EmbedsvcError(
        Reason.OUT_OF_VOCABULARY,
        f"not in the vocabulary of model '{model}': {shown}",
        field=field,
        metadata={"model": model, "words": shown},
    )
