"""What a metadata filter means, shared by every collection backend: the parsed filter (a tree of nodes, built by
`embedsvc.core.collections.filters`) and its meaning as a predicate over an item's metadata, which is the reference
every backend must agree with (the FAISS backend runs it; the Milvus backend translates the tree and is tested
against it).

Semantics: on a list field, = and IN match when any element matches and != when no element does; <, <=, >, >=
compare numbers with numbers (integers exactly, whatever their size), strings with strings and timestamps with
timestamps, and hold when any element does; a bool equals only a bool; a missing field matches only !=.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

Predicate = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True)
class Compare:
    field: str
    op: str  # = != < <= > >=
    value: Any  # str | int | float | bool | datetime (UTC)


@dataclass(frozen=True)
class Member:
    field: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Not:
    inner: Node


@dataclass(frozen=True)
class All:
    parts: tuple[Node, ...]


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Node, ...]


Node = Compare | Member | Not | All | AnyOf


@dataclass(frozen=True)
class Filter:
    """A parsed filter: its text, its tree, and its predicate (compiled once)."""

    text: str
    node: Node
    matches: Predicate


def kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, datetime):
        return "timestamp"
    return "string" if isinstance(value, str) else "other"


def _equal(a: Any, b: Any) -> bool:
    return kind(a) == kind(b) and a == b


def _key(value: Any) -> tuple[str, Any]:
    """A hashable key equal for exactly the values _equal calls equal (1 and 1.0 are; 1 and true are not)."""
    return (kind(value), value)


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def elements(metadata: Mapping[str, Any], field: str) -> list[Any] | tuple[Any, ...]:
    """The field's values: its elements for a list, else the value alone; () when absent."""
    if field not in metadata:
        return ()
    value = metadata[field]
    return value if isinstance(value, list) else (value,)


def predicate(node: Node) -> Predicate:
    """The node's meaning over one item's metadata (nesting is bounded by the parser's depth limit)."""
    if isinstance(node, Compare):
        return _comparison(node.field, node.op, node.value)
    if isinstance(node, Member):
        return _membership(node.field, node.values)
    if isinstance(node, Not):
        inner = predicate(node.inner)
        return lambda m: not inner(m)
    parts = [predicate(p) for p in node.parts]
    if isinstance(node, All):
        return lambda m: all(p(m) for p in parts)
    return lambda m: any(p(m) for p in parts)


def _comparison(field: str, op: str, value: Any) -> Predicate:
    if op == "=":
        return lambda m: any(_equal(e, value) for e in elements(m, field))
    if op == "!=":
        return lambda m: not any(_equal(e, value) for e in elements(m, field))
    order = _ORDER[op]
    wanted = kind(value)
    return lambda m: any(kind(e) == wanted and order(e, value) for e in elements(m, field))


def _membership(field: str, values: tuple[Any, ...]) -> Predicate:
    keys = {_key(v) for v in values}

    def matches(m: Mapping[str, Any]) -> bool:
        for e in elements(m, field):
            try:
                if _key(e) in keys:
                    return True
            except TypeError:  # an unhashable element (a nested list from an old item): never equal to a value
                continue
        return False

    return matches
