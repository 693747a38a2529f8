"""Filters in Milvus: items carry a filter index (`fx`, a JSON field) built so that the filter language translates
into Milvus boolean expressions exactly, with the meaning `embedsvc.index.filtering` defines.

The filter index of an item's metadata:
- keys are the field names' UTF-8 bytes in hex, after a "k" (so no key needs escaping);
- strings become "s:" + their UTF-8 bytes in hex (hex keeps byte order, so ranges still work, and nothing a caller
  wrote is ever spliced into an expression), bools "b:1" / "b:0" (so a bool never equals a number), timestamps
  "t:" + their UTC time in a fixed ISO 8601 form (sorts in time order), numbers stay numbers;
- a list field keeps its encoded elements, plus, for order comparisons, the least and greatest number, string and
  timestamp among them under "<key>_n0", "<key>_n1", "<key>_s0", "<key>_s1", "<key>_t0", "<key>_t1".

Every atom is guarded with `(exists ...)`, so that it is true or false, never null: Milvus's NOT of a comparison on a
missing key is null (filtered out), where a missing field must match !=. The parentheses matter: Milvus 2.3 reads
`exists a and b` as `exists (a and b)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from embedsvc.index.filtering import All, AnyOf, Compare, Member, Node, Not, kind

FX = "fx"
# The item's metadata in embedsvc's stored JSON form (types round-trip exactly) and its raw input (UTF-8 in hex), kept
# in the same JSON field: one field instead of three makes bulk writes ~1.5x faster (pymilvus packs rows field by
# field). Field keys start with "k", so these never collide with them.
META = "_m"
INPUT = "_i"
_ORDER_HELPERS = {"number": "n", "string": "s", "timestamp": "t"}


def key(field: str) -> str:
    return "k" + field.encode("utf-8").hex()


def encode(value: Any) -> Any:
    """One metadata value as the filter index holds it (None for what a filter cannot match)."""
    k = kind(value)
    if k == "bool":
        return "b:1" if value else "b:0"
    if k == "number":
        return value
    if k == "string":
        return "s:" + value.encode("utf-8").hex()
    if k == "timestamp":
        return "t:" + timestamp_text(value)
    return None


def filter_index(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The `fx` JSON of one item."""
    fx: dict[str, Any] = {}
    for field, value in metadata.items():
        k = key(field)
        if not isinstance(value, list):
            encoded = encode(value)
            if encoded is not None:
                fx[k] = encoded
            continue
        elements = [e for e in (encode(v) for v in value if not isinstance(v, list)) if e is not None]
        fx[k] = elements
        for element_kind, letter in _ORDER_HELPERS.items():
            found = [encode(v) for v in value if not isinstance(v, list) and kind(v) == element_kind]
            if found:
                fx[f"{k}_{letter}0"], fx[f"{k}_{letter}1"] = min(found), max(found)
    return fx


def literal(value: Any) -> str:
    """A Milvus literal: a number, or a double-quoted string with its escapes."""
    if isinstance(value, bool):
        raise TypeError("bools are encoded as strings")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    for raw, escaped in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
        text = text.replace(raw, escaped)
    return f'"{text}"'


def _path(k: str) -> str:
    return f'{FX}["{k}"]'


def _equals(k: str, encoded: Any) -> str:
    path, value = _path(k), literal(encoded)
    # json_contains_any with one value, not json_contains: Milvus Lite's parser refuses a negative number as
    # json_contains's argument.
    return f"((exists {path}) and ({path} == {value} or json_contains_any({path}, [{value}])))"


def _order(k: str, op: str, value: Any) -> str:
    """Any element (or the scalar) compared with the value: the scalar itself, or the list's least element for < and
    <=, its greatest for > and >=."""
    k_value = kind(value)
    encoded = literal(encode(value))
    path = _path(k)
    if k_value == "number":
        scalar = f"((exists {path}) and {path} {op} {encoded})"
    else:  # a string or timestamp scalar: compare within its own encoding only
        prefix = "s:" if k_value == "string" else "t:"
        low, high = literal(prefix), literal(prefix[0] + ";")  # ";" follows ":"
        scalar = f"((exists {path}) and {path} >= {low} and {path} < {high} and {path} {op} {encoded})"
    helper = _path(f"{k}_{_ORDER_HELPERS[k_value]}{0 if op in ('<', '<=') else 1}")
    return f"({scalar} or ((exists {helper}) and {helper} {op} {encoded}))"


def translate(node: Node) -> str:
    """The Milvus expression of a filter tree, over the `fx` field."""
    if isinstance(node, Compare):
        k = key(node.field)
        if node.op == "=":
            return _equals(k, encode(node.value))
        if node.op == "!=":
            return f"(not {_equals(k, encode(node.value))})"
        return _order(k, node.op, node.value)
    if isinstance(node, Member):
        k = key(node.field)
        encoded = [encode(v) for v in node.values]
        path = _path(k)
        options = " or ".join(f"{path} == {literal(e)}" for e in encoded)
        values = ", ".join(literal(e) for e in encoded)
        return f"((exists {path}) and ({options} or json_contains_any({path}, [{values}])))"
    if isinstance(node, Not):
        return f"(not {translate(node.inner)})"
    joiner = " and " if isinstance(node, All) else " or "
    assert isinstance(node, All | AnyOf)
    return "(" + joiner.join(translate(p) for p in node.parts) + ")"


def timestamp_text(moment: datetime) -> str:
    """A fixed-width UTC form (years zero-padded), so that text order is time order."""
    t = moment.astimezone(UTC)
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}.{t.microsecond:06d}Z"
