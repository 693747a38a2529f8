"""Checks on what a request brings into a collection: item ids and typed metadata. Every limit they enforce is in
`Limits` and documented in the README."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from embedsvc.errors import EmbedsvcError, Reason, check_count, invalid, limit_exceeded, missing
from embedsvc.index import metadata as stored
from embedsvc.index.types import IndexedField
from embedsvc.limits import Limits

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_FIELD_NAME_CHARS = 256


def _scalar(value: Any) -> bool:
    if isinstance(value, bool | str):
        return True
    if isinstance(value, int):
        return INT64_MIN <= value <= INT64_MAX
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, datetime) and value.tzinfo is not None


def check_metadata(value: Any, field: str, limits: Limits) -> dict[str, Any]:
    """Typed metadata (see embedsvc.index.metadata): scalars or lists of scalars, under names not starting with "$"."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EmbedsvcError(Reason.INVALID_METADATA, "metadata must be an object", field=field)
    for key, v in value.items():
        if not isinstance(key, str) or not key or len(key) > MAX_FIELD_NAME_CHARS or key.startswith("$"):
            raise EmbedsvcError(
                Reason.INVALID_METADATA,
                f"metadata field name {key!r}: 1 to {MAX_FIELD_NAME_CHARS} characters, not starting with '$'",
                field=field,
            )
        if not all(_scalar(e) for e in (v if isinstance(v, list) else [v])):
            raise EmbedsvcError(
                Reason.INVALID_METADATA,
                f"metadata field {key!r}: values must be strings, 64-bit integers, finite numbers, bools, timestamps "
                "or lists of those",
                field=f"{field}.{key}",
            )
    size = stored.size_bytes(value)
    if size > limits.max_metadata_bytes:
        raise limit_exceeded(field, "metadata size in bytes", size, limits.max_metadata_bytes)
    return value


def check_id(item_id: str, field: str, limits: Limits) -> None:
    if not item_id:
        raise missing(field, "an item id")
    size = len(item_id.encode("utf-8"))
    if size > limits.max_id_bytes:
        raise limit_exceeded(field, "id size in bytes", size, limits.max_id_bytes)


def check_ids(ids: Sequence[str], field: str, limits: Limits) -> None:
    check_count(field, "ids", len(ids), limits.max_upsert_items)
    seen: set[str] = set()
    for i, item_id in enumerate(ids):
        check_id(item_id, f"{field}[{i}]", limits)
        if item_id in seen:
            raise EmbedsvcError(Reason.DUPLICATE_ID, f"id {item_id!r} appears twice", field=f"{field}[{i}]")
        seen.add(item_id)


def check_indexed_fields(fields: Sequence[IndexedField], limits: Limits) -> None:
    """The metadata fields a new collection indexes: at most limits.max_indexed_fields, valid names, each once."""
    check_count("indexed_fields", "indexed fields", len(fields), limits.max_indexed_fields, minimum=0)
    seen: set[str] = set()
    for n, f in enumerate(fields):
        where = f"indexed_fields[{n}].name"
        if not f.name:
            raise missing(where, "the field's name")
        if len(f.name) > MAX_FIELD_NAME_CHARS or f.name.startswith("$"):
            raise invalid(
                where, f"field name {f.name!r}: 1 to {MAX_FIELD_NAME_CHARS} characters, not starting with '$'"
            )
        if f.name in seen:
            raise invalid(where, f"field {f.name!r} is listed twice")
        seen.add(f.name)
