"""Indexed metadata fields: the per-segment sorted entries that answer equality, IN and range filters, and the
evaluation of a filter tree through them.

A field declared at creation (`CollectionConfig.indexed_fields`: string, integer or timestamp) has one entry per
(item, element): its key and the item's row. Keys are int64 for integers, microseconds since the epoch (UTC) for
timestamps, and for strings the rank of the value in the segment's dictionary (its distinct values, sorted in Python's
order, which is UTF-8 byte order). A segment stores the entries sorted by key (`f:<name>:keys`, `f:<name>:rows`, and
for strings `f:<name>:dict` + `f:<name>:dict_off`); the rows appended since the last checkpoint (the store's tail)
keep plain lists, compared with numpy at query time. So `field = v`, `field IN [...]` and `field < v` cost two binary
searches per segment plus the matching entries, never a predicate over every item.

The meaning is filtering.py's, exactly: on a list, = / IN / ranges hold when any element does and != when none does;
a value of another kind than the field's never equals or orders against it; a missing field matches only !=. Every
item's value of an indexed field is its type, a list of it, or absent (index/metadata.py checks writes), which is what
makes the entries complete. `split` keeps for the index the parts of a filter it can answer (a whole tree, or the
indexed conjuncts of an AND); the rest is evaluated by the reference predicate on the slots the index let through.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from embedsvc.index import filtering
from embedsvc.index.filtering import All, Compare, Member, Node, Not
from embedsvc.index.types import FieldType, IndexedField

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_I64 = (-(2**63), 2**63 - 1)
_KIND = {FieldType.INTEGER: "number", FieldType.TIMESTAMP: "timestamp", FieldType.STRING: "string"}


def micros(value: datetime) -> int:
    return (value - _EPOCH) // _MICRO


def elements(value: Any) -> list[Any]:
    """An item's elements of a field's value (a list's elements, else the value alone)."""
    return value if isinstance(value, list) else [value]


def key(field: IndexedField, element: Any) -> int | str:
    """An element's key in the tail: the int itself, the timestamp's microseconds, the string itself."""
    if field.type is FieldType.TIMESTAMP:
        return micros(element)
    return element


# ---- building a segment's entries -------------------------------------------------------------------------------


def columns(field: IndexedField, keys: Sequence[int | str], rows: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
    """A segment's entries of one field from (key, row) pairs, sorted by key (rows ascending among equal keys)."""
    prefix = f"f:{field.name}:"
    row_array = np.asarray(rows, np.int64).astype(np.uint32)
    out: dict[str, np.ndarray] = {}
    if field.type is FieldType.STRING:
        values: list[Any] = sorted(set(keys), key=str)
        rank = {v: i for i, v in enumerate(values)}
        key_array = np.fromiter((rank[k] for k in keys), np.int64, len(keys))
        encoded = [str(v).encode("utf-8") for v in values]
        offsets = np.zeros(len(encoded) + 1, np.uint64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        out[prefix + "dict"] = np.frombuffer(b"".join(encoded), np.uint8).copy()
        out[prefix + "dict_off"] = offsets
    else:
        key_array = np.fromiter((int(k) for k in keys), np.int64, len(keys))
    order = np.lexsort((row_array, key_array))
    out[prefix + "keys"] = key_array[order]
    out[prefix + "rows"] = row_array[order]
    return out


@dataclass(frozen=True)
class Entries:
    """One field's entries over rows [start, start + rows) of the store: sorted keys (string ranks with a
    dictionary), or the tail's unsorted keys."""

    start: int
    keys: np.ndarray
    rows: np.ndarray
    dictionary: Sequence[str] | None = None  # strings: the sorted distinct values (keys are ranks into it)
    sorted: bool = True


class Dictionary(Sequence[str]):
    """A segment's sorted distinct strings, decoded one at a time (binary searches touch log2(n) of them)."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray) -> None:
        self.blob, self.offsets = blob, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:  # type: ignore[override]  # ints only, no slices
        return bytes(self.blob[int(self.offsets[i]) : int(self.offsets[i + 1])]).decode("utf-8")

    def values(self) -> list[str]:
        return [self[i] for i in range(len(self))]


def segment_entries(field: IndexedField, start: int, cols: dict[str, np.ndarray]) -> Entries:
    prefix = f"f:{field.name}:"
    dictionary = None
    if field.type is FieldType.STRING:
        dictionary = Dictionary(cols[prefix + "dict"], cols[prefix + "dict_off"])
    return Entries(start, cols[prefix + "keys"], cols[prefix + "rows"], dictionary)


def merge(field: IndexedField, parts: Sequence[tuple[int, dict[str, np.ndarray]]]) -> dict[str, np.ndarray]:
    """One segment's entries from several segments' (row offset, columns), rows shifted by their offsets."""
    keys: list[Any] = []
    rows: list[np.ndarray] = []
    prefix = f"f:{field.name}:"
    for offset, cols in parts:
        part_keys = cols[prefix + "keys"]
        if field.type is FieldType.STRING:
            values = Dictionary(cols[prefix + "dict"], cols[prefix + "dict_off"]).values()
            keys.extend(values[int(k)] for k in part_keys)
        else:
            keys.extend(part_keys.tolist())
        rows.append(cols[prefix + "rows"].astype(np.int64) + offset)
    return columns(field, keys, np.concatenate(rows) if rows else np.empty(0, np.int64))


def gather(field: IndexedField, cols: dict[str, np.ndarray], kept: np.ndarray) -> tuple[list[Any], np.ndarray]:
    """The (keys, new rows) of the entries whose rows are in `kept` (sorted old rows; new row = position in it)."""
    prefix = f"f:{field.name}:"
    rows = cols[prefix + "rows"].astype(np.int64)
    position = np.searchsorted(kept, rows)
    keep = (position < len(kept)) & (kept[np.minimum(position, len(kept) - 1)] == rows) if len(kept) else rows < 0
    part_keys = cols[prefix + "keys"][keep]
    if field.type is FieldType.STRING:
        values = Dictionary(cols[prefix + "dict"], cols[prefix + "dict_off"]).values()
        return [values[int(k)] for k in part_keys], position[keep]
    return part_keys.tolist(), position[keep]


# ---- evaluating a filter ----------------------------------------------------------------------------------------


def _answerable(node: Node, fields: dict[str, IndexedField]) -> bool:
    if isinstance(node, Compare):
        if node.field not in fields:
            return False
        value = node.value
        return not (isinstance(value, float) and not math.isfinite(value))
    if isinstance(node, Member):
        return node.field in fields and not any(isinstance(v, float) and not math.isfinite(v) for v in node.values)
    if isinstance(node, Not):
        return _answerable(node.inner, fields)
    return all(_answerable(p, fields) for p in node.parts)


def split(node: Node, indexed: Sequence[IndexedField]) -> tuple[Node | None, Node | None]:
    """(the part the index answers, the rest): (node, None) when it answers all of it, (None, node) when nothing;
    for an AND, its answerable conjuncts and the others."""
    fields = {f.name: f for f in indexed}
    if not fields:
        return None, node
    if _answerable(node, fields):
        return node, None
    if isinstance(node, All):
        mine = tuple(p for p in node.parts if _answerable(p, fields))
        rest = tuple(p for p in node.parts if not _answerable(p, fields))
        if mine:
            return (mine[0] if len(mine) == 1 else All(mine)), (rest[0] if len(rest) == 1 else All(rest))
    return None, node


@dataclass(frozen=True)
class _Span:
    """Keys between lo and hi (None: unbounded), each bound inclusive or not."""

    lo: Any = None
    lo_inclusive: bool = True
    hi: Any = None
    hi_inclusive: bool = True


def _spans(field: IndexedField, op: str, value: Any) -> list[_Span]:
    """The key spans where `element op value` holds for elements of the field's type ([] when none can)."""
    if filtering.kind(value) != _KIND[field.type]:
        return []
    if field.type is FieldType.TIMESTAMP:
        value = micros(value)
    if field.type is FieldType.INTEGER and isinstance(value, float):
        # Integer elements against a float, exactly as Python compares them.
        if op == "=":
            return [_Span(int(value), True, int(value), True)] if value.is_integer() else []
        # x < v iff x < ceil(v); x <= v iff x <= floor(v); x > v iff x > floor(v); x >= v iff x >= ceil(v).
        value = {"<": math.ceil, "<=": math.floor, ">": math.floor, ">=": math.ceil}[op](value)
    return [
        {
            "=": _Span(value, True, value, True),
            "<": _Span(None, True, value, False),
            "<=": _Span(None, True, value, True),
            ">": _Span(value, False, None, True),
            ">=": _Span(value, True, None, True),
        }[op]
    ]


def _int_range(span: _Span) -> tuple[int, int]:
    lo = _I64[0] if span.lo is None else int(span.lo) + (0 if span.lo_inclusive else 1)
    hi = _I64[1] if span.hi is None else int(span.hi) - (0 if span.hi_inclusive else 1)
    return max(lo, _I64[0]), min(hi, _I64[1])


def _rows_in(entries: Entries, span: _Span) -> np.ndarray:
    """The rows (store slots) of the entries whose key lies in the span."""
    keys = entries.keys
    if not entries.sorted and entries.dictionary is None and keys.dtype == object:  # the tail's strings
        hit = np.ones(len(keys), bool)
        if span.lo is not None:
            hit &= (keys >= span.lo) if span.lo_inclusive else (keys > span.lo)
        if span.hi is not None:
            hit &= (keys <= span.hi) if span.hi_inclusive else (keys < span.hi)
        return entries.rows[hit].astype(np.int64) + entries.start
    if not entries.sorted:  # the tail's integers
        first, last = _int_range(span)
        if first > last:
            return np.empty(0, np.int64)
        return entries.rows[(keys >= first) & (keys <= last)].astype(np.int64) + entries.start
    if entries.dictionary is not None:
        values = entries.dictionary
        lo = (
            0
            if span.lo is None
            else (bisect.bisect_left if span.lo_inclusive else bisect.bisect_right)(values, span.lo)
        )
        hi = (
            len(values)
            if span.hi is None
            else (bisect.bisect_right if span.hi_inclusive else bisect.bisect_left)(values, span.hi)
        )
        first, last = lo, hi - 1
    else:
        first, last = _int_range(span)
    if first > last:
        return np.empty(0, np.int64)
    a = np.searchsorted(keys, first, "left")
    b = np.searchsorted(keys, last, "right")
    return entries.rows[a:b].astype(np.int64) + entries.start


class Evaluator:
    """Evaluates answerable filter trees over a store's entries: a bool mask over its slots [0, n)."""

    def __init__(self, indexed: Sequence[IndexedField], entries: dict[str, list[Entries]], live: np.ndarray) -> None:
        self.fields = {f.name: f for f in indexed}
        self.entries = entries
        self.live = live  # bool over [0, n): complements (NOT, !=) are taken among live slots

    def mask(self, node: Node) -> np.ndarray:
        if isinstance(node, Compare):
            field = self.fields[node.field]
            if node.op == "!=":
                return self.live & ~self._match(node.field, _spans(field, "=", node.value))
            return self._match(node.field, _spans(field, node.op, node.value))
        if isinstance(node, Member):
            field = self.fields[node.field]
            return self._match(node.field, [s for v in node.values for s in _spans(field, "=", v)])
        if isinstance(node, Not):
            return self.live & ~self.mask(node.inner)
        masks = [self.mask(p) for p in node.parts]
        out = masks[0].copy()
        for m in masks[1:]:
            if isinstance(node, All):
                out &= m
            else:
                out |= m
        return out

    def _match(self, name: str, spans: list[_Span]) -> np.ndarray:
        """Slots with an entry in any of the spans (live or not: the caller intersects with the live slots)."""
        out = np.zeros(len(self.live), bool)
        for span in spans:
            for entries in self.entries.get(name, []):
                rows = _rows_in(entries, span)
                out[rows[rows < len(out)]] = True
        return out


def evaluate(
    node: Node, indexed: Sequence[IndexedField], entries: dict[str, list[Entries]], live: np.ndarray
) -> np.ndarray:
    """The live slots the (answerable) node matches, as a bool mask over [0, len(live))."""
    return Evaluator(indexed, entries, live).mask(node) & live
