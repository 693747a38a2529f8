"""Item metadata as collections store it: typed values and their JSON form.

A value is a str, an int (exact, 64-bit), a finite float, a bool, a timezone-aware datetime (UTC, microseconds), or a
list of those. JSON keeps ints exact (Python reads them back as int at any size) and floats as floats; a timestamp is
written as {"$timestamp": "<ISO 8601, UTC>"}, the only object a stored value can be (field names may not start with
"$"), so reading it back is unambiguous. Every stored form (log records, checkpoints) goes through `dumps`/`loads`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.index.types import FieldType, IndexedField

Metadata = dict[str, Any]
TIMESTAMP_KEY = "$timestamp"


def _encode(value: object) -> object:
    if isinstance(value, datetime):
        return {TIMESTAMP_KEY: value.astimezone(UTC).isoformat()}
    raise TypeError(f"{type(value).__name__} is not a metadata value")


def _decode(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and TIMESTAMP_KEY in obj:
        return datetime.fromisoformat(obj[TIMESTAMP_KEY])
    return obj


def dumps(value: Any) -> str:
    """Compact JSON of a document holding metadata (timestamps tagged)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_encode)


def loads(text: str | bytes) -> Any:
    """The inverse of `dumps`."""
    return json.loads(text, object_hook=_decode)


def size_bytes(metadata: Metadata) -> int:
    """What limits.max_metadata_bytes counts: the UTF-8 bytes of the metadata's compact JSON."""
    return len(dumps(metadata).encode("utf-8"))


_FIELD_TYPES = {
    FieldType.STRING: (lambda v: isinstance(v, str), "strings"),
    FieldType.INTEGER: (lambda v: isinstance(v, int) and not isinstance(v, bool), "integers"),
    FieldType.TIMESTAMP: (lambda v: isinstance(v, datetime), "timestamps"),
}


def check_indexed(fields: Sequence[IndexedField], metadata: Sequence[Metadata], field: str = "items") -> None:
    """Every value of an indexed field is of its type, or a list of them (or the field is absent): what lets its
    index answer filters exactly. INVALID_METADATA naming the item and field otherwise."""
    if not fields:
        return
    for n, meta in enumerate(metadata):
        if not meta:
            continue
        for f in fields:
            if f.name not in meta:
                continue
            value = meta[f.name]
            ok, plural = _FIELD_TYPES[f.type]
            if not all(ok(e) for e in (value if isinstance(value, list) else [value])):
                raise EmbedsvcError(
                    Reason.INVALID_METADATA,
                    f"metadata field {f.name!r} is indexed as {f.type.value}: its values must be {plural} or lists "
                    f"of {plural}",
                    field=f"{field}[{n}].metadata.{f.name}",
                )
