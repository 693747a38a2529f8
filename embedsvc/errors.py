"""The domain error family: every failure the service reports on purpose, with a machine-readable reason.

Nothing here knows about gRPC; `embedsvc.transport.status` maps each reason to a status code in one table.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
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
    OPERATION_NOT_SUPPORTED = "OPERATION_NOT_SUPPORTED"
    KEYWORD_INDEX_MISSING = "KEYWORD_INDEX_MISSING"
    BACKEND_UNSUPPORTED = "BACKEND_UNSUPPORTED"
    SNAPSHOT_NOT_FOUND = "SNAPSHOT_NOT_FOUND"
    INPUTS_NOT_STORED = "INPUTS_NOT_STORED"
    SNAPSHOT_ELSEWHERE = "SNAPSHOT_ELSEWHERE"
    DIMENSIONS_NOT_SUPPORTED = "DIMENSIONS_NOT_SUPPORTED"
    COLLECTION_SWITCHING = "COLLECTION_SWITCHING"


class Hint(StrEnum):
    """What to do next, as a machine-readable id in `ErrorInfo.metadata["hint"]` (its parameters beside it). The
    message says it in gRPC's words; the HTTP gateway, the CLI and the explorer say it in their own (a header, a
    flag, a field of the page), rendered from the id and the metadata, never by editing the message."""

    # No API key was sent: gRPC metadata `authorization: Bearer <key>`, the HTTP header of that name, the CLI's
    # --api-key or EMBEDSVC_API_KEY.
    SEND_API_KEY = "send-api-key"
    # A filter has a bare word where a value belongs (`genre = rock`); metadata "value": the word.
    QUOTE_STRINGS = "quote-strings"
    # A model that embeds texts (and has no vocabulary) was asked for words; metadata "model".
    EMBED_TEXTS = "embed-texts"
    # Words out of the vocabulary whose lower-case forms are in it; metadata "suggestions": those forms.
    LOWER_CASE = "lower-case"


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
        hint: Hint | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.field = field
        self.metadata: dict[str, str] = dict(metadata or {})
        if hint is not None:
            self.metadata["hint"] = hint.value
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


def out_of_vocabulary(
    model: str, words: Iterable[str], field: str | None = None, vocabulary: Container[str] = ()
) -> EmbedsvcError:
    """OUT_OF_VOCABULARY for these words; with the `vocabulary`, a hint names the lower-case forms that are in it."""
    missing_words = list(dict.fromkeys(words))
    shown = " ".join(missing_words)
    lower = list(dict.fromkeys(w.lower() for w in missing_words if w != w.lower() and w.lower() in vocabulary))
    metadata = {"model": model, "words": shown}
    message = f"not in the vocabulary of model '{model}': {shown}"
    if lower:
        metadata["suggestions"] = " ".join(lower)
        message += f"; its vocabulary is lower-case: {', '.join(repr(w) for w in lower)} is in it"
    return EmbedsvcError(
        Reason.OUT_OF_VOCABULARY,
        message,
        field=field,
        metadata=metadata,
        hint=Hint.LOWER_CASE if lower else None,
    )


def operation_not_supported(model: str, kind: str, message: str, needs: str) -> EmbedsvcError:
    """A model of the right family that lacks what the operation needs (`needs`: a capability, or "prior")."""
    return EmbedsvcError(
        Reason.OPERATION_NOT_SUPPORTED,
        message,
        field="model",
        metadata={"model": model, "kind": kind, "needs": needs},
    )
