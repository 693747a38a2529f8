"""Metadata filters: `genre = "jazz" AND year >= 1990 AND NOT tags IN ["live", "demo"]`.

Grammar (keywords case-insensitive):
    expr    := or
    or      := and { OR and }
    and     := unary { AND unary }
    unary   := NOT unary | "(" expr ")" | compare
    compare := field ("=" | "==" | "!=" | "<" | "<=" | ">" | ">=") value | field IN "[" value { "," value } "]"
    value   := "string" | integer | number | true | false | timestamp "(" "RFC 3339 string" ")"
A field is a bare name (letters, digits, '_', '.', '-') or a "quoted" one; `==` is `=` (as Milvus and Python write
it). A bare word where a value belongs (`genre = rock`) is INVALID_FILTER with the hint to quote it. On a list field,
= and IN match when any element matches and != when no element does; < and friends compare numbers with numbers
(integers exactly, whatever their size), strings with strings and timestamps with timestamps. A missing field matches
only !=. A filter compiles once into a predicate over an item's metadata dict.

Costs are bounded for any input: lexing is linear (no backtracking: atomic groups), parsing and evaluation nest at most
limits.max_filter_depth levels of parentheses and NOTs (deeper is INVALID_FILTER, never a RecursionError), an IN list
holds at most limits.max_filter_values values and is matched through a set, so a predicate costs O(size of the item's
metadata), which limits.max_metadata_bytes bounds.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from embedsvc.errors import EmbedsvcError, Hint, Reason, limit_exceeded
from embedsvc.index.filtering import All, AnyOf, Compare, Filter, Member, Node, Not, Predicate, predicate

# Atomic groups and possessive quantifiers: a token is matched without backtracking, so lexing is linear in the
# filter's length (a malformed 4,000-digit number used to cost 0.4 s).
_TOKEN = re.compile(
    r"""\s*+(?:
      (?P<string>"(?:[^"\\]++|\\.)*+")
    | (?P<number>-?(?>\d++(?:\.\d*+)?|\.\d++)(?>[eE][-+]?\d++)?)(?![\w.])
    | (?P<op><=|>=|!=|==|=|<|>)
    | (?P<punct>[()\[\],])
    | (?P<name>[A-Za-z_][\w.\-]*+)
    )""",
    re.VERBOSE,
)
_SPACE = re.compile(r"\s*+")
# Defaults of limits.max_filter_depth (parentheses and NOTs nested) and limits.max_filter_values (values in one IN
# list); both well below what Python's recursion limit and a per-item cost budget allow.
MAX_DEPTH = 64
MAX_IN_VALUES = 1024
_KEYWORDS = {"and", "or", "not", "in", "true", "false"}
_INTEGER = re.compile(r"-?\d+")


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    position: int


def _error(message: str, position: int) -> EmbedsvcError:
    return EmbedsvcError(Reason.INVALID_FILTER, message, field="options.filter", metadata={"position": str(position)})


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while True:
        space = _SPACE.match(text, pos)
        assert space is not None
        if space.end() == len(text):
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            start = space.end()
            raise _error(f"unexpected character {text[start]!r}", start)
        kind = match.lastgroup or ""
        value = match.group(kind)
        start = match.start(kind)
        if kind == "name" and value.lower() in _KEYWORDS:
            kind, value = "kw", value.lower()
        tokens.append(_Tok(kind, value, start))
        pos = match.end()
    tokens.append(_Tok("end", "", len(text)))
    return tokens


class _Parser:
    def __init__(self, text: str, max_depth: int, max_values: int) -> None:
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0
        self.max_depth = max_depth
        self.max_values = max_values

    def deeper(self, position: int) -> None:
        self.depth += 1
        if self.depth > self.max_depth:
            raise _error(f"the filter nests parentheses and NOTs more than {self.max_depth} deep", position)

    def peek(self) -> _Tok:
        return self.tokens[self.i]

    def take(self) -> _Tok:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def accept(self, kind: str, text: str | None = None) -> bool:
        tok = self.peek()
        if tok.kind == kind and (text is None or tok.text == text):
            self.i += 1
            return True
        return False

    def expect(self, kind: str, text: str, what: str) -> None:
        if not self.accept(kind, text):
            tok = self.peek()
            raise _error(f"expected {what}, got {tok.text or 'the end'!r}", tok.position)

    def parse(self) -> Node:
        node = self.or_()
        tok = self.peek()
        if tok.kind != "end":
            raise _error(f"unexpected {tok.text!r}", tok.position)
        return node

    def or_(self) -> Node:
        parts = [self.and_()]
        while self.accept("kw", "or"):
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else AnyOf(tuple(parts))

    def and_(self) -> Node:
        parts = [self.unary()]
        while self.accept("kw", "and"):
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else All(tuple(parts))

    def unary(self) -> Node:
        # Each level of NOT or parentheses is one level of recursion here and of nested calls when the predicate
        # runs: bounded by MAX_DEPTH, far below Python's recursion limit.
        tok = self.peek()
        if self.accept("kw", "not"):
            self.deeper(tok.position)
            inner = self.unary()
            self.depth -= 1
            return Not(inner)
        if self.accept("punct", "("):
            self.deeper(tok.position)
            inner = self.or_()
            self.expect("punct", ")", "')'")
            self.depth -= 1
            return inner
        return self.compare()

    def compare(self) -> Node:
        tok = self.take()
        if tok.kind == "name":
            field = tok.text
        elif tok.kind == "string":
            field = _unquote(tok.text)
        else:
            raise _error(f"expected a field name, got {tok.text or 'the end'!r}", tok.position)
        if self.accept("kw", "in"):
            self.expect("punct", "[", "'['")
            values = [self.value()]
            while self.accept("punct", ","):
                if len(values) == self.max_values:
                    raise _error(f"an IN list holds at most {self.max_values} values", self.peek().position)
                values.append(self.value())
            self.expect("punct", "]", "']'")
            return Member(field, tuple(values))
        op = self.take()
        if op.kind != "op":
            raise _error(f"expected a comparison after {field!r}, got {op.text or 'the end'!r}", op.position)
        value = self.value()
        operator = "=" if op.text == "==" else op.text
        if isinstance(value, bool) and operator not in ("=", "!="):
            raise _error(f"{op.text} needs a number, a string or a timestamp, not {str(value).lower()}", op.position)
        return Compare(field, operator, value)

    def value(self) -> Any:
        tok = self.take()
        if tok.kind == "string":
            return _unquote(tok.text)
        if tok.kind == "number":
            if _INTEGER.fullmatch(tok.text):
                integer = int(tok.text)
                if not -(2**63) <= integer < 2**63:
                    raise _error(
                        f"{tok.text} is outside the int64 range of metadata integers (write a float, 1e30)",
                        tok.position,
                    )
                return integer
            number = float(tok.text)
            if not math.isfinite(number):
                raise _error(f"{tok.text} is not a finite number", tok.position)
            return number
        if tok.kind == "kw" and tok.text in ("true", "false"):
            return tok.text == "true"
        if tok.kind == "name" and tok.text.lower() == "timestamp" and self.accept("punct", "("):
            return self.timestamp()
        if tok.kind == "name":  # genre = rock: a string without its quotes
            quoted = json.dumps(tok.text)
            error = _error(f"expected a value, got {tok.text}: strings are in double quotes, {quoted}", tok.position)
            error.metadata.update({"hint": Hint.QUOTE_STRINGS.value, "value": tok.text})
            raise error
        raise _error(f"expected a value, got {tok.text or 'the end'!r}", tok.position)

    def timestamp(self) -> datetime:
        tok = self.take()
        if tok.kind != "string":
            raise _error(
                'timestamp(...) takes an RFC 3339 string, e.g. timestamp("2024-05-01T00:00:00Z")', tok.position
            )
        text = _unquote(tok.text)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise _error(f"{text!r} is not an RFC 3339 timestamp", tok.position) from None
        if moment.tzinfo is None:
            raise _error(f"{text!r} has no time zone; add Z or an offset", tok.position)
        self.expect("punct", ")", "')'")
        return moment.astimezone(UTC)


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def parse_filter(
    text: str, max_chars: int, *, max_depth: int = MAX_DEPTH, max_values: int = MAX_IN_VALUES
) -> Filter | None:
    """The parsed filter (its tree and its predicate); None for an empty filter (everything matches)."""
    if len(text) > max_chars:
        raise limit_exceeded("options.filter", "filter length in characters", len(text), max_chars)
    if not text.strip():
        return None
    node = _Parser(text, max_depth, max_values).parse()
    return Filter(text, node, predicate(node))


def compile_filter(
    text: str, max_chars: int, *, max_depth: int = MAX_DEPTH, max_values: int = MAX_IN_VALUES
) -> Predicate | None:
    """The predicate of a filter; None for an empty filter (everything matches)."""
    parsed = parse_filter(text, max_chars, max_depth=max_depth, max_values=max_values)
    return None if parsed is None else parsed.matches
