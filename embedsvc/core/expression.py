"""Vector expressions: weighted terms (words, raw vectors, and later texts, images, items, directions).

The text form is parsed here: `king - man + woman`, `0.5*sheep + spider`, `-2 * cold + hot`.
Grammar: [sign] term { ("+" | "-") term }, term = [number "*"] word | [number "*"] "quoted text".
"+" and "-" are operators only at the start of a token ("a - b", "a -b"); inside a word they are part of it, so
"well-known" and "c++" are words. A number followed by "*" is a weight; a number alone is a word ("1990").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from embedsvc.errors import EmbedsvcError, Reason, limit_exceeded


class TermKind(StrEnum):
    WORD = "word"
    VECTOR = "vector"
    TEXT = "text"
    IMAGE = "image"
    ITEM = "item"
    DIRECTION = "direction"


@dataclass(frozen=True)
class Term:
    """One weighted term. `value` is the word, text or direction name; `vector` is set for VECTOR terms."""

    kind: TermKind
    weight: float = 1.0
    value: str = ""
    vector: np.ndarray | None = field(default=None, compare=False)
    # The space a VECTOR term is tagged with ("" when untagged).
    space: str = ""
    # IMAGE terms: the image (PNG/JPEG bytes or an embedsvc.core.images.RawImage).
    image: object | None = field(default=None, compare=False)
    # ITEM terms: the item's collection (`value` is its id). Searches replace them by VECTOR terms before the model
    # composes (core/collections/queries.py); elsewhere they are refused with TERM_KIND_NOT_SUPPORTED.
    collection: str = ""


@dataclass(frozen=True)
class Expression:
    terms: tuple[Term, ...]


def invalid_expression(message: str, field_name: str, position: int | None = None) -> EmbedsvcError:
    metadata = {"position": str(position)} if position is not None else {}
    return EmbedsvcError(Reason.INVALID_EXPRESSION, message, field=field_name, metadata=metadata)


def check_weight(weight: float, field_name: str) -> float:
    if not math.isfinite(weight):
        raise EmbedsvcError(Reason.NOT_FINITE, f"weight {weight} is not finite", field=field_name)
    return weight


@dataclass(frozen=True)
class _Token:
    kind: str  # "op", "star", "word", "quoted"
    text: str
    position: int


_OPERATORS = "+-"
_STOPS = frozenset(' \t\r\n*"')


def _tokens(text: str, field_name: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in _OPERATORS:
            tokens.append(_Token("op", ch, i))
            i += 1
        elif ch == "*":
            tokens.append(_Token("star", ch, i))
            i += 1
        elif ch == '"':
            end = i + 1
            chars: list[str] = []
            while end < n and text[end] != '"':
                if text[end] == "\\" and end + 1 < n:
                    end += 1
                chars.append(text[end])
                end += 1
            if end >= n:
                raise invalid_expression("unterminated quoted text", field_name, i)
            tokens.append(_Token("quoted", "".join(chars), i))
            i = end + 1
        else:
            start = i
            while i < n and text[i] not in _STOPS and not text[i].isspace():
                i += 1
            tokens.append(_Token("word", text[start:i], start))
    return tokens


def _number(token: _Token) -> float | None:
    try:
        return float(token.text)
    except ValueError:
        return None


def parse_expression(text: str, *, field_name: str, max_chars: int, max_terms: int) -> Expression:
    """Parse the text form; raises INVALID_EXPRESSION with the character position of the problem."""
    if len(text) > max_chars:
        raise limit_exceeded(field_name, "expression length in characters", len(text), max_chars)
    tokens = _tokens(text, field_name)
    if not tokens:
        raise invalid_expression("the expression is empty", field_name, 0)
    terms: list[Term] = []
    pos = 0
    sign = 1.0
    expect_term = True
    while pos < len(tokens):
        tok = tokens[pos]
        if not expect_term:
            if tok.kind != "op":
                raise invalid_expression(f"expected '+' or '-' before {tok.text!r}", field_name, tok.position)
            sign, expect_term, pos = (1.0 if tok.text == "+" else -1.0), True, pos + 1
            continue
        if tok.kind == "op":
            if terms or sign != 1.0 or pos > 0:
                raise invalid_expression(f"two operators in a row at {tok.text!r}", field_name, tok.position)
            sign, pos = (1.0 if tok.text == "+" else -1.0), pos + 1
            continue
        weight = 1.0
        if tok.kind == "word" and pos + 1 < len(tokens) and tokens[pos + 1].kind == "star":
            number = _number(tok)
            if number is None:
                raise invalid_expression(f"{tok.text!r} before '*' is not a number", field_name, tok.position)
            weight = check_weight(number, field_name)
            pos += 2
            if pos >= len(tokens):
                raise invalid_expression("a term is missing after '*'", field_name, len(text))
            tok = tokens[pos]
        if tok.kind == "word":
            terms.append(Term(TermKind.WORD, sign * weight, tok.text))
        elif tok.kind == "quoted":
            terms.append(Term(TermKind.TEXT, sign * weight, tok.text))
        else:
            raise invalid_expression(f"expected a word, got {tok.text!r}", field_name, tok.position)
        if len(terms) > max_terms:
            raise limit_exceeded(field_name, "terms in one expression", len(terms), max_terms)
        sign, expect_term, pos = 1.0, False, pos + 1
    if expect_term:
        raise invalid_expression("the expression ends with an operator", field_name, len(text))
    return Expression(tuple(terms))
