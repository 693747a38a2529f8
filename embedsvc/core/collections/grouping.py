"""Grouping hits by a metadata field (group_by, group_size): k groups of their best hits instead of k hits, so a
collection holding one item per chunk answers k documents with their best chunks.

Values group by type and value: numbers by value (1 and 1.0 together, integers exactly), strings, booleans and
timestamps each apart (so true is not 1 and "1" is not 1). An item whose field is a list belongs to the group of each
of its distinct values. An item lacking the field (or holding an empty list) is a group of its own. Groups rank by
their best hit; a group's hits keep the order they came in.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

H = TypeVar("H")
MISSING = object()


@dataclass
class Group(Generic[H]):
    """A group: the value its hits share (None for the group of one hit lacking the field) and its hits."""

    value: Any
    hits: list[H] = field(default_factory=list)


@dataclass(frozen=True)
class Grouped(Generic[H]):
    groups: list[Group[H]]
    # True when k groups of group_size hits each were formed: more candidates cannot change the answer.
    complete: bool


def group_key(value: Any) -> Hashable:
    """The identity of a scalar metadata value for grouping."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", value)  # 1 == 1.0 and hash(1) == hash(1.0); large integers stay exact
    if isinstance(value, datetime):
        return ("timestamp", value)
    return ("string", value)


def _values(value: Any) -> list[Any]:
    """The distinct scalar values an item's field holds, in order ([] when it lacks the field)."""
    if value is MISSING:
        return []
    scalars = value if isinstance(value, list) else [value]
    seen: dict[Hashable, Any] = {}
    for scalar in scalars:
        seen.setdefault(group_key(scalar), scalar)
    return list(seen.values())


def group_hits(
    hits: Iterable[H], value_of: Callable[[H], Any], k: int, size: int, own_key: Callable[[H], Hashable] = id
) -> Grouped[H]:
    """Up to k groups of up to `size` hits from hits best first. `value_of(hit)` is the field's value, or MISSING;
    `own_key(hit)` names the group of a hit lacking the field (its item id)."""
    groups: dict[Hashable, Group[H]] = {}
    for hit in hits:
        values = _values(value_of(hit))
        keys = [(group_key(v), v) for v in values] if values else [(("missing", own_key(hit)), None)]
        for key, value in keys:
            group = groups.get(key)
            if group is None:
                if len(groups) == k:
                    continue
                group = groups[key] = Group(value)
            if len(group.hits) < size:
                group.hits.append(hit)
        if len(groups) == k and all(len(g.hits) == size for g in groups.values()):
            return Grouped(list(groups.values()), complete=True)
    return Grouped(list(groups.values()), complete=False)


def metadata_value(field_name: str) -> Callable[[Any], Any]:
    """value_of for hits with a `metadata` dict."""

    def value_of(hit: Any) -> Any:
        metadata: Sequence[Any] | dict[str, Any] | None = hit.metadata
        if not isinstance(metadata, dict):
            return MISSING
        return metadata.get(field_name, MISSING)

    return value_of
