"""Item metadata as collections store it: typed values and their JSON form.

A value is a str, an int (exact, 64-bit), a finite float, a bool, a timezone-aware datetime (UTC, microseconds), or a
list of those. JSON keeps ints exact (Python reads them back as int at any size) and floats as floats; a timestamp is
written as {"$timestamp": "<ISO 8601, UTC>"}, the only object a stored value can be (field names may not start with
"$"), so reading it back is unambiguous. Every stored form (log records, checkpoints) goes through `dumps`/`loads`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

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
